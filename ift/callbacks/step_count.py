"""One step count under manual optimization: the logs use ``global_step``, as checkpoint names do.

Lightning counts two different things as a "step" when a module optimizes manually (PPO,
recipes containing PPO): ``trainer.global_step`` counts every ``optimizer.step()`` call
(PPO makes ``ppo_epochs`` x mini-batches of them per training batch) and is what
``max_steps``, ``ModelCheckpoint`` file names (``step=2530``) and ``every_n_train_steps``
use; the loggers' x-axis (``metrics.csv``'s ``step`` column, TensorBoard, W&B) is instead
the number of training batches (``_batches_that_stepped``), and the progress bar counts the
batches of the epoch. A run stopped at ``step=2530`` then shows 1439 everywhere else.

This project's step is the optimizer update (Lightning's ``global_step``): it is the
budget ``max_steps`` gives every objective alike. :class:`LogGlobalStep` makes the loggers
and the progress bar use it too, by logging ``step``, which Lightning takes as the x-axis
of that row: every training row carries the number of optimizer updates done once its
batch is done (the number a checkpoint written after it has in its name), every
validation row the number at which validation ran. The progress bar shows it as
``step=...`` beside its batch counter. With automatic optimization there is one update
per batch (per accumulation window) and Lightning's own rows already follow it, so
nothing is added there.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class LogGlobalStep(Callback):
    """Under manual optimization, log ``step = trainer.global_step`` with every training batch
    and validation, so that ``metrics.csv``, the other loggers and the progress bar count
    optimizer updates, as checkpoint names and ``max_steps`` do (see the module docstring).

    :class:`~ift.modules.FineTuneModule` adds it to every fit.
    """

    @staticmethod
    def _manual(pl_module: pl.LightningModule) -> bool:
        return not pl_module.automatic_optimization

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._manual(pl_module):
            self._log_step(trainer, pl_module, on_step=True, prog_bar=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._manual(pl_module):
            self._log_step(trainer, pl_module, on_step=False)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._manual(pl_module) and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._log_step(trainer, pl_module, on_step=False)

    @staticmethod
    def _log_step(trainer: pl.Trainer, pl_module: pl.LightningModule, on_step: bool, prog_bar: bool = False) -> None:
        # Lightning adds the ``epoch`` column only to rows without a logged ``step``: log both.
        pl_module.log("step", float(trainer.global_step), on_step=on_step, on_epoch=not on_step, prog_bar=prog_bar,
                      batch_size=1)
        pl_module.log("epoch", float(trainer.current_epoch), on_step=on_step, on_epoch=not on_step, batch_size=1)
