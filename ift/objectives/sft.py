"""Supervised fine-tuning: token-mean NLL of the response, averaged over sequences."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from ift.core.constants import TRAINS_ON_RESPONSES
from ift.objectives import functional as Fn
from ift.objectives.base import Metrics, Objective
from ift.core.forward import policy_logits


def response_nll(policy: torch.nn.Module, batch: Dict[str, Any], token_mean: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(nll, tokens)``: the SFT loss of ``policy`` on the batch's supervised responses and
    how many response tokens it counts.

    The per-sequence token mean of the NLL averaged over sequences that have a response
    token, or (``token_mean``) the mean over every response token of the batch.
    """
    logits = policy_logits(policy, batch["input_ids"], batch["attention_mask"])
    token_nll, mask = Fn.token_losses_and_mask(logits, batch["labels"])
    if token_mean:
        loss = torch.where(mask, token_nll, 0.0).sum() / mask.sum().clamp(min=1)
    else:
        loss = Fn.weighted_token_loss(token_nll, mask)
    return loss, mask.sum().float()


class SFT(Objective):
    """Supervised fine-tuning (docs/objectives.md, SFT).

    Args:
        token_mean: average over all response tokens of the batch instead of the default
            per-sequence token mean followed by a mean over sequences.
    """

    trains_on = TRAINS_ON_RESPONSES

    def __init__(self, token_mean: bool = False):
        self.token_mean = token_mean

    def loss(self, policy: torch.nn.Module, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics]:
        loss, tokens = response_nll(policy, batch, self.token_mean)
        return loss, {"nll": loss.detach(), "tokens": tokens}
