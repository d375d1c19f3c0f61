"""Odds Ratio Preference Optimization (Hong et al., 2024), a baseline of the IFT paper."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from ift.objectives import functional as Fn
from ift.core.arguments import check_number
from ift.objectives.base import Metrics
from ift.objectives.preference import _PreferenceObjective, check_preference_batch, pair_logprobs

class ORPO(_PreferenceObjective):
    """ORPO on preference pairs (docs/objectives.md, "DPO and ORPO"); no reference model.

    Per pair: the SFT loss of the chosen response (per-token-mean NLL) plus
    ``β · -log σ(log-odds(y_w) - log-odds(y_l))``, with per-token-mean log-probs and
    ``odds(p) = p / (1 - p)`` computed stably (:func:`ift.objectives.functional.log_odds`);
    averaged over pairs.

    Args:
        beta: weight β of the odds-ratio term, >= 0 (paper's baseline: 0.25).
    """

    disables_dropout = True  # as TRL's ORPO (ift.modules.dropout)

    def __init__(self, beta: float = 0.25):
        self.beta = check_number("ORPO", "beta", beta, "[0, inf)")

    def loss(self, policy: torch.nn.Module, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics]:
        check_preference_batch(batch, "ORPO")
        chosen, rejected = pair_logprobs(policy, batch, average=True)
        losses, ratio_losses, log_odds_ratio = Fn.orpo_loss(chosen, rejected, self.beta)
        metrics: Metrics = {
            "nll": -chosen.detach().mean(),
            "odds_ratio_loss": ratio_losses.detach().mean(),
            "log_odds_ratio": log_odds_ratio.mean(),
            "reward_accuracy": (log_odds_ratio > 0).float().mean(),
            "logp_chosen": chosen.detach().mean(),
            "logp_rejected": rejected.detach().mean(),
        }
        return losses.mean(), metrics

