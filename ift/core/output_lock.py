"""One writer per output file: a lock file beside it that names the run holding it.

Two runs writing the same output used to interleave their lines and rename each other's
``.partial`` file (the second then died with ``FileNotFoundError``). A run now takes
``<output>.lock`` before it writes: the file holds its pid, host, start time and command
line, so a second run is refused with a message naming the first. A lock whose run is no
longer alive (killed with SIGKILL, the machine rebooted) is taken over, with a message.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from typing import Any, Callable, Dict, Optional

LOCK = ".lock"


class OutputLocked(Exception):
    """The output is being written by another run (the message names it)."""


def _process_start(pid: int) -> Optional[str]:
    """The kernel's start time of process ``pid`` (Linux /proc), so a reused pid is not taken
    for the run that held the lock; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None  # field 22 of stat; Z: a zombie


def _alive(holder: Dict[str, Any]) -> bool:
    """Whether the run described by a lock's content is still running on this host."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    if holder.get("process_start") is not None and os.path.isdir("/proc"):
        return _process_start(pid) == holder["process_start"]
    return True


def describe_holder(holder: Dict[str, Any]) -> str:
    """``pid 123 on host, started 2024-05-01 10:00:00: ift code-pairs ...``"""
    text = f"pid {holder.get('pid')}"
    if holder.get("host") and holder.get("host") != socket.gethostname():
        text += f" on {holder['host']}"
    if holder.get("started"):
        text += f", started {holder['started']}"
    if holder.get("command"):
        text += f": {holder['command']}"
    return text


class OutputLock:
    """The lock of one output file (``<path>.lock``).

    Args:
        path: the output file the lock protects.
        refuse: makes the exception raised when a live run holds the lock (from its message).
        note: prints a message (a stale lock taken over).
    """

    def __init__(self, path: str, refuse: Callable[[str], Exception] = OutputLocked,
                 note: Callable[[str], None] = lambda text: print(text, file=sys.stderr)):
        self.path = path + LOCK
        self.refuse = refuse
        self.note = note
        self.held = False

    def acquire(self) -> "OutputLock":
        """Take the lock; ``refuse(message)`` is raised when a live run holds it. OSError when
        the folder cannot be written."""
        content = json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
            "process_start": _process_start(os.getpid()), "command": " ".join(sys.argv),
        })
        for _ in range(2):  # a second try after taking over a stale lock
            if self._create(content):
                self.held = True
                return self
            holder = self._read()
            if holder is None:
                continue  # removed meanwhile (the other run finished)
            if holder.get("host") not in (None, socket.gethostname()):
                raise self.refuse(f"it is being written by another run ({describe_holder(holder)}); if that run is "
                                  f"over, delete {self.path}")
            if _alive(holder):
                raise self.refuse(f"it is being written by another run ({describe_holder(holder)}); wait for it to "
                                  f"finish or stop it, or write to another file")
            self.note(f"{self.path}: taking over the lock of a run that is no longer running "
                      f"({describe_holder(holder)})")
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        raise self.refuse(f"another run took {self.path} at the same moment; try again")

    def release(self) -> None:
        """Give the lock back (only a lock this object holds)."""
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def _create(self, content: str) -> bool:
        # Written to a file of its own, then linked to the lock's name: a lock is never seen
        # half-written, and link() fails when the name exists (the atomic test-and-set).
        temporary = f"{self.path}.{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(content)
        try:
            os.link(temporary, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(content)
            return True
        finally:
            os.remove(temporary)

    def _read(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                holder = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: no live run can be named, so it is stale
        return holder if isinstance(holder, dict) else {}


__all__ = ["LOCK", "OutputLock", "OutputLocked", "describe_holder"]
