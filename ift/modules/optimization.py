"""Optimizer steps of :class:`~ift.modules.FineTuneModule`: automatic and manual, each
skipped (weights and optimizer state untouched) when the loss or gradient is nan/inf, and
gradient clipping that is right under FSDP.

A mixin, so that the module file keeps to the objective/Lightning wiring; it reads the
module's ``nonfinite`` guard, ``_skip_pending`` mark, ``max_grad_norm`` and
``lr_scheduler_interval``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch

from ift.core.distributed import is_sharded
from ift.modules.nonfinite import zero_loss


class OptimizerSteps:
    """The optimizer-step half of :class:`~ift.modules.FineTuneModule` (see the module docstring)."""

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Lightning's step (automatic optimization), skipped when the loss or gradient is nan/inf.

        The closure (training step + backward) runs inside ``optimizer.step``; when it reports
        a non-finite loss or gradient it raises before the optimizer touches anything, and the
        gradients are dropped: weights and optimizer state stay exactly as they were.
        ``global_step`` and step-interval schedulers still advance (Lightning counts the attempt).
        """
        if optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

        def closure():
            result = optimizer_closure()
            if self._skip_pending is None:
                self._check_gradients()
            if self._skip_pending is not None:
                raise _SkipOptimizerStep()
            return result

        try:
            optimizer.step(closure=closure)
        except _SkipOptimizerStep:
            self._skip_step(optimizer, f", epoch {epoch}, batch {batch_idx}")
            return
        finally:
            self._skip_pending = None
        self.nonfinite.record_step()

    def optimizer_step_manually(self, loss: Union[torch.Tensor, Sequence[Callable[[], torch.Tensor]]]) -> bool:
        """Backward, clip, step and schedule: one update under manual optimization.

        ``loss`` is the step's loss, or the parts of one step accumulated over micro-batches:
        callables, each computing one micro-batch's share of the loss (their sum is the
        step's loss), called one at a time so that only one micro-batch's graph is alive.

        Returns False when the step was skipped because a loss (or, without an fp16
        GradScaler, the gradient norm) was nan/inf on some process: the gradients are then
        dropped and neither the optimizer nor the scheduler steps (``global_step`` does not
        advance either).
        """
        parts = [lambda: loss] if isinstance(loss, torch.Tensor) else list(loss)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        for part in parts:
            value = part()
            if self._skip_pending is None and not self.nonfinite.is_finite(value):
                self._skip_pending = ("loss", value.detach())
            if self._skip_pending is not None:
                self.manual_backward(zero_loss(self.trainable_parameters()))  # keeps DDP's collectives in step
            else:
                self.manual_backward(value)
        if self._skip_pending is None:
            self._check_gradients()
        if self._skip_pending is not None:
            self._skip_step(optimizer, f", epoch {self.current_epoch}")
            return False
        if self.max_grad_norm:
            self.clip_gradient_norm(optimizer, self.max_grad_norm)
        optimizer.step()
        self.nonfinite.record_step()
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.lr_scheduler_interval == "step":
            scheduler.step()
        return True

    def _skip_step(self, optimizer, where: str) -> None:
        """Drop the gradients of the step marked in ``_skip_pending`` and count the skip
        (which raises once too many steps in a row were skipped)."""
        optimizer.zero_grad()
        what, value = self._skip_pending
        self._skip_pending = None
        self.nonfinite.record_skip(self.global_step, what, value, where)

    def _check_gradients(self) -> None:
        """Mark the step for skipping when the gradient norm is nan/inf on some process.

        Not with an fp16 GradScaler: it finds inf gradients itself, skips those steps and
        lowers its scale (that is how it works, not a fault)."""
        if self._trainer is not None and getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return
        norm = self.nonfinite.gradient_norm(self.trainable_parameters())
        if not self.nonfinite.is_finite(norm, device=self.device):
            self._skip_pending = ("gradient norm", norm)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.log("train/skipped_steps", float(self.nonfinite.skipped_steps), on_step=True, on_epoch=False)

    def clip_gradient_norm(self, optimizer, max_norm: float) -> None:
        """Clip the gradients' global norm to ``max_norm``, in the way the strategy requires.

        Under FSDP each process holds a shard of every gradient: only the sharded root's
        ``clip_grad_norm_`` computes the true global norm (Lightning's precision plugin
        refuses norm clipping there).
        """
        if self._trainer is not None and is_sharded(self.trainer.strategy) and hasattr(self.trainer.model, "clip_grad_norm_"):
            self.trainer.model.clip_grad_norm_(max_norm)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """``--trainer.gradient_clip_val`` as usual; by norm under FSDP goes through
        :meth:`clip_gradient_norm`."""
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and is_sharded(self.trainer.strategy):
            self.clip_gradient_norm(optimizer, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


class _SkipOptimizerStep(Exception):
    """Raised inside the optimizer closure to leave ``optimizer.step`` before it updates anything."""
