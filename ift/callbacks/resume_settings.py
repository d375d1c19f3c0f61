"""Optimizer settings changed on resume take effect (Lightning would restore the old ones).

Resuming restores the optimizer's state dict, ``param_groups`` included, so a run resumed
with ``--model.optimizer.init_args.lr 1e-4`` would go on with the checkpoint's learning
rate. :class:`OptimizerSettingsOnResume` (added by ``ift fit --ckpt_path`` for the settings
whose value differs from the checkpoint's run config) puts the configured values back
into every parameter group once the checkpoint is loaded, keeping the moments and step
counts. For ``lr`` under a scheduler, the schedule's position is kept: the new base
learning rate replaces the old one (``initial_lr`` and the scheduler's ``base_lrs``) and
the current one is scaled by the same factor.

An argument that the optimizer does not keep in its parameter groups (a third-party
optimizer's own attribute) cannot be put back this way: the fit stops before its first
step, naming it, rather than go on with whatever the checkpoint's state implies.
"""

from __future__ import annotations

from typing import Dict, Iterable, List

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.rank_zero import rank_zero_info


class OptimizerSettingsOnResume(Callback):
    """Re-apply the configured values of the optimizer arguments ``keys`` (e.g. ``["lr"]``)
    after the checkpoint of a resumed fit has restored the optimizer's own.

    Args:
        keys: optimizer ``init_args`` names whose configured value must win (those that are
            parameter-group settings: ``lr``, ``weight_decay``, ``betas``, ``momentum``, ...).
    """

    def __init__(self, keys: Iterable[str]):
        self.keys = list(keys)
        self._configured: List[List[Dict[str, object]]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # configure_optimizers has run, the checkpoint's optimizer state is not loaded yet.
        self._configured = [
            [{key: group[key] for key in self.keys if key in group} for group in optimizer.param_groups]
            for optimizer in trainer.optimizers
        ]
        kept = {key for groups in self._configured for values in groups for key in values}
        lost = [key for key in self.keys if key not in kept]
        if lost:
            names = ", ".join(f"model.optimizer.init_args.{key}" for key in lost)
            kind = ", ".join(sorted({type(optimizer).__name__ for optimizer in trainer.optimizers}))
            raise SystemExit(
                f"ift: error: {names} changed on resume, but {kind} does not keep it in its parameter groups, so "
                "the optimizer state loaded from the checkpoint cannot be given the new value. Resume with the "
                "checkpoint's value, or start without --ckpt_path")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedulers = {id(config.scheduler.optimizer): config.scheduler for config in trainer.lr_scheduler_configs
                      if hasattr(config.scheduler, "optimizer")}
        applied = set()
        for optimizer, groups in zip(trainer.optimizers, self._configured):
            scheduler = schedulers.get(id(optimizer))
            for index, (group, values) in enumerate(zip(optimizer.param_groups, groups)):
                for key, value in values.items():
                    if key == "lr" and "initial_lr" in group and group["initial_lr"]:
                        factor = group["lr"] / group["initial_lr"]  # where the schedule stands
                        group["initial_lr"] = value
                        group["lr"] = value * factor
                        if scheduler is not None and index < len(getattr(scheduler, "base_lrs", [])):
                            scheduler.base_lrs[index] = value
                    else:
                        group[key] = value
                    applied.add(key)
        if applied:
            rank_zero_info(f"ift: resumed with the configured optimizer {', '.join(sorted(applied))} "
                           "(not the checkpoint's)")
