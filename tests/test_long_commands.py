"""Long commands keep their work and check their input first: ``ift frozen-lake`` checks
``--out`` before training and keeps each finished run (a rerun continues); one run writes an
output at a time (``ift code-pairs``, ``ift predict``: a second is refused naming the first,
a dead one's lock is taken over); ``--task`` is read and checked before any model loads.

The real-signal versions (a process stopped by SIGINT or SIGTERM) are in
``tests/test_command_signals.py``, ``tests/test_code_pairs.py`` and ``tests/test_humaneval.py``.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from ift.cli import main
from ift.lab.code import command as pass_rate_command
from ift.lab.code import pairs_command
from ift.lab.frozen_lake import command as frozen_lake
from signal_helpers import lines, reap, start, wait_for


# ---------------------------------------------------------------------------- ift frozen-lake: --out first
def frozen_lake_argv(out, seeds=4, *more):
    return ["frozen-lake", "--setup", "ours", "--policy", "mlp", "--objectives", "SFT", "--seeds", str(seeds),
            "--steps", "2", "--eval-every", "0", "--workers", "1", "--out", str(out), *more]


@pytest.mark.parametrize("layout", ["a file at --out", "--out below a file", "a file at OUT/ours/mlp"])
def test_frozen_lake_checks_out_before_any_training(tmp_path, monkeypatch, layout):
    monkeypatch.setattr(frozen_lake, "run_one", lambda job: pytest.fail(f"trained before --out was checked ({layout})"))
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = {"a file at --out": blocker, "--out below a file": blocker / "results",
           "a file at OUT/ours/mlp": tmp_path / "out"}[layout]
    if layout == "a file at OUT/ours/mlp":
        (out / "ours").mkdir(parents=True)
        (out / "ours" / "mlp").write_text("in the way")
    with pytest.raises(SystemExit) as stopped:
        main(frozen_lake_argv(out))
    message = str(stopped.value.code)
    assert message.startswith(f"ift frozen-lake: error: --out {out}: ")
    expected = {"a file at --out": f"{blocker} is a file, not a folder",
                "--out below a file": f"{out} cannot be written (Not a directory)",
                "a file at OUT/ours/mlp": f"{out / 'ours' / 'mlp'} is a file, not a folder"}[layout]
    assert expected in message and "give an --out folder that can be written" in message
    assert blocker.read_text() == "not a folder"


# ---------------------------------------------------------------------------- ift frozen-lake: keeping runs
RUN_ONE = frozen_lake.run_one


class StopAfter:
    """``run_one`` that raises KeyboardInterrupt (as Ctrl-C would) once ``runs`` runs finished."""

    def __init__(self, runs=None):
        self.runs, self.calls = runs, 0
        self.run_one = RUN_ONE

    def __call__(self, job):
        if self.runs is not None and self.calls >= self.runs:
            raise KeyboardInterrupt
        self.calls += 1
        return self.run_one(job)


def stopped_by_ctrl_c(argv):
    """The exit status of ``ift ARGV`` stopped by a KeyboardInterrupt (a raw one fails the test)."""
    try:
        main(argv)
    except SystemExit as stopped:
        return stopped.code
    except KeyboardInterrupt:
        pytest.fail("the command let a raw KeyboardInterrupt through: nothing said what was kept")
    pytest.fail("the command was not stopped")


def test_frozen_lake_keeps_finished_runs_and_a_rerun_trains_only_the_others(tmp_path, monkeypatch, capsys):
    out = tmp_path / "stopped"
    stop = StopAfter(runs=2)
    monkeypatch.setattr(frozen_lake, "run_one", stop)
    assert stopped_by_ctrl_c(frozen_lake_argv(out)) == 130
    err = capsys.readouterr().err
    assert "ift frozen-lake: stopped by Ctrl-C (SIGINT)" in err
    assert (f"stopped after 2 of 4 runs; the finished runs are in {out / 'runs.jsonl.partial'}; run the same command "
            f"again to train only the other 2 (--fresh trains them all again)") in err
    assert lines(out / "runs.jsonl.partial") == 2 and not (out / "ours" / "mlp" / "results.json").exists()

    # Other settings cannot continue these runs: refused, naming the difference and --fresh.
    with pytest.raises(SystemExit) as refused:
        main(frozen_lake_argv(out, 5))
    assert "other settings (seeds: 4 there, 5 now)" in str(refused.value.code) and "--fresh" in str(refused.value.code)

    stop = StopAfter()
    monkeypatch.setattr(frozen_lake, "run_one", stop)
    continued = main(frozen_lake_argv(out))
    assert stop.calls == 2 and "2 of 4 runs were finished by a stopped command" in capsys.readouterr().out
    assert lines(out / "runs.jsonl") == 4 and not (out / "runs.jsonl.partial").exists()
    whole = main(frozen_lake_argv(tmp_path / "whole"))
    assert continued == whole  # the same numbers as a command never stopped

    # --fresh trains every run again, even over a stopped command's runs.
    monkeypatch.setattr(frozen_lake, "run_one", StopAfter(runs=1))
    assert stopped_by_ctrl_c(frozen_lake_argv(out)) == 130
    stop = StopAfter()
    monkeypatch.setattr(frozen_lake, "run_one", stop)
    assert main(frozen_lake_argv(out, 4, "--fresh")) == whole and stop.calls == 4


# ---------------------------------------------------------------------------- one writer per output
def code_pairs_argv(num):
    return ["code-pairs", "--strong", "tiny-gpt2", "--task", '{"num_train": 400}', "--num", str(num), "--samples", "2",
            "--batch-size", "2", "--max-new-tokens", "16"]


def test_a_second_code_pairs_run_on_the_same_output_is_refused_naming_the_first(tmp_path, capsys):
    """Two runs on one --output used to mix their lines (and one died renaming the other's
    .partial file): the second is refused with the first's pid; once the first is dead
    (SIGKILL leaves its lock) the next run takes the lock over and says so."""
    out = tmp_path / "pairs.jsonl"
    first = start(["-m", "ift.cli", *code_pairs_argv(40), "--output", str(out)], tmp_path)
    try:
        wait_for(lambda: (tmp_path / "pairs.jsonl.partial").exists() or first.poll() is not None, 60,
                 "the first run's output")
        with pytest.raises(SystemExit) as refused:
            main([*code_pairs_argv(40), "--output", str(out)])
        message = str(refused.value.code)
        assert f"--output {out}: it is being written by another run (pid {first.pid}, started " in message, message
        assert "code-pairs" in message and first.poll() is None  # the command line is named; the first goes on
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
    finally:
        reap(first)
    assert (tmp_path / "pairs.jsonl.lock").exists()  # a killed run cannot give its lock back
    capsys.readouterr()
    summary = main([*code_pairs_argv(1), "--overwrite", "--output", str(out)])
    err = capsys.readouterr().err
    assert f"taking over the lock of a run that is no longer running (pid {first.pid}" in err
    assert summary["problems"] == 1 and out.exists() and not (tmp_path / "pairs.jsonl.lock").exists()


HOLD_PREDICTIONS = """
import sys, time
from ift.predict.output import PredictionOutput
PredictionOutput(sys.argv[1]).open()
print("open", flush=True)
time.sleep(60)
"""


def test_ift_predict_shares_the_one_writer_rule(tmp_path, capsys):
    from ift.predict import PredictError
    from ift.predict.output import PredictionOutput

    out = tmp_path / "predictions.jsonl"
    (tmp_path / "hold.py").write_text(HOLD_PREDICTIONS)
    holder = start(["hold.py", str(out)], tmp_path)
    try:
        assert holder.stdout.readline() == "open\n", holder.stderr.read()
        with pytest.raises(PredictError, match=rf"being written by another run \(pid {holder.pid}, started "):
            PredictionOutput(str(out)).open()
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate()
    finally:
        reap(holder)
    output = PredictionOutput(str(out), overwrite=True).open()  # the dead run's .partial is replaced
    assert f"taking over the lock of a run that is no longer running (pid {holder.pid}" in capsys.readouterr().err
    output.write([{"response": "x"}])
    assert output.commit() == str(out) and not (tmp_path / "predictions.jsonl.lock").exists()


# ---------------------------------------------------------------------------- --task, before any model loads
def model_must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before --task was checked")


BAD_TASKS = [
    ("num_train=3", "is not JSON"),
    ('{"num_trian": 3}', "num_trian"),
    ('{"batch_size": 4}', "batch_size is not used here"),
    ("[3]", "JSON object of CodeTaskDataModule arguments"),
    ("task.json", "--task task.json: no such file; give a JSON object inline"),
    ("configs/task.yaml", "--task configs/task.yaml: no such file"),
    ('{"max_steps": 0}', "max_steps and max_constant must be >= 1"),
]


@pytest.mark.parametrize("value, message", BAD_TASKS)
@pytest.mark.parametrize("command", ["code-pass-rate", "code-pairs"])
def test_a_bad_task_stops_before_the_model_loads_naming_the_fix(tmp_path, monkeypatch, command, value, message):
    monkeypatch.setattr(pass_rate_command, "_load_module", model_must_not_load)
    monkeypatch.setattr(pairs_command, "load_sources", model_must_not_load)
    argv = ["code-pass-rate"] if command == "code-pass-rate" else [
        "code-pairs", "--strong", "tiny-gpt2", "--output", str(tmp_path / "pairs.jsonl")]
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--task", value])
    assert str(stopped.value.code).startswith(f"ift {command}: error: --task") and message in str(stopped.value.code)
    assert not list(tmp_path.glob("pairs.jsonl*"))


def test_a_task_file_is_read_as_the_json_it_holds(tmp_path):
    (tmp_path / "task.json").write_text(json.dumps({"num_val": 3, "task_seed": 2}))
    result = main(["code-pass-rate", "--task", "task.json", "--max-new-tokens", "4"])
    assert result["count"] == 3.0
