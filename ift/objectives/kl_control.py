"""KL coefficient controllers for PPO on language models.

The per-token reward carries a penalty ``-beta * KL_t`` (see
:func:`ift.objectives.functional.per_token_rewards`). ``beta`` is either fixed (ReFT: 0.05
for natural-language answers, 0.01 for code) or adapted toward a target KL, as in
Ziegler et al., "Fine-Tuning Language Models from Human Preferences" (2019):

    error = clip(KL / target - 1, -0.2, 0.2)
    beta <- beta * (1 + error * n_steps / horizon)

where ``KL`` is the current per-sequence KL of the rollout and ``n_steps`` the number of
samples it took (the rollout batch size). Both controllers share one interface:
``.value``, ``.init_coef``, ``.update(current_kl, n_steps)``, ``state_dict()`` /
``load_state_dict()``, so the objective can checkpoint either.

**On resume** the configured controller wins wherever the two disagree
(:func:`resume_kl_controller`): only an adaptive controller has state (its adapted
coefficient), and it goes on from it only when the resumed run configures the same starting
coefficient. A fixed coefficient is always the configured one; a changed starting
coefficient restarts the adaptive controller at it; a changed ``target``/``horizon`` steers
the adapted coefficient from where it stands. Each case that departs from the checkpoint's
run is said in a sentence (PPO warns with it).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Union

import torch

Number = Union[float, int, torch.Tensor]


def _as_float(x: Number, name: str) -> float:
    value = float(x.detach().double().item()) if isinstance(x, torch.Tensor) else float(x)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


class FixedKLController:
    """A constant KL coefficient; ``update`` does nothing.

    Args:
        coef: the coefficient beta (>= 0).
    """

    def __init__(self, coef: float = 0.05) -> None:
        if coef < 0:
            raise ValueError(f"FixedKLController: coef must be >= 0, got {coef}")
        self.value = float(coef)

    @property
    def init_coef(self) -> float:
        """The coefficient it was built with (it never moves)."""
        return self.value

    def update(self, current_kl: Number, n_steps: int) -> float:
        """Ignore the measurement; return the (unchanged) coefficient."""
        return self.value

    def state_dict(self) -> Dict[str, Any]:
        """``{"value": beta}``, for inspection: a fixed coefficient has nothing to restore."""
        return {"value": self.value}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Nothing to restore: the coefficient is the one this controller was built with (a
        resumed run's configured ``kl_coef``), not the checkpoint's."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(coef={self.value})"


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. (2019), a proportional controller in log space.

    Args:
        init_coef: starting coefficient beta (> 0).
        target: target KL per sequence (> 0), in the same units as the ``current_kl``
            passed to :meth:`update` (OpenAI's summarisation setting used 6 nats).
        horizon: number of samples over which the error is corrected (> 0; 10000 in the paper).
    """

    ERROR_CLIP = 0.2

    def __init__(self, init_coef: float = 0.05, target: float = 6.0, horizon: int = 10000) -> None:
        if init_coef <= 0:
            raise ValueError(f"AdaptiveKLController: init_coef must be > 0, got {init_coef}")
        if target <= 0:
            raise ValueError(f"AdaptiveKLController: target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"AdaptiveKLController: horizon must be > 0, got {horizon}")
        self.init_coef = float(init_coef)
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: Number, n_steps: int) -> float:
        """Move beta toward keeping the KL at ``target``; return the new beta.

        ``error = clip(current_kl / target - 1, -0.2, 0.2)``;
        ``beta *= 1 + error * n_steps / horizon``.
        """
        kl = _as_float(current_kl, "AdaptiveKLController.update: current_kl")
        if n_steps < 0:
            raise ValueError(f"AdaptiveKLController.update: n_steps must be >= 0, got {n_steps}")
        error = min(max(kl / self.target - 1.0, -self.ERROR_CLIP), self.ERROR_CLIP)
        # A huge n_steps/horizon could make the factor <= 0; keep beta positive.
        self.value *= max(1.0 + error * n_steps / self.horizon, 1e-3)
        return self.value

    def state_dict(self) -> Dict[str, Any]:
        """The current coefficient, the one it started from, and ``target``/``horizon`` (for inspection)."""
        return {"value": self.value, "init_coef": self.init_coef, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Go on from the saved coefficient. ``target``/``horizon`` stay the constructor's, so a
        resumed run may change them; whether to restore at all is :func:`resume_kl_controller`'s call."""
        self.value = _as_float(state["value"], "AdaptiveKLController state 'value'")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value}, target={self.target}, horizon={self.horizon:g})"


def _is_adaptive_state(state: Dict[str, Any]) -> bool:
    # An adaptive controller's state has always carried its target; a fixed one's never did.
    return isinstance(state, dict) and "value" in state and "target" in state


def resume_kl_controller(controller: Union[FixedKLController, AdaptiveKLController],
                         state: Dict[str, Any]) -> Optional[str]:
    """Restore into ``controller`` (built from the resumed run's config) what it may take from
    the controller ``state`` a checkpoint saved; return a sentence when the configured
    controller departs from what the checkpoint's run was doing, None otherwise.

    * fixed controller: nothing is restored (its coefficient is the configured ``kl_coef``);
      after an adaptive run, the sentence gives the coefficient that run had reached;
    * adaptive controller after a fixed run: it starts at its ``init_coef``;
    * adaptive after adaptive with the same starting coefficient: it goes on from the saved
      one (with the configured ``target``/``horizon``);
    * adaptive after adaptive that started elsewhere: it restarts at its ``init_coef`` (the
      sentence says so, and how to go on instead);
    * adaptive after an adaptive checkpoint that did not record its starting coefficient
      (written before it did): it goes on from the saved one, and the sentence says so.
    """
    if not _is_adaptive_state(state):
        return None  # a fixed run (or none recorded): the configured controller starts afresh
    reached = _as_float(state["value"], "saved KL controller 'value'")
    if isinstance(controller, FixedKLController):
        return (f"the checkpoint's run adapted the KL coefficient (adaptive_kl) to {reached:.6g}; this run keeps "
                f"it fixed at kl_coef={controller.value:g} as configured (set kl_coef: {reached:.6g} to keep the "
                "adapted one)")
    if "init_coef" not in state:
        controller.load_state_dict(state)
        return (f"the checkpoint does not record the kl_coef its adaptive controller started from (it is older than "
                f"that record): the controller goes on from its adapted {reached:.6g}, whatever kl_coef says")
    started = _as_float(state["init_coef"], "saved KL controller 'init_coef'")
    if started == controller.init_coef:
        controller.load_state_dict(state)
        return None
    return (f"kl_coef changed from {started:g} to {controller.init_coef:g}: the adaptive KL controller restarts at "
            f"{controller.init_coef:g} (the checkpoint's run had adapted it to {reached:.6g}; resume with "
            f"kl_coef: {started:g} to go on from there)")


# Objectives (and so their controllers) are pickled in the module's hyper-parameters:
# allow them under torch.load's default weights_only=True.
torch.serialization.add_safe_globals([FixedKLController, AdaptiveKLController])
