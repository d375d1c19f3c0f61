"""A JSONL output file written to ``<path>.partial`` and given its name only when complete.

Runs that write such a file (``ift predict``, ``ift code-pairs``, the ``--out`` of ``ift
code-pass-rate``, the run log of ``ift frozen-lake``) take minutes before the first line,
so the file is checked and opened before any work: a folder that cannot be written stops
the run at once, with the folder's name and the fix. The lines go to the ``.partial`` file,
appended and flushed as each piece of work finishes, and :meth:`PartialJsonlFile.commit`
renames it, so a file under the output's name is never a run cut short.

One run writes a file at a time: :meth:`PartialJsonlFile.open` takes ``<path>.lock``
(:mod:`ift.core.output_lock`), and a second run is refused with the first one's pid, start
time and command.

A *resumable* file continues where a stopped run left it. Beside the ``.partial`` file,
``<path>.partial.progress`` records the settings of the run (first line) and, after each
piece of work, how many lines are complete and what the work was (one JSON line each, see
:meth:`PartialJsonlFile.write`). A rerun with the same settings keeps those lines
(:attr:`~PartialJsonlFile.resumed`, :attr:`~PartialJsonlFile.progress`) and appends; one
with other settings is refused, naming them, since its lines would not belong together.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, IO, Iterable, List, Optional, Tuple, Type

from ift.core.output_lock import OutputLock

PARTIAL = ".partial"
PROGRESS = ".progress"


class PartialJsonlFile:
    """One JSONL output file, checked and locked on :meth:`open`, written as work finishes,
    named on :meth:`commit`.

    Subclasses set the class attributes to fit their command:

    * ``error``: the exception a check raises (the command's own error type).
    * ``example_name``: the file name suggested when the output given is a folder.
    * ``flag``: the command-line option the messages name.
    * ``prog``: the command the messages printed on stderr start with.
    * ``exists_hint``: what the message about an existing file advises (``{flag}``: ``flag``).
    * ``restart_hint``: how to start over instead of continuing a ``.partial`` file.
    * ``guard_partial``: an existing ``.partial`` file is refused too (without ``overwrite``).
    * ``keep_written``: :meth:`abort` keeps a ``.partial`` file that holds lines.
    * ``resumable``: an existing ``.partial`` file is continued (see the module docstring).

    Args:
        path: the file to write (its folder is created when missing).
        overwrite: replace an existing file (else an existing file stops the run).
        restart: with ``resumable``, start over instead of continuing a ``.partial`` file
            (default: ``overwrite``).
        settings: with ``resumable``, what makes the lines of two runs belong together (JSON
            values); continuing a ``.partial`` file needs the same.
    """

    error: Type[Exception] = ValueError
    example_name = "output.jsonl"
    flag = "--output"
    prog = "ift"
    exists_hint = "pass --overwrite to replace it, or give another {flag}"
    restart_hint = "pass --overwrite to start over"
    guard_partial = False
    keep_written = False
    resumable = False

    def __init__(self, path: str, overwrite: bool = False, restart: Optional[bool] = None,
                 settings: Optional[Dict[str, Any]] = None) -> None:
        self.path = path
        self.overwrite = overwrite
        self.restart = overwrite if restart is None else restart
        # As JSON gives them back (tuples become lists), to compare with a stopped run's.
        self.settings: Dict[str, Any] = json.loads(json.dumps(settings or {}))
        #: Lines in the ``.partial`` file (those kept from a stopped run included).
        self.lines = 0
        #: The records a stopped run left, kept (resumable files).
        self.resumed: List[Dict[str, Any]] = []
        #: The progress notes of :meth:`write` (those of a stopped run first).
        self.progress: List[Dict[str, Any]] = []
        self._handle: Optional[IO[str]] = None
        self._progress: Optional[IO[str]] = None
        self._lock: Optional[OutputLock] = None

    @property
    def partial_path(self) -> str:
        """Where the lines go until :meth:`commit`."""
        return self.path + PARTIAL

    @property
    def progress_path(self) -> str:
        """Where a resumable file records its settings and progress."""
        return self.partial_path + PROGRESS

    def _guarded(self) -> Tuple[str, ...]:
        return (self.path, self.partial_path) if self.guard_partial else (self.path,)

    def _note(self, text: str) -> None:
        print(f"{self.prog}: {text}", file=sys.stderr, flush=True)

    def open(self) -> "PartialJsonlFile":
        """Check the file can be written, take its lock and start (or continue) the partial
        file; ``error`` naming the fix if not."""
        if os.path.isdir(self.path):
            raise self.error(f"{self.flag} {self.path} is a folder; give a file name, e.g. "
                             f"{os.path.join(self.path, self.example_name)}")
        folder = os.path.dirname(os.path.abspath(self.path))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise self.error(f"{self.flag} {self.path}: the folder {folder} cannot be written: it is a file; "
                             f"give an {self.flag} in a writable folder")
        try:
            os.makedirs(folder, exist_ok=True)
            self._lock = OutputLock(self.path, refuse=lambda text: self.error(f"{self.flag} {self.path}: {text}"),
                                    note=self._note).acquire()
        except OSError as error:
            raise self._unwritable(folder, error) from None
        try:
            self._start(folder)
        except BaseException:
            self._release()
            raise
        return self

    def _start(self, folder: str) -> None:
        for existing in self._guarded():
            if os.path.exists(existing) and not self.overwrite:
                # With the partial file guarded too, the message says which of the two exists.
                which = f": {existing}" if self.guard_partial else ""
                raise self.error(f"{self.flag} {self.path}{which} already exists; "
                                 + self.exists_hint.format(flag=self.flag))
        try:
            if self.resumable and not self.restart and os.path.exists(self.partial_path):
                self._resume()
            else:
                self._handle = open(self.partial_path, "w", encoding="utf-8")
                if self.resumable:
                    self._progress = open(self.progress_path, "w", encoding="utf-8")
                    self._append_progress({"settings": self.settings})
        except OSError as error:
            raise self._unwritable(folder, error) from None

    def _unwritable(self, folder: str, error: OSError) -> Exception:
        return self.error(f"{self.flag} {self.path}: the folder {folder} cannot be written "
                          f"({error.strerror or error}); give an {self.flag} in a writable folder")

    # ------------------------------------------------------------------ continuing
    def _resume(self) -> None:
        """Keep the complete work of a stopped run: the lines its last progress note counts."""
        header, notes = self._read_progress()
        if header is None:
            raise self.error(f"{self.flag} {self.path}: {self.partial_path} is left by a stopped run, but "
                             f"{self.progress_path} (what it was and how far it got) is missing or unreadable, so "
                             f"it cannot be continued; {self.restart_hint}")
        different = {key for key in set(header) | set(self.settings) if header.get(key) != self.settings.get(key)}
        if different:
            shown = "; ".join(f"{key}: {json.dumps(header.get(key))} there, {json.dumps(self.settings.get(key))} now"
                              for key in sorted(different))
            raise self.error(f"{self.flag} {self.path}: {self.partial_path} was left by a stopped run with other "
                             f"settings ({shown}); rerun with its settings to continue it, or {self.restart_hint}")
        complete = notes[-1]["lines"] if notes else 0
        size = 0
        with open(self.partial_path, "rb") as lines:
            for _ in range(complete):
                line = lines.readline()
                if not line.endswith(b"\n"):
                    raise self.error(f"{self.flag} {self.path}: {self.partial_path} has fewer lines than "
                                     f"{self.progress_path} counts ({complete}); {self.restart_hint}")
                self.resumed.append(json.loads(line))
                size += len(line)
        # Lines after the last note are work that did not finish: written again.
        os.truncate(self.partial_path, size)
        self.lines = complete
        self.progress = notes
        self._handle = open(self.partial_path, "a", encoding="utf-8")
        # Rewritten whole: a note cut short by a kill would spoil the next one.
        temporary = self.progress_path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as rewritten:
            for entry in [{"settings": header}] + notes:
                rewritten.write(json.dumps(entry, ensure_ascii=False) + "\n")
        os.replace(temporary, self.progress_path)
        self._progress = open(self.progress_path, "a", encoding="utf-8")

    def _read_progress(self) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
        """The settings and the complete progress notes of a stopped run (None: none readable)."""
        try:
            with open(self.progress_path, encoding="utf-8") as lines:
                entries = []
                for line in lines:
                    try:
                        entries.append(json.loads(line))
                    except ValueError:
                        break  # the note being written when the run was killed
        except OSError:
            return None, []
        if not entries or not isinstance(entries[0], dict) or not isinstance(entries[0].get("settings"), dict):
            return None, []
        return entries[0]["settings"], [entry for entry in entries[1:] if isinstance(entry, dict)
                                        and isinstance(entry.get("lines"), int)]

    # ------------------------------------------------------------------ writing
    def write(self, records: Iterable[Dict[str, Any]], done: Optional[Dict[str, Any]] = None) -> None:
        """Append one JSON line per record and flush (a piece of work at a time, so a crash
        keeps it). A resumable file then records ``done`` (what the work was, JSON values)
        with the count of complete lines: the lines of work that finished."""
        assert self._handle is not None, "open() first"
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.lines += 1
        self._handle.flush()
        if self.resumable:
            note = dict(done or {}, lines=self.lines)
            self.progress.append(note)
            self._append_progress(note)

    def _append_progress(self, entry: Dict[str, Any]) -> None:
        assert self._progress is not None
        self._progress.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._progress.flush()

    # ------------------------------------------------------------------ ending
    def commit(self) -> str:
        """Every line is written: close the file and give it its name. Returns the path."""
        assert self._handle is not None, "open() first"
        self._close()
        os.replace(self.partial_path, self.path)
        self._remove(self.progress_path)
        self._release()
        return self.path

    def abort(self) -> Optional[str]:
        """Stop after an error or a signal: close the partial file; with ``keep_written`` one
        that holds lines (or, resumable, records progress) stays, with its progress, and its
        path is returned; else it is removed (None)."""
        if self._handle is None:
            self._release()
            return None
        self._close()
        try:
            if self.keep_written and (self.lines or (self.resumable and self.progress)):
                return self.partial_path
            self._remove(self.partial_path)
            self._remove(self.progress_path)
            return None
        finally:
            self._release()

    def _close(self) -> None:
        for handle in (self._handle, self._progress):
            if handle is not None and handle is not sys.stdout:
                handle.close()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @staticmethod
    def _remove(path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


__all__ = ["PARTIAL", "PROGRESS", "PartialJsonlFile"]
