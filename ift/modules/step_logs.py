"""Each training step logs only what that step measured.

Lightning keeps the last value of every metric logged ``on_step`` and writes it again at
every later step, whether or not the step logged it anew. A step that was skipped (its
loss or gradient was nan/inf) would then appear in ``metrics.csv`` with the previous
step's finite loss. :func:`forget_step_values`, called at the start of every training
batch, drops those per-step values (the epoch aggregates are untouched), so a step that
logs nothing leaves an empty cell.
"""

from __future__ import annotations

import pytorch_lightning as pl


def forget_step_values(trainer: pl.Trainer) -> None:
    """Forget the per-step values of the training metrics logged so far (epoch means stay).

    Uses Lightning's result collection (``trainer._results``); a Lightning without it
    leaves everything as it was."""
    results = getattr(trainer, "_results", None)
    if results is None or not getattr(results, "training", False):
        return
    for _, metric in results.valid_items():
        if getattr(metric.meta, "on_step", False):
            metric._forward_cache = None
