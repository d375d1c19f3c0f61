"""Recipes: objectives made of objectives, trained in ONE ``trainer.fit``.

- :class:`Sequential` runs stages one after the other, e.g. SFT for 2 epochs then PPO
  (ReFT). A stage that reads a reference model takes the policy *as it stands at the
  switch* as its reference.
- :class:`Mix` adds weighted losses of several objectives in one optimizer step, e.g.
  SFT + PPO on the same batch.

YAML::

    objective:
      class_path: Sequential
      init_args:
        stages:
          - objective: {class_path: SFT}
            epochs: 2
          - objective: {class_path: PPO, init_args: {reward: {class_path: ift.rewards.AnswerMatchReward}, kl_coef: 0.05}}
            steps: 500

    objective:
      class_path: Mix
      init_args:
        objectives: [{class_path: SFT}, {class_path: PPO, init_args: {reward: {class_path: ift.rewards.AnswerMatchReward}}}]
        weights: [1.0, 0.5]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from ift.core.arguments import check_integer, check_number
from ift.objectives.base import Metrics, Objective
from ift.objectives.contract import Capabilities, StepContext, StepResult
from ift.objectives.rollout import RolloutObjective


@dataclass
class Stage:
    """One stage of a :class:`Sequential` recipe.

    Args:
        objective: what the stage trains with (``class_path`` in YAML).
        epochs: length of the stage in epochs of the training data (converted to
            ``epochs * trainer.num_training_batches`` training batches).
        steps: length of the stage in training batches (one PPO iteration is one batch,
            whatever number of optimizer steps it makes).
        name: name used in logs and exports (default ``stage<i>-<objective>``).
        lr: learning rate for this stage, set on every optimizer parameter group when the
            stage starts (e.g. a smaller one for PPO after SFT); None keeps the current one.
            With an LR scheduler, the scheduler's own values take over at its next step.
    """

    objective: Objective
    epochs: Optional[int] = None
    steps: Optional[int] = None
    name: Optional[str] = None
    lr: Optional[float] = None


torch.serialization.add_safe_globals([Stage])


def _as_stage(value: Union[Stage, Mapping[str, Any]], index: int, last: bool) -> Stage:
    if isinstance(value, Stage):
        stage = value
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - {"objective", "epochs", "steps", "name", "lr"})
        if unknown or "objective" not in value:
            raise ValueError(
                f"Sequential: stage {index} must have 'objective' and one of 'epochs'/'steps' "
                f"(optionally 'name', 'lr'); got keys {sorted(value)}"
            )
        stage = Stage(**dict(value))
    else:
        raise TypeError(f"Sequential: stage {index} must be a Stage or a dict, got {type(value).__name__}")
    if not isinstance(stage.objective, Objective):
        raise TypeError(
            f"Sequential: stage {index}'s objective must be an Objective (SFT, IFT, PPO, ...), "
            f"got {type(stage.objective).__name__}"
        )
    if stage.epochs is not None and stage.steps is not None:
        raise ValueError(f"Sequential: stage {index} gives both epochs and steps; give one")
    if stage.epochs is None and stage.steps is None and not last:
        raise ValueError(
            f"Sequential: stage {index} needs 'epochs' or 'steps' (only the last stage may run open-ended)"
        )
    owner = f"Sequential: stage {index}"
    stage.epochs = check_integer(owner, "epochs", stage.epochs, optional=True)
    stage.steps = check_integer(owner, "steps", stage.steps, optional=True)
    stage.lr = check_number(owner, "lr", stage.lr, "(0, inf)", optional=True)
    return stage


class Sequential(Objective):
    """Train with one objective after another in a single fit (e.g. SFT then PPO: ReFT).

    A stage ends after its ``steps`` training batches or ``epochs`` epochs; the switch
    happens at the start of the next batch. The last stage runs until the Trainer stops
    (set ``max_epochs``/``max_steps`` to the sum of the stages; a stage length of the last
    stage is informative only). When a stage that reads a reference (PPO, DPO) starts,
    the reference is refreshed to the policy as it stands then.

    The fit uses Lightning's manual optimization if any stage needs it (PPO); the other
    stages are then stepped once per batch by the module, with ``max_grad_norm``
    clipping. The stage index, the batch counters and every stage's own state (e.g.
    PPO's KL controller) go into checkpoints; the reference weights are saved with the
    module, so resuming mid-PPO continues PPO against the same reference.

    Args:
        stages: list of ``{objective: ..., epochs: N}`` or ``{objective: ..., steps: N}``
            (see :class:`Stage`).
    """

    def __init__(self, stages: List[Stage]):
        if not stages:
            raise ValueError("Sequential: give at least one stage")
        self.stages = [_as_stage(stage, i, i == len(stages) - 1) for i, stage in enumerate(stages)]
        self.stage_index = 0
        self.stage_batches = 0  # training batches run in the current stage
        self.total_batches = 0
        self.stage_start_epoch = 0
        self._step = 0

    # ------------------------------------------------------------------ properties
    @property
    def current(self) -> Objective:
        return self.stages[self.stage_index].objective

    disables_dropout = property(lambda self: any(stage.objective.disables_dropout for stage in self.stages))

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return Capabilities.of_sequence(stage.objective.capabilities for stage in self.stages)

    def stage_name(self, index: int) -> str:
        stage = self.stages[index]
        return stage.name or f"stage{index}-{type(stage.objective).__name__.lower()}"

    # ------------------------------------------------------------------ hooks
    def attach(self, context: StepContext) -> None:
        for stage in self.stages:
            stage.objective.attach(context)

    def begin(self, context: StepContext) -> None:
        """Start (or resume) the current stage; a restored reference is kept as it is. The
        stage's ``lr`` is set at the start, and on resume when it is not the checkpoint's (the
        restored optimizer state holds the checkpoint's learning rate)."""
        lr = self.stages[self.stage_index].lr
        if lr is not None and (self.total_batches == 0 or lr != getattr(self, "_checkpoint_lr", lr)):
            context.set_learning_rate(float(lr))
        self.current.begin(context)

    def set_step(self, step: int) -> None:
        self._step = step
        self.current.set_step(step)

    def training_step(self, context: StepContext, batch: Dict[str, Any]) -> StepResult:
        self._advance(context)
        objective = self.current
        objective.set_step(self._step)
        result = objective.training_step(context, batch)
        self.stage_batches += 1
        self.total_batches += 1
        metrics = dict(result.metrics)
        metrics["stage"] = torch.tensor(float(self.stage_index))
        return StepResult(result.loss, metrics, result.stepped)

    def validation_loss(self, context: StepContext, batch: Dict[str, Any]) -> Optional[StepResult]:
        return self.current.validation_loss(context, batch)

    # ------------------------------------------------------------------ switching
    def stage_length(self, context: StepContext, index: int) -> Optional[float]:
        """Training batches in stage ``index`` (None: open-ended; inf: epochs of an unsized loader)."""
        stage = self.stages[index]
        if stage.steps is not None:
            return float(stage.steps)
        if stage.epochs is None:
            return None
        per_epoch = context.batches_per_epoch()
        return float("inf") if per_epoch is None else float(stage.epochs * per_epoch)

    def _stage_done(self, context: StepContext) -> bool:
        if self.stage_index == len(self.stages) - 1:
            return False
        stage = self.stages[self.stage_index]
        length = self.stage_length(context, self.stage_index)
        if length is None:
            return False
        if length == float("inf"):  # epochs of a loader without a length: count epoch starts
            return context.current_epoch - self.stage_start_epoch >= int(stage.epochs or 0)
        return self.stage_batches >= length

    def _advance(self, context: StepContext) -> None:
        while self._stage_done(context):
            self.switch_to(context, self.stage_index + 1)

    def switch_to(self, context: StepContext, index: int) -> None:
        """Enter stage ``index`` now: refresh the reference if it reads one, call its ``begin``."""
        self.stage_index = index
        self.stage_batches = 0
        self.stage_start_epoch = context.current_epoch
        objective = self.current
        if objective.capabilities.reads_reference:
            context.ensure_reference(refresh=True)
        if self.stages[index].lr is not None:
            context.set_learning_rate(float(self.stages[index].lr))
        objective.begin(context)
        objective.set_step(self._step)
        context.stage_switched(self.stage_name(index))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        return {
            "stage_index": self.stage_index,
            "stage_batches": self.stage_batches,
            "total_batches": self.total_batches,
            "stage_start_epoch": self.stage_start_epoch,
            "stages": [stage.objective.state_dict() for stage in self.stages],
            "stage_lrs": [stage.lr for stage in self.stages],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        saved = state.get("stages", [])
        if len(saved) != len(self.stages):
            raise ValueError(
                f"Sequential: the checkpoint holds {len(saved)} stages but this recipe has {len(self.stages)}; "
                "resume with the same stages"
            )
        self.stage_index = int(state["stage_index"])
        self.stage_batches = int(state["stage_batches"])
        self.total_batches = int(state.get("total_batches", 0))
        self.stage_start_epoch = int(state.get("stage_start_epoch", 0))
        if "stage_lrs" in state:  # begin re-applies a changed lr of the current stage
            self._checkpoint_lr = state["stage_lrs"][self.stage_index]
        for stage, stage_state in zip(self.stages, saved):
            stage.objective.load_state_dict(stage_state)

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{self.stage_name(i)}({stage.objective!r}, epochs={stage.epochs}, steps={stage.steps})"
            for i, stage in enumerate(self.stages)
        )
        return f"Sequential([{inner}])"


class Mix(Objective):
    """A weighted sum of objectives' losses, one optimizer step per batch.

    Every objective sees the same batch. Batch-loss objectives (SFT, IFT, DPO, ...)
    contribute their usual loss; a rollout objective (PPO) contributes one ``rollout``
    and one ``loss_on_rollout`` on it (PPO: its first, unclipped update) instead of the
    epochs of its own loop, so the fit keeps automatic optimization. Metrics are logged per objective
    as ``<name>_<metric>`` (e.g. ``train/sft_loss``, ``train/ppo_score``); timing keys
    (``time/...``) keep their names.

    Args:
        objectives: the objectives to mix.
        weights: one weight per objective (default all 1): finite and >= 0, at least one
            of them positive. A weight of 0 leaves that objective out of the loss (it still
            runs and logs its metrics); a negative weight, which would maximise a loss, is refused.
    """

    def __init__(self, objectives: List[Objective], weights: Optional[List[float]] = None):
        if not objectives:
            raise ValueError("Mix: give at least one objective")
        weights = [1.0] * len(objectives) if weights is None else list(weights)
        if len(weights) != len(objectives):
            raise ValueError(f"Mix: {len(objectives)} objectives but {len(weights)} weights")
        # A negative weight would maximise that objective's loss, and all-zero weights would
        # train nothing while the run looks normal: both are refused.
        weights = [check_number("Mix", f"weights[{i}]", w, "[0, inf)") for i, w in enumerate(weights)]
        if not any(weight > 0 for weight in weights):
            raise ValueError(f"Mix: every weight is 0 ({weights}), so nothing would be trained; "
                             "give at least one objective a positive weight")
        for index, objective in enumerate(objectives):
            if not isinstance(objective, Objective):
                raise TypeError(f"Mix: objective {index} must be an Objective, got {type(objective).__name__}")
            if objective.capabilities.manual_optimization and not isinstance(objective, RolloutObjective):
                raise TypeError(
                    f"Mix: {type(objective).__name__} makes its own optimizer steps and has no single-step form "
                    "(rollout + loss_on_rollout); it cannot be mixed"
                )
        self.objectives = list(objectives)
        self.weights = weights
        self.names = _unique_names(self.objectives)

    disables_dropout = property(lambda self: any(objective.disables_dropout for objective in self.objectives))

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return Capabilities.of_sum(objective.capabilities for objective in self.objectives)

    def attach(self, context: StepContext) -> None:
        for objective in self.objectives:
            objective.attach(context)

    def begin(self, context: StepContext) -> None:
        for objective in self.objectives:
            objective.begin(context)

    def set_step(self, step: int) -> None:
        for objective in self.objectives:
            objective.set_step(step)

    def training_step(self, context: StepContext, batch: Dict[str, Any]) -> StepResult:
        total: Optional[torch.Tensor] = None
        metrics: Metrics = {}
        for name, weight, objective in zip(self.names, self.weights, self.objectives):
            if isinstance(objective, RolloutObjective):
                rollout = objective.rollout(context, batch)
                loss, parts = objective.loss_on_rollout(context, rollout)
                parts = {**rollout.metrics, **parts}
            else:
                result = objective.training_step(context, batch)
                if result.stepped:
                    raise RuntimeError(f"Mix: {name} took its own optimizer step; a Mix takes one step per batch")
                loss, parts = result.loss, result.metrics
            total = weight * loss if total is None else total + weight * loss
            metrics.update(_prefixed(name, loss, parts))
        assert total is not None
        return StepResult(total, metrics)

    def validation_loss(self, context: StepContext, batch: Dict[str, Any]) -> Optional[StepResult]:
        total: Optional[torch.Tensor] = None
        metrics: Metrics = {}
        for name, weight, objective in zip(self.names, self.weights, self.objectives):
            result = objective.validation_loss(context, batch)
            if result is None:
                continue
            total = weight * result.loss if total is None else total + weight * result.loss
            metrics.update(_prefixed(name, result.loss, result.metrics))
        return None if total is None else StepResult(total, metrics)

    def state_dict(self) -> Dict[str, Any]:
        return {"objectives": [objective.state_dict() for objective in self.objectives]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        saved = state.get("objectives", [])
        if len(saved) != len(self.objectives):
            raise ValueError(
                f"Mix: the checkpoint holds {len(saved)} objectives but this Mix has {len(self.objectives)}"
            )
        for objective, objective_state in zip(self.objectives, saved):
            objective.load_state_dict(objective_state)

    def __repr__(self) -> str:
        inner = ", ".join(f"{w:g} * {o!r}" for w, o in zip(self.weights, self.objectives))
        return f"Mix([{inner}])"


# ---------------------------------------------------------------------------- helpers
def _unique_names(objectives: List[Objective]) -> List[str]:
    base = [type(objective).__name__.lower() for objective in objectives]
    return [name if base.count(name) == 1 else f"{name}{i}" for i, name in enumerate(base)]


def _prefixed(name: str, loss: torch.Tensor, parts: Metrics) -> Metrics:
    out: Metrics = {f"{name}_loss": loss.detach()}
    for key, value in parts.items():
        out[key if "/" in key else f"{name}_{key}"] = value
    return out
