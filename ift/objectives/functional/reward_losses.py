"""Reward modelling: where a sequence's reward is read, and the pairwise (Bradley–Terry) loss.

Formulas: ``docs/objectives.md`` ("Reward modelling"). Shapes: ``B`` rows (or pairs), ``T``
sequence length, ``H`` hidden size. The loss computes in float32 (float64 stays float64)
whatever the input dtype.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F

from ift.objectives.functional.masked_stats import _compute_dtype


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last real token (``attention_mask == 1``): ``B`` long.

    Works whatever side the padding is on (left, right, or both), since it takes the
    largest attended position rather than the count of attended tokens.

    Raises:
        ValueError: a row attends to no token at all (it has no last token to read a
            reward at; silently reading padding would train on garbage).
    """
    valid = attention_mask.bool()
    empty = ~valid.any(-1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"last_token_index: rows {rows} have no attended token (an all-padding sequence)")
    positions = torch.arange(valid.shape[-1], device=valid.device)
    return torch.where(valid, positions, -1).amax(-1)


def drop_trailing_token(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_id: int) -> torch.Tensor:
    """``attention_mask`` with each row's last real token masked out when it is ``token_id``.

    Used to read a reward before a trailing EOS: a scorer that reads decoded text (without
    EOS) then sees the same last token as training did. A row whose only token is
    ``token_id`` keeps it, so every row still has a token to read.
    """
    last = last_token_index(attention_mask)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    drop = (input_ids[rows, last] == token_id) & (attention_mask.bool().sum(-1) > 1)
    mask = attention_mask.clone()
    mask[rows[drop], last[drop]] = 0
    return mask


def gather_last_token(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``B x H`` rows of ``hidden`` (``B x T x H``) at positions ``index`` (``B``)."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, index.to(hidden.device)]


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: Union[float, torch.Tensor] = 0.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pairwise ranking loss of a reward model, per pair: ``-log σ(r_w - r_l - m)``.

    Args:
        chosen_rewards: ``B`` rewards ``r_w`` of the preferred responses (with gradient).
        rejected_rewards: ``B`` rewards ``r_l`` of the rejected responses.
        margin: ``m``, a float or a ``B`` tensor (a per-pair margin, e.g. from rating gaps):
            the chosen reward must beat the rejected one by at least about ``m``; 0 is the
            plain Bradley–Terry loss.

    Returns:
        ``(losses, reward_margins)``, each ``B``: the per-pair losses (take their mean for
        a batch loss) and ``r_w - r_l`` (detached; > 0 where the pair is ranked right).
    """
    dtype = _compute_dtype(chosen_rewards, rejected_rewards)
    gap = chosen_rewards.to(dtype) - rejected_rewards.to(dtype)
    if isinstance(margin, torch.Tensor):
        margin = margin.to(device=gap.device, dtype=dtype)
    return -F.logsigmoid(gap - margin), gap.detach()
