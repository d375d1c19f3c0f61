"""The base class every objective follows; the module calls these hooks and nothing else.

An objective knows the maths; :class:`~ift.modules.FineTuneModule` knows Lightning. Every
hook receives a :class:`~ift.objectives.contract.StepContext` and the training and
validation hooks return a :class:`~ift.objectives.contract.StepResult`. Objectives never
log or touch the Trainer.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from ift.objectives.contract import Capabilities, Metrics, StepContext, StepResult

__all__ = ["Objective", "Metrics"]


class Objective:
    """Base class of SFT, IFT, PPO, DPO, ORPO and the recipes that combine them.

    Subclasses that learn from a fixed batch implement :meth:`loss`. Subclasses that
    generate their own data (:class:`~ift.objectives.rollout_objective.RolloutObjective`,
    e.g. PPO) override :meth:`training_step`, declare ``manual_optimization`` in their
    :attr:`capabilities`, call ``context.optimizer_step(loss)`` for every update they make
    and return ``StepResult(..., stepped=True)``.
    """

    #: What this objective needs from the module (see :class:`Capabilities`); recipes
    #: compute theirs from their parts.
    capabilities: Capabilities = Capabilities()
    #: What the objective trains on, one of ``ift.core.constants.TRAINS_ON_*`` (prompts with
    #: responses, preference pairs, prompts alone): the data module stops before the first
    #: step when its data gives something else. None: not checked (recipes: their parts).
    trains_on: Optional[str] = None
    #: Whether the policy's dropout is turned off by default (``FineTuneModule(disable_dropout=None)``):
    #: True for objectives whose forward passes over the same tokens must agree (IFT's two
    #: passes, DPO/ORPO's pairs, the RL objectives' ratios); recipes: any of their parts.
    disables_dropout: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The module's hyper-parameters hold the objective, so checkpoints contain it.
        # torch.load defaults to weights_only=True (torch >= 2.6): allow-list every
        # objective class so load_from_checkpoint and `fit(ckpt_path=...)` work.
        super().__init_subclass__(**kwargs)
        torch.serialization.add_safe_globals([cls])

    def attach(self, context: StepContext) -> None:
        """Called once when the module is built; may register trainable parts (value function)."""

    def begin(self, context: StepContext) -> None:
        """Called when this objective starts training (fit start or a recipe stage switch)."""

    def set_step(self, step: int) -> None:
        """Told the optimizer step about to be taken (schedules such as IFT's lambda)."""

    def loss(self, policy: torch.nn.Module, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics]:
        """Loss (with gradient) and detached metrics for one batch."""
        raise NotImplementedError(f"{type(self).__name__} does not define a batch loss")

    def training_step(self, context: StepContext, batch: Dict[str, Any]) -> StepResult:
        """One training step; by default the batch loss on the policy (the module steps)."""
        loss, metrics = self.loss(context.policy, batch)
        return StepResult(loss, metrics)

    def validation_loss(self, context: StepContext, batch: Dict[str, Any]) -> Optional[StepResult]:
        """Loss on a held-out batch, or None when the objective has no batch loss (PPO) or
        the batch has no supervised responses (prompt-only data)."""
        if "labels" not in batch:
            return None
        loss, metrics = self.loss(context.policy, batch)
        return StepResult(loss, metrics)

    def state_dict(self) -> Dict[str, Any]:
        """What must survive a checkpoint (counters, controllers, stage)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
