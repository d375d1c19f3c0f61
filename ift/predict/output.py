"""Where ``ift predict`` writes its JSONL, and how, so that no work is lost or half-written.

* The default is a file next to the prompts: ``prompts.jsonl`` -> ``prompts.predictions.jsonl``
  (for a ``datasets`` name, ``<name>.<split>.predictions.jsonl`` in the working directory);
  ``-`` writes to stdout.
* Before the model is loaded or anything generated, the folder is created if needed and a
  file is opened in it: a folder that cannot be written stops with its name.
* An existing output is never replaced without ``--overwrite``, and the prompts file itself
  never.
* Lines go to ``<output>.partial`` as they are generated (flushed after every batch) and the
  file gets its name only when every prompt has its response: a file under the output's
  name is complete; after a crash the ``.partial`` file keeps what was generated.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Dict, IO, Iterable, Optional

from ift.predict.policy import PredictError

STDOUT = "-"
SUFFIX = ".predictions.jsonl"
PARTIAL = ".partial"


def default_output(source: str, split: str) -> str:
    """The output path used when ``--output`` is not given (see the module docstring)."""
    if os.path.isfile(source):
        stem = os.path.splitext(source)[0]
        return stem + SUFFIX
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.strip("/")) or "predictions"
    return f"{name}.{split}{SUFFIX}"


class PredictionOutput:
    """The output of one ``ift predict`` run (a file, or stdout for ``-``).

    Args:
        path: the output file, or ``-``.
        overwrite: replace an existing output (and a ``.partial`` left by an earlier run).
        source: the prompts file, which is never overwritten.
    """

    def __init__(self, path: str, overwrite: bool = False, source: Optional[str] = None):
        self.path = path
        self.overwrite = overwrite
        self.source = source
        self.lines = 0
        self._handle: Optional[IO[str]] = None

    @property
    def to_stdout(self) -> bool:
        return self.path == STDOUT

    @property
    def partial_path(self) -> str:
        return self.path + PARTIAL

    def open(self) -> "PredictionOutput":
        """Check the output can be written (before any work) and open its ``.partial`` file."""
        if self.to_stdout:
            self._handle = sys.stdout
            return self
        if self.source is not None and os.path.exists(self.source) and os.path.exists(self.path) \
                and os.path.samefile(self.source, self.path):
            raise PredictError(f"--output {self.path} is the prompts file itself; give another --output")
        if os.path.isdir(self.path):
            raise PredictError(f"--output {self.path} is a folder; give a file name, e.g. "
                               f"{os.path.join(self.path, 'predictions.jsonl')}")
        for existing in (self.path, self.partial_path):
            if os.path.exists(existing) and not self.overwrite:
                raise PredictError(f"--output {self.path}: {existing} already exists; pass --overwrite to replace it, "
                                   f"or give another --output")
        folder = os.path.dirname(os.path.abspath(self.path))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise PredictError(f"--output {self.path}: the folder {folder} cannot be written: it is a file; "
                               f"give an --output in a writable folder")
        try:
            os.makedirs(folder, exist_ok=True)
            self._handle = open(self.partial_path, "w", encoding="utf-8")
        except OSError as error:
            raise PredictError(f"--output {self.path}: the folder {folder} cannot be written ({error.strerror or error}); "
                               f"give an --output in a writable folder") from None
        return self

    def write(self, records: Iterable[Dict[str, Any]]) -> None:
        """Write one JSON line per record and flush (a batch at a time)."""
        assert self._handle is not None, "open() first"
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.lines += 1
        self._handle.flush()

    def commit(self) -> str:
        """Every line is written: give the file its name. Returns where the lines are."""
        if self.to_stdout:
            return "stdout"
        assert self._handle is not None
        self._handle.close()
        os.replace(self.partial_path, self.path)
        return self.path

    def abort(self) -> Optional[str]:
        """Stop after an error: the ``.partial`` file stays when it holds lines (returns its
        path), an empty one is removed (None)."""
        if self.to_stdout or self._handle is None:
            return None
        self._handle.close()
        if self.lines:
            return self.partial_path
        try:
            os.remove(self.partial_path)
        except OSError:
            pass
        return None
