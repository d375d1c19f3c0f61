"""A JSONL output file written to ``<path>.partial`` and given its name only when complete.

Runs that write such a file (``ift predict``, ``ift code-pairs``, the ``--out`` of ``ift
code-pass-rate``) take minutes before the first line, so the file is checked and opened
before any work: a folder that cannot be written stops the run at once, with the folder's
name and the fix. The lines go to the ``.partial`` file and :meth:`PartialJsonlFile.commit`
renames it, so a file under the output's name is never a run cut short.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, IO, Iterable, Optional, Tuple, Type

PARTIAL = ".partial"


class PartialJsonlFile:
    """One JSONL output file, checked on :meth:`open`, written a batch at a time, named on
    :meth:`commit`.

    Subclasses set the class attributes to fit their command:

    * ``error``: the exception a check raises (the command's own error type).
    * ``example_name``: the file name suggested when the output given is a folder.
    * ``flag``: the command-line option the messages name.
    * ``exists_hint``: what the message about an existing file advises (``{flag}``: ``flag``).
    * ``guard_partial``: an existing ``.partial`` file is refused too (without ``overwrite``).
    * ``keep_written``: :meth:`abort` keeps a ``.partial`` file that holds lines.

    Args:
        path: the file to write (its folder is created when missing).
        overwrite: replace an existing file (else an existing file stops the run).
    """

    error: Type[Exception] = ValueError
    example_name = "output.jsonl"
    flag = "--output"
    exists_hint = "pass --overwrite to replace it, or give another {flag}"
    guard_partial = False
    keep_written = False

    def __init__(self, path: str, overwrite: bool = False) -> None:
        self.path = path
        self.overwrite = overwrite
        self.lines = 0
        self._handle: Optional[IO[str]] = None

    @property
    def partial_path(self) -> str:
        """Where the lines go until :meth:`commit`."""
        return self.path + PARTIAL

    def _guarded(self) -> Tuple[str, ...]:
        return (self.path, self.partial_path) if self.guard_partial else (self.path,)

    def open(self) -> "PartialJsonlFile":
        """Check the file can be written and start the partial file; ``error`` naming the fix if not."""
        if os.path.isdir(self.path):
            raise self.error(f"{self.flag} {self.path} is a folder; give a file name, e.g. "
                             f"{os.path.join(self.path, self.example_name)}")
        for existing in self._guarded():
            if os.path.exists(existing) and not self.overwrite:
                # With the partial file guarded too, the message says which of the two exists.
                which = f": {existing}" if self.guard_partial else ""
                raise self.error(f"{self.flag} {self.path}{which} already exists; "
                                 + self.exists_hint.format(flag=self.flag))
        folder = os.path.dirname(os.path.abspath(self.path))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise self.error(f"{self.flag} {self.path}: the folder {folder} cannot be written: it is a file; "
                             f"give an {self.flag} in a writable folder")
        try:
            os.makedirs(folder, exist_ok=True)
            self._handle = open(self.partial_path, "w", encoding="utf-8")
        except OSError as error:
            raise self.error(f"{self.flag} {self.path}: the folder {folder} cannot be written "
                             f"({error.strerror or error}); give an {self.flag} in a writable folder") from None
        return self

    def write(self, records: Iterable[Dict[str, Any]]) -> None:
        """Append one JSON line per record and flush (a batch at a time, so a crash keeps it)."""
        assert self._handle is not None, "open() first"
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.lines += 1
        self._handle.flush()

    def commit(self) -> str:
        """Every line is written: close the file and give it its name. Returns the path."""
        assert self._handle is not None, "open() first"
        self._handle.close()
        os.replace(self.partial_path, self.path)
        return self.path

    def abort(self) -> Optional[str]:
        """Stop after an error: close the partial file; with ``keep_written`` one that holds
        lines stays (its path is returned), else it is removed (None)."""
        if self._handle is None:
            return None
        self._handle.close()
        if self.keep_written and self.lines:
            return self.partial_path
        try:
            os.remove(self.partial_path)
        except OSError:
            pass
        return None


__all__ = ["PARTIAL", "PartialJsonlFile"]
