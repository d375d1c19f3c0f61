"""The contract every objective follows; the module calls these hooks and nothing else.

An objective knows the maths; :class:`~ift.modules.FineTuneModule` knows Lightning.
Objectives never log or touch the Trainer: they return ``(loss, metrics)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Tuple

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ift.modules.finetune import FineTuneModule

Metrics = Dict[str, torch.Tensor]


class Objective:
    """Base class of SFT, IFT, PPO, DPO, ORPO and the recipes that combine them.

    Subclasses that learn from a fixed batch implement :meth:`loss`. Subclasses that
    generate their own data (PPO) override :meth:`training_step` and set
    ``optimizes_itself = True``: they call ``module.optimizer_step_manually(loss)``
    for every update they make, and the module switches to Lightning's manual
    optimization for them.
    """

    #: True when :meth:`training_step` performs its own optimizer steps (PPO).
    optimizes_itself: bool = False
    #: True when the objective reads the frozen reference (PPO, DPO): a recipe switching
    #: into it refreshes the reference to the policy as it stands at the switch.
    needs_reference: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The module's hyper-parameters hold the objective, so checkpoints contain it.
        # torch.load defaults to weights_only=True (torch >= 2.6): allow-list every
        # objective class so load_from_checkpoint and `fit(ckpt_path=...)` work.
        super().__init_subclass__(**kwargs)
        torch.serialization.add_safe_globals([cls])

    def attach(self, module: "FineTuneModule") -> None:
        """Called once when the module is built; may register trainable parts (value head)."""

    def begin(self, module: "FineTuneModule") -> None:
        """Called when this objective starts training (fit start or a recipe stage switch)."""

    def set_step(self, step: int) -> None:
        """Told the optimizer step about to be taken (schedules such as IFT's lambda)."""

    def needs_manual_optimization(self) -> bool:
        """Whether the module must run Lightning's manual optimization for this objective."""
        return self.optimizes_itself

    def loss(self, policy: torch.nn.Module, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics]:
        """Loss (with gradient) and detached metrics for one batch."""
        raise NotImplementedError(f"{type(self).__name__} does not define a batch loss")

    def training_step(self, module: "FineTuneModule", batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics]:
        """One training step; by default the batch loss on the module's policy."""
        return self.loss(module.policy, batch)

    def validation_loss(self, module: "FineTuneModule", batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics] | None:
        """Loss on a held-out batch, or None when the objective has no batch loss (PPO) or
        the batch has no supervised responses (prompt-only data)."""
        if "labels" not in batch:
            return None
        return self.loss(module.policy, batch)

    def state_dict(self) -> Dict[str, Any]:
        """What must survive a checkpoint (counters, controllers, stage)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
