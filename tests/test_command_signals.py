"""Stopping commands with worker processes by a real signal: no worker is left, and the
command says what it finished and where it is.

Each test starts a real process (``start_new_session``, as a terminal starts a job in its
own process group), sends it a real signal, then checks by pid that every worker is gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from ift.cli import main
from signal_helpers import children, command_line, kill_leftovers, lines, start, still_running, wait_for


# ---------------------------------------------------------------------------- the worker pool itself
STUBBORN = '''
import os, signal, time

def job(seconds):
    # What Lightning's handler does inside trainer.fit: SIGTERM is noted, and the run goes on
    # when the signal comes after its last step.
    signal.signal(signal.SIGTERM, lambda *args: None)
    print("working", os.getpid(), flush=True)
    time.sleep(seconds)
    return seconds
'''

POOL = '''
from ift.lab.workers import imap_in_processes
import stubborn

if __name__ == "__main__":  # spawned workers import this file again
    for result in imap_in_processes(stubborn.job, [60, 60, 60, 60], 2):
        print("result", result, flush=True)
'''


@pytest.mark.parametrize("signum, target", [(signal.SIGTERM, "group"), (signal.SIGKILL, "parent")])
def test_no_worker_outlives_its_parent(tmp_path, signum, target):
    """Workers that ignore SIGTERM (as Lightning's handler may) and hold queued jobs: the
    parent dies (its default SIGTERM action, or SIGKILL that nothing catches) and every
    worker is gone within seconds."""
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    (tmp_path / "pool.py").write_text(POOL)
    proc = start(["pool.py"], tmp_path)
    workers = []
    try:
        while len(workers) < 2:
            line = proc.stdout.readline()
            assert line, f"the pool stopped early: {proc.stderr.read()[-2000:]}"
            if line.startswith("working"):
                workers.append(int(line.split()[1]))
        if target == "group":
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        proc.wait(timeout=20)
        assert still_running(workers, within=5) == [], \
            f"workers {workers} still run after the parent was stopped by {signal.Signals(signum).name}"
    finally:
        kill_leftovers(workers)
        proc.kill()
        proc.communicate()


def test_closing_the_results_stops_the_workers_at_once(tmp_path, monkeypatch):
    """A caller that stops reading (an error or a signal while it handles a result) kills the
    workers, even those that ignore SIGTERM: it does not wait for their jobs."""
    import threading

    from ift.lab.workers import imap_in_processes

    (tmp_path / "stubborn.py").write_text(STUBBORN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import stubborn

    before = children(os.getpid())
    results = imap_in_processes(stubborn.job, [0, 60, 60], 2)
    workers = []
    try:
        assert next(results) == 0
        workers = [pid for pid in children(os.getpid()) - before if "--multiprocessing-fork" in command_line(pid)]
        assert workers
        closing = threading.Thread(target=results.close, daemon=True)  # a thread: a hang fails, not blocks
        closing.start()
        closing.join(20)
        assert not closing.is_alive(), "closing the results waits for the workers' jobs"
        assert still_running(workers, within=5) == []
    finally:
        kill_leftovers(workers)


# ---------------------------------------------------------------------------- ift frozen-lake
SEEDS = 6


def frozen_lake_argv(out: Path, workers: int):
    return ["frozen-lake", "--setup", "ours", "--policy", "mlp", "--objectives", "SFT", "--seeds", str(SEEDS),
            "--steps", "2", "--eval-every", "0", "--workers", str(workers), "--out", str(out)]


def two_workers(proc):
    """The pids of the command's two workers once both run (None before; fails if it ended)."""
    if proc.poll() is not None:
        pytest.fail(f"the command ended: {proc.communicate()}")
    workers = [pid for pid in children(proc.pid) if "--multiprocessing-fork" in command_line(pid)]
    return workers if len(workers) == 2 else None


@pytest.mark.parametrize("signum, target, after_a_run", [(signal.SIGTERM, "group", True),
                                                         (signal.SIGINT, "parent", False)])
def test_a_signal_stops_frozen_lake_workers_and_keeps_the_finished_runs(tmp_path, capsys, signum, target, after_a_run):
    """SIGTERM to the command's process group (once a run has finished), or Ctrl-C's SIGINT to
    the parent alone (while the workers start): the workers stop within seconds, the command
    says how many runs finished and where they are, exits with 128 + the signal, and the same
    command run again trains only the others."""
    out = tmp_path / "fl"
    partial = out / "runs.jsonl.partial"
    proc = start(["-m", "ift.cli", *frozen_lake_argv(out, workers=2)], tmp_path)
    workers = []
    try:
        workers = wait_for(lambda: two_workers(proc), 60, "the two workers")
        if after_a_run:
            wait_for(lambda: lines(partial) >= 1 or proc.poll() is not None, 60, "the first finished run")
        (os.killpg if target == "group" else os.kill)(proc.pid, signum)
        _, err = proc.communicate(timeout=30)
        assert still_running(workers, within=5) == []
    finally:
        kill_leftovers(workers)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, err[-3000:]
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
    assert f"ift frozen-lake: stopped by {name}" in err and "Traceback" not in err, err[-3000:]
    stopped = re.search(rf"stopped after (\d+) of {SEEDS} runs", err)
    assert stopped, err[-3000:]
    kept = int(stopped.group(1))
    assert lines(partial) == kept and not (out / "runs.jsonl").exists() and not (out / "runs.jsonl.lock").exists()
    if not after_a_run:
        return
    assert kept >= 1 and (f"the finished runs are in {partial}; run the same command again to train only the other "
                          f"{SEEDS - kept}") in err
    # The same command again (the number of workers does not change a run): only the others are trained.
    capsys.readouterr()
    results = main(frozen_lake_argv(out, workers=1))
    printed = capsys.readouterr().out
    assert f"{kept} of {SEEDS} runs were finished by a stopped command; training the other {SEEDS - kept}" in printed
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted(run["seed"] for run in runs) == list(range(SEEDS)) and not partial.exists()
    assert json.loads((out / "ours" / "mlp" / "results.json").read_text()) == json.loads(json.dumps(results["ours"]["mlp"]))
