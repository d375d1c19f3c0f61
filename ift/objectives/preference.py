"""The forward pass shared by the preference objectives (DPO, ORPO, RewardModeling).

A preference batch holds ``chosen_input_ids/attention_mask/labels`` and
``rejected_input_ids/attention_mask/labels`` (see :class:`~ift.data.PreferenceDataModule`
and :class:`~ift.tasks.frozen_lake.FrozenLakeDataModule`). Both sides go through the model in one
forward pass: they are padded to a common length on the right (extra right padding is
masked and unsupervised, so it changes nothing whatever side the batch was padded on).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ift.core.constants import TRAINS_ON_PAIRS
from ift.objectives import functional as Fn
from ift.objectives.base import Objective
from ift.objectives.contract import StepContext, StepResult
from ift.core.forward import policy_logits

PREFERENCE_KEYS = tuple(f"{side}_{field}" for side in ("chosen", "rejected") for field in ("input_ids", "attention_mask", "labels"))


def check_preference_batch(batch: Dict[str, Any], who: str) -> None:
    """Raise a clear error unless ``batch`` carries both sides of the pairs."""
    missing = [key for key in PREFERENCE_KEYS if key not in batch]
    if missing:
        raise KeyError(
            f"{who} needs preference batches with {', '.join(PREFERENCE_KEYS)}; missing {missing}. "
            f"Use a preference data module (ift.data.PreferenceDataModule, or FrozenLakeDataModule "
            f"with objective_data='preference'). Keys found: {sorted(batch)}"
        )


def _pad_right(x: torch.Tensor, length: int, value: int) -> torch.Tensor:
    return F.pad(x, (0, length - x.shape[1]), value=value)


def stacked_pair(batch: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, labels)`` of both sides, ``2B x T``: the chosen rows
    first, then the rejected ones, right-padded (masked, unsupervised) to a common length."""
    length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    ids = torch.cat([_pad_right(batch[f"{side}_input_ids"], length, 0) for side in ("chosen", "rejected")])
    mask = torch.cat([_pad_right(batch[f"{side}_attention_mask"], length, 0) for side in ("chosen", "rejected")])
    labels = torch.cat([_pad_right(batch[f"{side}_labels"], length, Fn.IGNORE_INDEX) for side in ("chosen", "rejected")])
    return ids, mask, labels


def pair_logprobs(policy: torch.nn.Module, batch: Dict[str, Any], average: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(chosen, rejected)`` sequence log-probs (``B`` each, float32) of ``policy`` on a
    preference batch: summed over response tokens, or their per-token mean if ``average``."""
    ids, mask, labels = stacked_pair(batch)
    logits = policy_logits(policy, ids, mask)
    logps = Fn.sequence_logprobs(logits, labels, average=average)
    pairs = batch["chosen_input_ids"].shape[0]
    return logps[:pairs], logps[pairs:]


class _PreferenceObjective(Objective):
    """What DPO and ORPO share: a held-out loss only on batches that carry both sides,
    computed as in training."""

    trains_on = TRAINS_ON_PAIRS

    def validation_loss(self, context: StepContext, batch: Dict[str, Any]) -> Optional[StepResult]:
        if not all(key in batch for key in ("chosen_input_ids", "rejected_input_ids")):
            return None
        return self.training_step(context, batch)
