"""Where ``ift frozen-lake`` keeps each run as it finishes, so that a stop loses none of them.

Every finished run (one set-up, policy, objective and seed: :func:`ift.lab.frozen_lake.command.run_one`'s
record) is appended to ``OUT/runs.jsonl.partial`` at once. A command stopped by Ctrl-C,
SIGTERM or an error keeps that file, and the same command run again trains only the runs it
lacks; ``--fresh`` trains them all again. When every run is done the file becomes
``OUT/runs.jsonl`` (replaced on each complete run, like ``results.json``). The checks, the
lock (one command per ``--out``) and the resuming are
:class:`~ift.core.jsonl_output.PartialJsonlFile`'s.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

from ift.core.jsonl_output import PartialJsonlFile

RUN_LOG = "runs.jsonl"


class FrozenLakeError(Exception):
    """A problem of ``ift frozen-lake``'s input or output that the user fixes (the message says how)."""


class RunLog(PartialJsonlFile):
    """``OUT/runs.jsonl``: one finished run per line.

    Args:
        out: the ``--out`` folder.
        fresh: train every run again instead of continuing a stopped command's runs.
        settings: the options that decide the runs (a stopped command's file is continued
            only with the same).
    """

    error = FrozenLakeError
    example_name = RUN_LOG
    flag = "--out"
    prog = "ift frozen-lake"
    restart_hint = "give --fresh to train every run again"
    keep_written = True
    resumable = True

    def __init__(self, out: str, fresh: bool = False, settings: Dict[str, Any] = None) -> None:
        # A complete runs.jsonl is replaced, as results.json is: only a stopped command's is continued.
        super().__init__(os.path.join(out, RUN_LOG), overwrite=True, restart=fresh, settings=settings)

    def write_run(self, run: Dict[str, Any]) -> None:
        """Append one finished run."""
        self.write([run], done={"run": list(run_key(run))})


def run_key(run: Dict[str, Any]) -> Tuple[str, str, str, int]:
    """``(setup, policy, objective, seed)``: what one run is."""
    return run["setup"], run["policy"], run["objective"], int(run["seed"])


def from_log(record: Dict[str, Any]) -> Dict[str, Any]:
    """A run as :func:`run_one` returned it, from its JSON line (JSON keys are strings: the
    states of ``action_probs`` are numbers again)."""
    return dict(record, **{key: {int(state): probs for state, probs in record[key].items()}
                           for key in ("action_probs", "initial_action_probs") if key in record})


__all__ = ["FrozenLakeError", "RUN_LOG", "RunLog", "from_log", "run_key"]
