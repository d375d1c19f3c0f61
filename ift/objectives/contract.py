"""The one contract between an objective and the module that trains it.

An objective knows the maths; the module (:class:`~ift.modules.FineTuneModule`) knows
Lightning. They meet only here:

- the module hands every hook a :class:`StepContext`: the policy, the tokenizer, the frozen
  reference, the trainable parts an objective registered (a value function), one optimizer
  step, learning-rate control, step counters, progress reporting and stage-switch news;
- a training or validation hook answers with a :class:`StepResult`: the loss, detached
  metrics, and whether the objective already took its optimizer steps;
- each objective declares its :class:`Capabilities` in one place, and recipes combine them.

No objective sees the Trainer or the module's private state; the module names no
objective class. See docs/architecture.md.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterable, Optional, Protocol, Sequence, Union

import torch

Metrics = Dict[str, torch.Tensor]


@dataclass(frozen=True)
class Capabilities:
    """What an objective needs from the module, declared once per objective class.

    Args:
        manual_optimization: the objective takes its own optimizer steps through
            :meth:`StepContext.optimizer_step` (PPO): the module runs Lightning's manual
            optimization for the whole fit.
        reads_reference: the objective reads the frozen reference model (PPO, DPO): a recipe
            switching into it refreshes the reference to the policy as it stands then.
        adds_trainable_parts: the objective registers trainable parts of its own (PPO's value
            function) through :meth:`StepContext.add_trainable_part`.
        idle_trainable_parts: some training steps leave registered trainable parts without a
            gradient (a recipe whose SFT stage does not use the value function): DDP must
            then look for unused parameters.
    """

    manual_optimization: bool = False
    reads_reference: bool = False
    adds_trainable_parts: bool = False
    idle_trainable_parts: bool = False

    @staticmethod
    def of_sequence(parts: Iterable["Capabilities"]) -> "Capabilities":
        """Capabilities of objectives trained one after another in one fit (:class:`Sequential`).

        A part that adds trainable parts leaves them idle while another part trains.
        """
        parts = list(parts)
        adds = [part.adds_trainable_parts for part in parts]
        return Capabilities(
            manual_optimization=any(part.manual_optimization for part in parts),
            reads_reference=any(part.reads_reference for part in parts),
            adds_trainable_parts=any(adds),
            idle_trainable_parts=any(part.idle_trainable_parts for part in parts) or (any(adds) and not all(adds)),
        )

    @staticmethod
    def of_sum(parts: Iterable["Capabilities"]) -> "Capabilities":
        """Capabilities of objectives whose losses are added in one optimizer step (:class:`Mix`).

        Every part contributes to every step, so a registered part is idle only when the
        part that registered it leaves it idle; the sum takes one step per batch.
        """
        parts = list(parts)
        return Capabilities(
            manual_optimization=False,
            reads_reference=any(part.reads_reference for part in parts),
            adds_trainable_parts=any(part.adds_trainable_parts for part in parts),
            idle_trainable_parts=any(part.idle_trainable_parts for part in parts),
        )


@dataclass
class StepResult:
    """What an objective's training or validation hook returns.

    Args:
        loss: the loss. With ``stepped=False`` it carries the gradient and the module takes
            the optimizer step; with ``stepped=True`` it is detached, for logging (nan when
            every update of the step was skipped).
        metrics: detached scalars to log; a key with a ``/`` is logged as given, any other
            under the stage (``train/<key>``).
        stepped: the objective already took its optimizer step(s) for this batch.
    """

    loss: torch.Tensor
    metrics: Metrics = field(default_factory=dict)
    stepped: bool = False


class ProgressBar(Protocol):
    """What :meth:`StepContext.progress` yields: a bar an objective advances and annotates."""

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` items."""

    def set_phase(self, phase: str) -> None:
        """Name what is happening now (``generation``, ``scoring``)."""

    def set_postfix(self, **values: Any) -> None:
        """Show a few values beside the bar."""


class StepContext(abc.ABC):
    """Everything an objective may use from the module that trains it.

    The module builds one for itself (:attr:`FineTuneModule.step_context`); outside a
    Trainer the counters read 0 and :meth:`progress` shows nothing.
    """

    # ---------------------------------------------------------------- models
    @property
    @abc.abstractmethod
    def policy(self) -> torch.nn.Module:
        """The causal LM being trained."""

    @property
    @abc.abstractmethod
    def tokenizer(self) -> Any:
        """The policy's tokenizer (Hugging Face API)."""

    @abc.abstractmethod
    def reference_model(self) -> ContextManager[torch.nn.Module]:
        """Context yielding the frozen reference to call under ``torch.no_grad()`` (created
        as a copy of the policy if missing; with LoRA, the policy with adapters disabled)."""

    @abc.abstractmethod
    def ensure_reference(self, refresh: bool = False) -> None:
        """Create the frozen reference if missing; ``refresh=True`` copies the current policy
        into it (a stage that reads the reference takes the policy as it stands)."""

    @abc.abstractmethod
    def trainable_part(self, name: str) -> Optional[torch.nn.Module]:
        """The trainable part registered under ``name`` (e.g. ``value_head``), or None."""

    @abc.abstractmethod
    def add_trainable_part(self, name: str, part: torch.nn.Module) -> torch.nn.Module:
        """Register ``part`` with the module (optimized, checkpointed, moved with it); a part
        already registered under ``name`` (restored from a checkpoint) is kept and returned."""

    # ---------------------------------------------------------------- optimization
    @abc.abstractmethod
    def optimizer_step(self, loss: Union[torch.Tensor, Sequence[Callable[[], torch.Tensor]]]) -> bool:
        """Backward, clip, step and schedule one update (manual optimization). ``loss`` is the
        step's loss, or callables computing the shares of it of the step's micro-batches
        (gradient accumulation: called and backpropagated one at a time, their sum is the
        step's loss). False when the step was skipped because a loss or the gradient was
        nan/inf on some process."""

    @abc.abstractmethod
    def set_learning_rate(self, lr: float) -> None:
        """Set ``lr`` on every parameter group of the optimizer(s)."""

    # ---------------------------------------------------------------- counters and news
    @property
    @abc.abstractmethod
    def global_step(self) -> int:
        """Optimizer steps taken so far in this fit (Lightning's ``global_step``)."""

    @property
    @abc.abstractmethod
    def current_epoch(self) -> int:
        """The epoch being trained (0 outside a Trainer)."""

    @abc.abstractmethod
    def batches_per_epoch(self) -> Optional[int]:
        """Training batches in one epoch; None for a loader without a length. Raises outside
        a Trainer."""

    @abc.abstractmethod
    def progress(self, total: Optional[int], desc: str) -> ContextManager[ProgressBar]:
        """A progress bar for a long step (a rollout); silent where nothing is displayed."""

    @abc.abstractmethod
    def stage_switched(self, stage_name: str) -> None:
        """Tell whoever listens (callbacks) that a recipe entered the stage ``stage_name``."""
