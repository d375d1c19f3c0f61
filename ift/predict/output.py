"""Where ``ift predict`` writes its JSONL, and how, so that no work is lost or half-written.

* The default is a file next to the prompts: ``prompts.jsonl`` -> ``prompts.predictions.jsonl``
  (for a ``datasets`` name, ``<name>.<split>.predictions.jsonl`` in the working directory);
  ``-`` writes to stdout.
* Before the model is loaded or anything generated, the folder is created if needed and a
  file is opened in it: a folder that cannot be written stops with its name.
* An existing output is never replaced without ``--overwrite``, and the prompts file itself
  never. Two runs never write one output: the second is refused, naming the first
  (``<output>.lock``, :mod:`ift.core.output_lock`).
* Lines go to ``<output>.partial`` as they are generated (flushed after every batch) and the
  file gets its name only when every prompt has its response: a file under the output's
  name is complete; after a crash the ``.partial`` file keeps what was generated.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Optional

from ift.core.jsonl_output import PartialJsonlFile
from ift.predict.policy import PredictError

STDOUT = "-"
SUFFIX = ".predictions.jsonl"


def default_output(source: str, split: str) -> str:
    """The output path used when ``--output`` is not given (see the module docstring)."""
    if os.path.isfile(source):
        stem = os.path.splitext(source)[0]
        return stem + SUFFIX
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.strip("/")) or "predictions"
    return f"{name}.{split}{SUFFIX}"


class PredictionOutput(PartialJsonlFile):
    """The output of one ``ift predict`` run (a file, or stdout for ``-``).

    The file's checks and writing are :class:`PartialJsonlFile`'s; on top of them problems
    raise PredictError, ``-`` writes to stdout, the prompts file itself is refused, an
    existing ``.partial`` file is refused too (it may be an earlier run's work), and after
    an error a ``.partial`` file that holds lines is kept.

    Args:
        path: the output file, or ``-``.
        overwrite: replace an existing output (and a ``.partial`` left by an earlier run).
        source: the prompts file, which is never overwritten.
    """

    error = PredictError
    example_name = "predictions.jsonl"
    prog = "ift predict"
    guard_partial = True
    keep_written = True

    def __init__(self, path: str, overwrite: bool = False, source: Optional[str] = None):
        super().__init__(path, overwrite)
        self.source = source

    @property
    def to_stdout(self) -> bool:
        return self.path == STDOUT

    def open(self) -> "PredictionOutput":
        """Check the output can be written (before any work) and open its ``.partial`` file."""
        if self.to_stdout:
            self._handle = sys.stdout
            return self
        if self.source is not None and os.path.exists(self.source) and os.path.exists(self.path) \
                and os.path.samefile(self.source, self.path):
            raise PredictError(f"--output {self.path} is the prompts file itself; give another --output")
        super().open()
        return self

    def commit(self) -> str:
        """Every line is written: give the file its name. Returns where the lines are."""
        if self.to_stdout:
            return "stdout"
        return super().commit()

    def abort(self) -> Optional[str]:
        """Stop after an error: the ``.partial`` file stays when it holds lines (returns its
        path), an empty one is removed (None)."""
        if self.to_stdout:
            return None
        return super().abort()
