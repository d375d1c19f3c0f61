"""Helpers of the tests that stop a real process with a real signal: start it in its own
process group, wait for a point of its work, and check by pid (from /proc) what is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def start(argv, cwd, **popen):
    """``argv`` run by this Python with the repository on its path, in a new process group
    (as a terminal starts a job), stdout and stderr captured as text."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (read from /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int):
    """The pids of every descendant of ``pid`` (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def command_line(pid: int) -> str:
    """The command line of process ``pid`` ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(condition, timeout: float, what: str):
    """Poll ``condition`` until it returns a true value (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def still_running(pids, within: float):
    """The pids of ``pids`` still running after up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def kill_leftovers(pids):
    """SIGKILL those of ``pids`` still running (only processes the test started)."""
    for pid in pids:  # only processes this test started
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def lines(path: Path) -> int:
    """Complete lines in ``path`` (0 when it is not there)."""
    return path.read_text().count("\n") if path.exists() else 0


def reap(proc) -> None:
    """Kill ``proc`` if it is still running and collect it (the ``finally`` of every test)."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def signal_when(proc, ready, what: str, sig=signal.SIGINT, timeout: float = 120) -> str:
    """Wait until ``ready()`` holds while ``proc`` still runs, send ``sig`` to its process group
    (as a terminal's Ctrl-C does) and return its stderr once it has ended."""
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout, what)
        assert proc.poll() is None, f"the command ended before any of its work was kept: {proc.communicate()}"
        os.killpg(proc.pid, sig)
        return proc.communicate(timeout=30)[1]
    finally:
        reap(proc)
