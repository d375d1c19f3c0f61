"""The ``--output`` file of ``ift code-pairs``: checked before any model loads, written whole.

Sampling and sandboxing take minutes, so a folder that cannot be written must stop the
run at once, not at the end. Lines go to ``<output>.partial`` and the file takes its name
only when every pair is in it: a file under the output's name is never a run cut short.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, IO, Iterable, Optional

PARTIAL = ".partial"


class PairFile:
    """The JSONL file of preference pairs.

    Args:
        path: the file to write (its folder is created when missing).
        overwrite: replace an existing file (else an existing file stops the run).
    """

    def __init__(self, path: str, overwrite: bool = False) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.partial = self.path + PARTIAL
        self.overwrite = overwrite
        self.lines = 0
        self._handle: Optional[IO[str]] = None

    def open(self) -> "PairFile":
        """Check the file can be written and start the partial file; ValueError naming the fix if not."""
        if os.path.isdir(self.path):
            raise ValueError(f"--output {self.path} is a folder; give a file name, e.g. "
                             f"{os.path.join(self.path, 'pairs.jsonl')}")
        if os.path.exists(self.path) and not self.overwrite:
            raise ValueError(f"--output {self.path} already exists; pass --overwrite to replace it, or give another "
                             f"--output")
        folder = os.path.dirname(self.path)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"--output {self.path}: the folder {folder} cannot be written: it is a file; give an "
                             f"--output in a writable folder")
        try:
            os.makedirs(folder, exist_ok=True)
            self._handle = open(self.partial, "w", encoding="utf-8")
        except OSError as error:
            raise ValueError(f"--output {self.path}: the folder {folder} cannot be written "
                             f"({error.strerror or error}); give an --output in a writable folder") from None
        return self

    def write(self, records: Iterable[Dict[str, Any]]) -> None:
        """Append one JSON line per record and flush."""
        assert self._handle is not None, "open() first"
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.lines += 1
        self._handle.flush()

    def commit(self) -> str:
        """Close the file and give it its name; returns the path."""
        assert self._handle is not None, "open() first"
        self._handle.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """After a failure: close and remove the partial file (pairs are written only at the
        end, so it holds nothing worth keeping)."""
        if self._handle is None:
            return
        self._handle.close()
        try:
            os.remove(self.partial)
        except OSError:
            pass


__all__ = ["PairFile"]
