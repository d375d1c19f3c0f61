"""Skip optimizer steps whose loss or gradient is not finite, count them, and stop after too many.

:class:`~ift.modules.FineTuneModule` owns one :class:`NonFiniteGuard`. Before an
optimizer step it asks :meth:`NonFiniteGuard.is_finite` about the loss (and, without a
GradScaler, the gradient norm); the answer is reduced over every process (a step is
skipped everywhere as soon as one rank saw a nan/inf), so all ranks take the same branch
and none waits in a collective that the others left. A skipped step leaves the weights
and the optimizer state exactly as they were (no ``optimizer.step()`` at all: AdamW with
zero gradients would still move the weights through its momentum and weight decay).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Iterable, Optional

import torch

from ift.core.distributed import any_process


class NonFiniteLossError(RuntimeError):
    """Training stopped: too many optimizer steps in a row had a nan/inf loss or gradient."""


class NonFiniteLossWarning(RuntimeWarning):
    """An optimizer step was skipped because its loss or gradient was nan/inf."""


ADVICE = (
    "lower the learning rate, train in bf16 instead of fp16 (--trainer.precision bf16-mixed), "
    "clip gradients harder (--model.max_grad_norm, 1.0 by default, every objective), "
    "or check the data (empty or garbled examples, batches whose labels are all masked)"
)


class NonFiniteGuard:
    """Counts skipped optimizer steps and decides when to give up.

    Args:
        max_consecutive: stop with :class:`NonFiniteLossError` after this many skipped steps
            in a row; 0 or None never stops.
    """

    def __init__(self, max_consecutive: Optional[int] = 10):
        if max_consecutive is not None and max_consecutive < 0:
            raise ValueError(f"max_consecutive_skipped_steps must be >= 0 or None, got {max_consecutive}")
        self.max_consecutive = max_consecutive or 0
        self.skipped_steps = 0  # cumulative, checkpointed
        self.consecutive = 0  # skipped steps since the last step taken, checkpointed
        self.first_of_streak: Optional[int] = None  # global step where the current streak began

    # ------------------------------------------------------------------ checks
    @staticmethod
    def is_finite(value: Optional[torch.Tensor], device: Optional[torch.device] = None) -> bool:
        """Whether ``value`` is finite on every process (None counts as finite). Under DDP this
        is a collective: every rank must call it, on the same device type."""
        local_bad = value is not None and not bool(torch.isfinite(value.detach()).all())
        if value is not None:
            device = value.device
        return not any_process(local_bad, device=device)

    @staticmethod
    def gradient_norm(parameters: Iterable[torch.Tensor]) -> Optional[torch.Tensor]:
        """The 2-norm of all gradients (this process's), or None when there are none."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return None
        return torch.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False)

    # ------------------------------------------------------------------ bookkeeping
    def record_step(self) -> None:
        """An optimizer step was taken: the streak of skipped steps ends."""
        self.consecutive = 0
        self.first_of_streak = None

    def record_skip(self, step: int, what: str, value: Any, where: str = "") -> None:
        """Count a skipped step, warn (rank zero), and raise :class:`NonFiniteLossError` once
        ``max_consecutive`` steps in a row were skipped.

        ``what`` names the quantity (``loss``, ``gradient norm``), ``value`` its value.
        """
        self.skipped_steps += 1
        self.consecutive += 1
        if self.first_of_streak is None:
            self.first_of_streak = step
        shown = _shown(value)
        limit = (
            f"training stops after {self.max_consecutive} in a row"
            if self.max_consecutive
            else "max_consecutive_skipped_steps=0: training never stops for this"
        )
        if self.max_consecutive and self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"Training stopped: the {what} was not finite ({shown}) for {self.consecutive} optimizer steps in a "
                f"row (global steps {self.first_of_streak} to {step}{where}); each of them was skipped, so the "
                f"weights and the optimizer state are those from before global step {self.first_of_streak}. "
                f"To fix it: {ADVICE}. max_consecutive_skipped_steps={self.max_consecutive} sets how many "
                "skipped steps in a row stop training (0 never stops)."
            )
        _rank_zero_warn(
            f"Non-finite {what} ({shown}) at global step {step}{where}: the optimizer step was skipped, the "
            f"weights and the optimizer state are unchanged ({self.skipped_steps} skipped in total, "
            f"{self.consecutive} in a row; {limit}). If it happens again: {ADVICE}."
        )

    def state_dict(self) -> Dict[str, Any]:
        return {
            "skipped_steps": self.skipped_steps,
            "consecutive_skipped_steps": self.consecutive,
            "first_of_streak": self.first_of_streak,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive = int(state.get("consecutive_skipped_steps", 0))
        first = state.get("first_of_streak")
        self.first_of_streak = None if first is None else int(first)


def zero_loss(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """A loss equal to 0 whose gradient is exactly 0 for every parameter.

    Backward on it in place of a nan loss keeps every process's collectives in step (DDP
    all-reduces the zero gradients as usual) while nothing reaches the weights; the module
    then drops the gradients and does not step.
    """
    sums = [p.sum().float() * 0.0 for p in parameters if p.requires_grad]
    if not sums:
        return torch.zeros(())
    return torch.stack(sums).sum()


def _shown(value: Any) -> str:
    """``nan``, ``inf``, or the local value with a note when only another process saw a nan/inf."""
    if isinstance(value, torch.Tensor):
        value = value.detach().float()
        if value.numel() != 1:
            bad = int((~torch.isfinite(value)).sum())
            return f"{bad} non-finite values" if bad else "finite here, not finite on another process"
        value = value.item()
    if value is None:
        return "not finite on another process"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g} here, not finite on another process"
    return str(value)


def _rank_zero_warn(message: str) -> None:
    from ift.core.distributed import process_rank

    if process_rank() == 0:
        warnings.warn(message, NonFiniteLossWarning, stacklevel=3)
