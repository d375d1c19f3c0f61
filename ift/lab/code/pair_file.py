"""The ``--output`` file of ``ift code-pairs``: checked before any model loads, written whole.

Sampling and sandboxing take minutes, so a folder that cannot be written must stop the
run at once, not at the end. Lines go to ``<output>.partial`` and the file takes its name
only when every pair is in it: a file under the output's name is never a run cut short.
"""

from __future__ import annotations

import os

from ift.core.jsonl_output import PARTIAL, PartialJsonlFile  # noqa: F401  (PARTIAL: this module's name kept)


class PairFile(PartialJsonlFile):
    """The JSONL file of preference pairs (checks and writing: :class:`PartialJsonlFile`).

    Problems raise ValueError. Pairs are written only at the end, so after a failure the
    partial file holds nothing worth keeping: :meth:`abort` always removes it.

    Args:
        path: the file to write (its folder is created when missing).
        overwrite: replace an existing file (else an existing file stops the run).
    """

    error = ValueError
    example_name = "pairs.jsonl"

    def __init__(self, path: str, overwrite: bool = False) -> None:
        super().__init__(os.path.abspath(os.path.expanduser(path)), overwrite)

    @property
    def partial(self) -> str:
        """Where the lines go until :meth:`commit` (the name this class has always used)."""
        return self.partial_path


__all__ = ["PairFile"]
