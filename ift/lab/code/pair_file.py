"""The ``--output`` file of ``ift code-pairs``: checked before any model loads, written as it goes.

Sampling and sandboxing take minutes, so a folder that cannot be written must stop the
run at once, not at the end. The pairs of each group of problems are appended to
``<output>.partial`` as soon as the group is judged, and the file takes its name only when
every problem is done: a file under the output's name is never a run cut short. A run
stopped by Ctrl-C, SIGTERM or an error leaves the ``.partial`` file; the same command run
again continues it (:class:`~ift.core.jsonl_output.PartialJsonlFile`, resumable).
"""

from __future__ import annotations

import os

from ift.core.jsonl_output import PartialJsonlFile


class PairFile(PartialJsonlFile):
    """The JSONL file of preference pairs (checks, lock, writing and resuming:
    :class:`PartialJsonlFile`).

    Problems raise ValueError. After a stop :meth:`abort` keeps the ``.partial`` file and
    its progress when some problems are done, and a rerun with the same settings continues it.

    Args:
        path: the file to write (its folder is created when missing).
        overwrite: replace an existing file, and start over instead of continuing a
            ``.partial`` one (else an existing file stops the run).
        settings: the options that decide the pairs (a ``.partial`` file is continued only
            with the same).
    """

    error = ValueError
    example_name = "pairs.jsonl"
    prog = "ift code-pairs"
    keep_written = True
    resumable = True

    def __init__(self, path: str, overwrite: bool = False, settings=None) -> None:
        super().__init__(os.path.abspath(os.path.expanduser(path)), overwrite, settings=settings)

    @property
    def partial(self) -> str:
        """Where the lines go until :meth:`commit` (the name this class has always used)."""
        return self.partial_path


__all__ = ["PairFile"]
