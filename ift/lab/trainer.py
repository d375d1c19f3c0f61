"""The Trainer every experiment run uses: CPU, a fixed number of optimizer steps, and nothing
written or printed (the experiments measure and report for themselves)."""

from __future__ import annotations

from typing import Any, Sequence

import pytorch_lightning as pl


def quiet_trainer(max_steps: int, callbacks: Sequence[Any] = ()) -> pl.Trainer:
    """A CPU trainer for ``max_steps`` optimizer steps: no logger, checkpoint, progress bar,
    model summary or validation. The runs' modules are built with ``checkpoint_on_interrupt=False``:
    parallel workers would all write one ``interrupted.ckpt`` into the working directory."""
    return pl.Trainer(max_steps=max_steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0, callbacks=list(callbacks))
