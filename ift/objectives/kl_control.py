"""KL coefficient controllers for PPO on language models.

The per-token reward carries a penalty ``-beta * KL_t`` (see
:func:`ift.objectives.functional.per_token_rewards`). ``beta`` is either fixed (ReFT: 0.05
for natural-language answers, 0.01 for code) or adapted toward a target KL, as in
Ziegler et al., "Fine-Tuning Language Models from Human Preferences" (2019):

    error = clip(KL / target - 1, -0.2, 0.2)
    beta <- beta * (1 + error * n_steps / horizon)

where ``KL`` is the current per-sequence KL of the rollout and ``n_steps`` the number of
samples it took (the rollout batch size). Both controllers share one interface:
``.value``, ``.update(current_kl, n_steps)``, ``state_dict()`` / ``load_state_dict()``,
so the objective can checkpoint either.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Union

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

    def update(self, current_kl: Number, n_steps: int) -> float:
        """Ignore the measurement; return the (unchanged) coefficient."""
        return self.value

    def state_dict(self) -> Dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.value = _as_float(state["value"], "FixedKLController state 'value'")

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
        """The current coefficient plus the hyper-parameters (for inspection)."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the coefficient. ``target``/``horizon`` stay the constructor's, so a
        resumed run may change them."""
        self.value = _as_float(state["value"], "AdaptiveKLController state 'value'")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value}, target={self.target}, horizon={self.horizon:g})"


# Objectives (and so their controllers) are pickled in the module's hyper-parameters:
# allow them under torch.load's default weights_only=True.
torch.serialization.add_safe_globals([FixedKLController, AdaptiveKLController])
