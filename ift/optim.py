"""Learning-rate schedules usable from YAML as ``model.lr_scheduler``."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosineLR(LambdaLR):
    """Linear warm-up from 0 to the optimizer's lr, then a cosine decay to ``min_lr_ratio * lr``
    (the IFT paper's schedule: cosine with warm-up ratio 0.1). Step it every optimizer step
    (``lr_scheduler_interval: step``, the default).

    Args:
        optimizer: the optimizer (given by the module).
        warmup_ratio: share of the total steps spent warming up (used when ``warmup_steps`` is None).
        warmup_steps: warm-up length in optimizer steps (overrides ``warmup_ratio``).
        total_steps: length of training in optimizer steps; None takes it from the Trainer
            (``trainer.estimated_stepping_batches``) when :class:`~ift.modules.FineTuneModule`
            configures the optimizer. Set it explicitly for PPO, which makes several
            optimizer steps per batch.
        min_lr_ratio: final lr as a fraction of the peak lr.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_ratio: float = 0.1,
        warmup_steps: Optional[int] = None,
        total_steps: Optional[int] = None,
        min_lr_ratio: float = 0.0,
    ):
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.warmup_ratio = warmup_ratio
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        self._total_given = total_steps is not None
        super().__init__(optimizer, self.factor)

    def set_total_steps(self, total_steps: int) -> None:
        """Called by the module with the Trainer's estimate; an explicit ``total_steps`` wins."""
        if not self._total_given and total_steps > 0 and math.isfinite(total_steps):
            self.total_steps = int(total_steps)
            # Re-apply the factor of the current step now that the length is known.
            for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base_lr * self.factor(self.last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
        total = self.total_steps
        if total is None:
            # Length unknown yet: warm up over ``warmup_steps`` if given, else hold the lr.
            return (step + 1) / (self.warmup_steps + 1) if self.warmup_steps and step < self.warmup_steps else 1.0
        warmup = self.warmup_steps if self.warmup_steps is not None else int(round(self.warmup_ratio * total))
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
