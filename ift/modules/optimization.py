"""Optimizer steps of :class:`~ift.modules.FineTuneModule`: automatic and manual, each
skipped (weights and optimizer state untouched) when the loss or gradient is nan/inf, and
gradient clipping by ``max_grad_norm`` for every objective, right under FSDP.

**Clipping.** ``model.max_grad_norm`` means one thing for every objective: before each
optimizer step, after gradient accumulation (and after an fp16 GradScaler has unscaled the
gradients), the gradients' global norm is clipped to it. It is done in Lightning's
``on_before_optimizer_step`` hook, which both optimization modes reach once per optimizer
step (automatic: inside the step's closure; manual: inside ``optimizer.step()``) and which a
skipped step (nan/inf) never reaches. The norm before clipping is logged as
``train/grad_norm`` for every objective, with or without clipping (the mean over the batch's
optimizer steps when an objective takes several, as PPO does). ``trainer.gradient_clip_val``
is Lightning's own setting for the same gradients: with ``max_grad_norm`` set it is refused
unless it asks for the same clipping (by norm, the same value); set ``max_grad_norm: null``
to clip with it instead (by value, for instance).

A mixin, so that the module file keeps to the objective/Lightning wiring; it reads the
module's ``nonfinite`` guard, ``_skip_pending`` mark, ``_grad_norms``, ``_checked_norm``, ``max_grad_norm`` and
``lr_scheduler_interval``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Union

import torch
from pytorch_lightning.utilities import rank_zero_info

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
        """Backward, step (clipped in :meth:`on_before_optimizer_step`) and schedule: one update
        under manual optimization.

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
        optimizer.step()  # clips in on_before_optimizer_step, after a GradScaler has unscaled
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
        # The same gradients reach on_before_optimizer_step next: clipping reuses this norm
        # (one norm fewer per step: about 4% of a tiny Frozen Lake run).
        self._checked_norm = norm

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # batch_size given: else Lightning walks the whole batch to find it, on every step.
        self.log("train/skipped_steps", float(self.nonfinite.skipped_steps), on_step=True, on_epoch=False, batch_size=1)
        if self._grad_norms:
            # One value per optimizer step; PPO's several steps of one batch are averaged.
            norm = torch.stack(self._grad_norms).float().mean()
            self._grad_norms = []
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)

    # ------------------------------------------------------------------ clipping
    def check_clipping_settings(self) -> None:
        """Refuse ``trainer.gradient_clip_val`` beside ``max_grad_norm`` unless both ask for the
        same clipping (by norm, at the same value). Called when a fit starts."""
        clip_val = self.trainer.gradient_clip_val
        if not self.max_grad_norm or not clip_val:
            return
        algorithm = self.trainer.gradient_clip_algorithm
        algorithm = getattr(algorithm, "value", algorithm) or "norm"
        if algorithm == "norm" and float(clip_val) == float(self.max_grad_norm):
            rank_zero_info(f"ift: trainer.gradient_clip_val {clip_val} and model.max_grad_norm {self.max_grad_norm} "
                           "are the same clipping by norm: applied once")
            return
        raise ValueError(
            f"model.max_grad_norm is {self.max_grad_norm} (clip the gradient norm, every objective; 1.0 by "
            f"default) and trainer.gradient_clip_val is {clip_val} (gradient_clip_algorithm {algorithm}): two "
            "clippings of the same gradients. Set one: --model.max_grad_norm "
            f"{clip_val if algorithm == 'norm' else 'VALUE'} without trainer.gradient_clip_val, or "
            "--model.max_grad_norm null to clip with trainer.gradient_clip_val and gradient_clip_algorithm"
        )

    def on_before_optimizer_step(self, optimizer) -> None:
        """Lightning's hook, once per optimizer step in both optimization modes, after the
        step's gradients are complete (accumulated, unscaled) and before the step: clip to
        ``max_grad_norm`` and keep the norm before clipping for ``train/grad_norm``."""
        checked, self._checked_norm = self._checked_norm, None
        if checked is not None and self._sharded_root() is None:
            norm = checked  # the norm of these very gradients, from the nan/inf check
            if self.max_grad_norm:
                parameters = [p for p in self._stepped_parameters(optimizer) if p.grad is not None]
                torch.nn.utils.clip_grads_with_norm_(parameters, self.max_grad_norm, norm)
        elif self.max_grad_norm:
            norm = self.clip_gradient_norm(optimizer, self.max_grad_norm)
        else:
            norm = self.gradient_norm(optimizer)
        if norm is not None and math.isfinite(float(norm)):
            # Not finite: an fp16 GradScaler skips this step itself (and lowers its scale).
            self._grad_norms.append(norm.detach())

    def gradient_norm(self, optimizer) -> Optional[torch.Tensor]:
        """The global 2-norm of the gradients ``optimizer`` steps (under DDP the gradients are
        already averaged over processes, so this process's norm is the global one; under FSDP
        the sharded root computes it, clipping nothing). None when no parameter has a gradient."""
        if self._sharded_root() is not None:
            return self.clip_gradient_norm(optimizer, math.inf)
        grads = [p.grad for p in self._stepped_parameters(optimizer) if p.grad is not None]
        if not grads:
            return None
        return torch.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False)

    def clip_gradient_norm(self, optimizer, max_norm: float) -> Optional[torch.Tensor]:
        """Clip the gradients' global norm to ``max_norm``, in the way the strategy requires;
        returns the norm before clipping (None when no parameter has a gradient).

        Under FSDP each process holds a shard of every gradient: only the sharded root's
        ``clip_grad_norm_`` computes the true global norm (Lightning's precision plugin
        refuses norm clipping there).
        """
        root = self._sharded_root()
        if root is not None:
            return root.clip_grad_norm_(max_norm)
        parameters = [p for p in self._stepped_parameters(optimizer) if p.grad is not None]
        if not parameters:
            return None
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm, error_if_nonfinite=False)

    def _sharded_root(self):
        if self._trainer is not None and is_sharded(self.trainer.strategy) and hasattr(self.trainer.model, "clip_grad_norm_"):
            return self.trainer.model
        return None

    def _stepped_parameters(self, optimizer):
        """The parameters ``optimizer`` steps, as the precision plugin sees them."""
        if self._trainer is not None:
            return list(self.trainer.precision_plugin.main_params(optimizer))
        return [p for group in optimizer.param_groups for p in group["params"]]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's ``trainer.gradient_clip_val``, which runs right after
        :meth:`on_before_optimizer_step`: nothing more when ``max_grad_norm`` clipped already
        (:meth:`check_clipping_settings` allows only the same clipping beside it); otherwise
        as usual, by norm under FSDP through :meth:`clip_gradient_norm`."""
        if self.max_grad_norm:
            return
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and is_sharded(self.trainer.strategy):
            self.clip_gradient_norm(optimizer, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


class _SkipOptimizerStep(Exception):
    """Raised inside the optimizer closure to leave ``optimizer.step`` before it updates anything."""
