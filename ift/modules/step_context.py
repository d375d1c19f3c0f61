"""The module's side of the objective contract: a :class:`StepContext` backed by a
:class:`~ift.modules.FineTuneModule`.

This is the only place that turns what an objective asks for (a step, a learning rate,
a progress bar, the epoch length) into Lightning calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ContextManager, Optional

import torch

from ift.callbacks.rollout_progress import rollout_progress
from ift.objectives.contract import ProgressBar, StepContext

if TYPE_CHECKING:  # pragma: no cover
    from ift.modules.finetune import FineTuneModule


class ModuleStepContext(StepContext):
    """What an objective sees of the module that trains it (see :class:`StepContext`).

    Args:
        module: the module; only this class reads its Lightning state.
    """

    def __init__(self, module: "FineTuneModule"):
        self._module = module

    # ---------------------------------------------------------------- models
    @property
    def policy(self) -> torch.nn.Module:
        return self._module.policy

    @property
    def tokenizer(self) -> Any:
        return self._module.tokenizer

    def reference_model(self) -> ContextManager[torch.nn.Module]:
        return self._module.reference_model()

    def ensure_reference(self, refresh: bool = False) -> None:
        self._module.ensure_reference(refresh=refresh)

    def trainable_part(self, name: str) -> Optional[torch.nn.Module]:
        extras = self._module.extras
        return extras[name] if name in extras else None

    def add_trainable_part(self, name: str, part: torch.nn.Module) -> torch.nn.Module:
        extras = self._module.extras
        if name not in extras:
            extras[name] = part
        return extras[name]

    # ---------------------------------------------------------------- optimization
    def optimizer_step(self, loss) -> bool:
        return self._module.optimizer_step_manually(loss)

    def set_learning_rate(self, lr: float) -> None:
        optimizers = self._module.optimizers(use_pl_optimizer=False)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] = lr

    # ---------------------------------------------------------------- counters and news
    @property
    def global_step(self) -> int:
        return int(self._module.global_step)

    @property
    def current_epoch(self) -> int:
        return int(self._module.current_epoch or 0)

    def batches_per_epoch(self) -> Optional[int]:
        trainer = self._module._trainer
        if trainer is None:
            raise RuntimeError("a stage measured in epochs needs the module to be trained by a Trainer")
        batches = trainer.num_training_batches
        return None if batches == float("inf") else int(batches)

    def progress(self, total: Optional[int], desc: str) -> ContextManager[ProgressBar]:
        return rollout_progress(self._module, total=total, desc=desc)

    def stage_switched(self, stage_name: str) -> None:
        self._module.notify_stage_switch(stage_name)
