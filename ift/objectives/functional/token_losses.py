"""Per-token log-probabilities, label masks and the token-level losses of SFT and IFT.

Shapes: ``B`` batch, ``T`` sequence length, ``V`` vocabulary. Token-level quantities are
*aligned with the shifted labels*: position ``t`` of a ``B x (T-1)`` tensor is about
predicting token ``t+1`` from tokens ``0..t``. Formulas: ``docs/objectives.md`` (SFT, IFT).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from ift.core.constants import IGNORE_INDEX


def label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the next-token labels, shifted by one.

    Args:
        logits: ``B x T x V`` model outputs (any float dtype; computed in float32).
        labels: ``B x T`` token ids, ``-100`` where the token is not supervised.

    Returns:
        ``B x (T-1)`` float32 tensor: ``log p(labels[:, t+1] | logits[:, t])``, and 0
        wherever ``labels[:, t+1] == -100``.
    """
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    # cross_entropy fuses log_softmax + gather without keeping a second B x T x V copy.
    nll = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return -nll.view(shifted_labels.shape)


def label_mask(labels: torch.Tensor) -> torch.Tensor:
    """``B x (T-1)`` boolean mask of supervised positions, aligned with :func:`label_logprobs`."""
    return labels[:, 1:] != IGNORE_INDEX


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row mean of ``values`` over ``mask``; rows without a valid entry give 0."""
    mask_f = mask.to(values.dtype)
    return (values * mask_f).sum(-1) / mask_f.sum(-1).clamp(min=1)


def batch_mean_of_rows(row_values: torch.Tensor, row_valid: torch.Tensor) -> torch.Tensor:
    """Mean of per-sequence values over the rows that have a valid token.

    Rows with no supervised token carry no information; averaging them in as 0 would
    silently shrink the loss. If no row is valid the result is a 0 that still belongs
    to the autograd graph (so ``backward`` works and gives zero gradients).
    """
    row_valid_f = row_valid.to(row_values.dtype)
    return (row_values * row_valid_f).sum() / row_valid_f.sum().clamp(min=1)


def weighted_token_loss(token_nll: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """SFT/IFT batch loss: ``mean_seq (1/N) sum_t w_t m_t l_t`` (``w = 1`` when None)."""
    valid = mask.bool()
    per_token = token_nll if weights is None else token_nll * weights
    per_token = torch.where(valid, per_token, 0.0)
    return batch_mean_of_rows(per_token.sum(-1) / valid.sum(-1).clamp(min=1), valid.any(-1))


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension, in float32."""
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def token_losses_and_mask(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(l_t, m_t)``: per-token NLL (``B x (T-1)``, 0 where masked) and the label mask."""
    return -label_logprobs(logits, labels), label_mask(labels)

