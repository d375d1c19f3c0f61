"""Reducing per-token (or per-sequence) policy losses to the scalar that is minimised.

How token losses are averaged is part of the objective, not a detail: GRPO averages each
sequence's tokens then the sequences (long answers weigh less per token), DAPO averages
all tokens of the step (every token weighs the same), Dr.GRPO sums tokens and divides by
a constant (no length bias at all).

Making gradient accumulation and DDP exact
------------------------------------------
A mean over "the batch" is only the same objective whatever the micro-batching if its
denominator is the one of the *whole optimizer step*. So every function here takes the
totals as arguments: compute :func:`step_totals` of each micro-batch's mask, sum them over
all gradient-accumulation micro-batches of the step and over the data-parallel ranks,
and pass the result to every micro-batch. Then each micro-batch's loss is its share of
the step's loss, and the accumulated gradient is that of the whole-step loss. DDP
*averages* gradients over ranks, so multiply each rank's loss by the world size to get
the gradient of the global sum. Left at None, the totals are those of the tensors given
(the objective of this batch alone).

Every function computes in float32 (float64 stays float64) and never lets values at
masked positions (possibly nan/inf) leak into the result or its gradient.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch

from ift.objectives.functional.masked_stats import _compute_dtype, _masked_values

AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")

Total = Union[float, int, torch.Tensor, None]


class StepTotals(NamedTuple):
    """Denominators of a step's loss (unpacks as ``tokens, sequences``)."""

    #: number of valid tokens.
    tokens: float
    #: number of rows with at least one valid token.
    sequences: float


def step_totals(mask: torch.Tensor) -> StepTotals:
    """The local :class:`StepTotals` of a ``B x R`` mask (sum them over micro-batches and ranks)."""
    valid = mask.bool()
    return StepTotals(tokens=float(valid.sum().item()), sequences=float(valid.any(-1).sum().item()))


def _denominator(total: Total, local: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``total`` (or the local count when None) as a 0-dim tensor, at least 1 so an empty batch gives 0."""
    value = local if total is None else torch.as_tensor(total, device=local.device)
    return value.to(dtype).clamp(min=1)


def aggregate_token_losses(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    token_total: Total = None,
    sequence_total: Total = None,
    max_length: Optional[int] = None,
) -> torch.Tensor:
    """The scalar loss of per-token losses, reduced as ``mode`` says.

    - ``"token-mean"``: sum of the valid per-token losses / ``token_total`` (DAPO);
    - ``"seq-mean-token-mean"``: sum over rows of (the row's valid sum / its valid count)
      / ``sequence_total`` (GRPO); fully masked rows contribute 0;
    - ``"seq-mean-token-sum-norm"``: sum of the valid per-token losses /
      (``sequence_total * max_length``) (Dr.GRPO); ``max_length`` is a true constant, the
      generation limit, and is required.

    Pass the totals of the whole optimizer step (every gradient-accumulation
    micro-batch, summed over the data-parallel ranks; see :func:`step_totals`) so that
    micro-batching or DDP does not change the objective; under DDP, which averages
    gradients, multiply the result by the world size. Left at None they are this
    batch's own: ``token_total`` its valid tokens, ``sequence_total`` its rows with at
    least one valid token. Denominators are clamped at 1 (an all-masked batch gives 0).

    Args:
        per_token: ``B x R`` losses (with gradient), any float dtype.
        mask: ``B x R`` bool/0-1, any pattern.
        mode: one of :data:`AGGREGATIONS`.

    Returns:
        0-dim float32 loss (float64 for float64 input), with gradient.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"aggregate_token_losses: mode {mode!r} is not one of {AGGREGATIONS}")
    if per_token.shape != mask.shape or per_token.dim() != 2:
        raise ValueError(
            f"aggregate_token_losses: per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} "
            "must both be B x R"
        )
    dtype = _compute_dtype(per_token)
    valid = mask.bool()
    values = _masked_values(per_token, valid, dtype)
    if mode == "token-mean":
        return values.sum() / _denominator(token_total, valid.sum(), dtype)
    sequences = _denominator(sequence_total, valid.any(-1).sum(), dtype)
    if mode == "seq-mean-token-mean":
        row_means = values.sum(-1) / valid.sum(-1).to(dtype).clamp(min=1)
        return row_means.sum() / sequences
    if max_length is None or max_length <= 0:
        raise ValueError(
            "aggregate_token_losses: mode 'seq-mean-token-sum-norm' needs max_length (the generation "
            f"limit, a positive constant), got {max_length!r}"
        )
    return values.sum() / (sequences * max_length)


def aggregate_sequence_losses(
    per_sequence: torch.Tensor, row_valid: torch.Tensor, sequence_total: Total = None
) -> torch.Tensor:
    """Sum of ``per_sequence`` over the rows where ``row_valid`` / ``sequence_total`` (GSPO).

    ``sequence_total`` defaults to the number of valid rows; pass the whole step's (see
    :func:`aggregate_token_losses`) for exact gradient accumulation. Clamped at 1.

    Args:
        per_sequence: ``B`` losses (with gradient); row_valid: ``B`` bool/0-1, e.g.
            ``mask.any(-1)``.

    Returns:
        0-dim float32 loss (float64 for float64 input), with gradient.
    """
    if per_sequence.shape != row_valid.shape or per_sequence.dim() != 1:
        raise ValueError(
            f"aggregate_sequence_losses: per_sequence {tuple(per_sequence.shape)} and row_valid "
            f"{tuple(row_valid.shape)} must both be B"
        )
    dtype = _compute_dtype(per_sequence)
    valid = row_valid.bool()
    return _masked_values(per_sequence, valid, dtype).sum() / _denominator(sequence_total, valid.sum(), dtype)
