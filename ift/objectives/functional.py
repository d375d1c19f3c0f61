"""Pure tensor maths behind every objective: no Lightning, no models, no state.

Every function here has a slow Python-loop twin in ``tests/reference_impls.py`` and a
test comparing the two. Shapes: ``B`` batch, ``T`` sequence length, ``V`` vocabulary.
Token-level quantities are *aligned with the shifted labels*: position ``t`` of a
``B x (T-1)`` tensor is about predicting token ``t+1`` from tokens ``0..t``.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
_DISCOUNT_CHUNK = 64  # block size of the two-level discounted sum; see discounted_cumsum

PROPAGATION_SIDES = ("left", "right")
PROPAGATION_NORMS = ("L1", "L2", "softmax", "log")
PROPAGATION_TYPES = ("loss", "mask", "logps")


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


def _discount_matrix(size: int, gamma: float, device, dtype) -> torch.Tensor:
    """``A[j, t] = gamma ** (j - t)`` for ``j >= t`` else 0 (``0 ** 0 == 1``)."""
    idx = torch.arange(size, device=device)
    diff = idx.view(-1, 1) - idx.view(1, -1)  # j - t
    powers = torch.pow(torch.tensor(gamma, dtype=dtype, device=device), diff.clamp(min=0).to(dtype))
    return torch.where(diff >= 0, powers, torch.zeros((), dtype=dtype, device=device))


def discounted_cumsum(x: torch.Tensor, gamma: float, reverse: bool = True) -> torch.Tensor:
    """Discounted cumulative sum along the last dimension.

    ``reverse=True``:  ``S_t = sum_{j >= t} gamma^(j-t) x_j`` (toward the future).
    ``reverse=False``: ``S_t = sum_{j <= t} gamma^(t-j) x_j`` (toward the past).

    Vectorised in two levels so it is fast and numerically safe for long sequences:
    inside blocks of ``_DISCOUNT_CHUNK`` steps a small triangular matrix of discount
    powers does the sum with one matmul; the block totals are then combined by the
    same method at block granularity (discount ``gamma ** chunk``). Only non-positive
    powers of ``gamma`` are ever formed, so nothing overflows; they may underflow to 0,
    which is their true value to float32 precision. Accumulates in float32 (float64
    stays float64) and is differentiable. ``gamma`` must lie in ``[0, 1]``.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"discounted_cumsum: gamma must be in [0, 1], got {gamma}")
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.shape[-1] == 0:
        return x.to(compute_dtype)
    values = x.to(compute_dtype)
    if not reverse:
        values = values.flip(-1)
    lead_shape, length = values.shape[:-1], values.shape[-1]
    values = values.reshape(-1, length)

    chunk = min(_DISCOUNT_CHUNK, length)
    n_chunks = math.ceil(length / chunk)
    padded = F.pad(values, (0, n_chunks * chunk - length))  # zeros after the end change nothing
    blocks = padded.view(-1, n_chunks, chunk)

    inner = _discount_matrix(chunk, gamma, values.device, compute_dtype)
    within = blocks @ inner  # within[b, c, t] = sum_{j >= t in block c} gamma^(j-t) x_j
    if n_chunks > 1:
        block_heads = within[:, :, 0]  # each block's total, discounted to its first step
        outer = _discount_matrix(n_chunks, gamma**chunk, values.device, compute_dtype)
        from_block_start = block_heads @ outer  # S at the first step of every block
        # S at step t of block c also sees everything from block c+1 on, gamma^(chunk-t) away.
        later = F.pad(from_block_start[:, 1:], (0, 1))
        steps_to_next = torch.arange(chunk, 0, -1, device=values.device, dtype=compute_dtype)
        carry = torch.pow(torch.tensor(gamma, dtype=compute_dtype, device=values.device), steps_to_next)
        within = within + later.unsqueeze(-1) * carry
    result = within.reshape(-1, n_chunks * chunk)[:, :length].reshape(*lead_shape, length)
    return result if reverse else result.flip(-1)


def ift_token_weights(
    token_losses: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    side: str = "left",
    norm: str = "L1",
    kind: str = "loss",
) -> torch.Tensor:
    """IFT relation-propagation weights (SPEC.md, IFT step 4).

    Args:
        token_losses: ``B x (T-1)`` per-token losses ``l_t = -log p(x_{t+1} | ...)``.
            Gradient flows through them unless the caller detaches.
        mask: ``B x (T-1)`` bool/0-1, true where the position is supervised.
        gamma: discount in ``[0, 1]``; 0 means no propagation (all weights 1).
        side: ``left`` (a token is weighted by the discounted loss of its future) or
            ``right`` (by the inverse discounted loss of its past).
        norm: ``L1``, ``L2``, ``softmax`` or ``log``.
        kind: what is propagated: ``loss`` (``m l / N``), ``mask`` (``m``), ``logps`` (``m l``).

    Returns:
        ``B x (T-1)`` float32 weights, zero on masked positions, each row summing to
        its number of valid tokens (a row with none is all zeros).
    """
    if side not in PROPAGATION_SIDES:
        raise ValueError(f"propagation side {side!r} is not one of {PROPAGATION_SIDES}")
    if norm not in PROPAGATION_NORMS:
        raise ValueError(f"propagation norm {norm!r} is not one of {PROPAGATION_NORMS}")
    if kind not in PROPAGATION_TYPES:
        raise ValueError(f"propagation type {kind!r} is not one of {PROPAGATION_TYPES}")
    valid = mask.bool()
    valid_f = valid.float()
    counts = valid_f.sum(-1, keepdim=True)
    if gamma == 0:
        return valid_f.clone()

    losses = token_losses.float()
    if kind == "mask":
        items = valid_f
    elif kind == "loss":
        items = torch.where(valid, losses, 0.0) / counts.clamp(min=1)
    else:
        items = torch.where(valid, losses, 0.0)

    if side == "left":
        sums = discounted_cumsum(items, gamma, reverse=True)
        if norm == "L1":
            raw = sums
        elif norm == "L2":
            raw = sums**2
        elif norm == "log":
            raw = torch.log(sums + 1)
        else:
            raw = _masked_softmax(sums, valid)
    else:
        sums = discounted_cumsum(items, gamma, reverse=False)
        # Shift by the row's smallest non-zero sum so that no valid position divides by 0.
        nonzero_valid = valid & (sums != 0)
        big = torch.finfo(sums.dtype).max
        smallest = torch.where(nonzero_valid, sums.abs(), big).amin(-1, keepdim=True)
        shift = torch.where(nonzero_valid.any(-1, keepdim=True), smallest, torch.ones_like(smallest))
        shifted = torch.where(valid, sums + shift, 1.0)
        if norm == "L1":
            raw = 1 / shifted
        elif norm == "L2":
            raw = 1 / shifted**2
        elif norm == "log":
            raw = 1 / torch.log(shifted + 1)
        else:
            raw = _masked_softmax(1 / shifted, valid)

    raw = torch.where(valid, raw, 0.0)
    total = raw.sum(-1, keepdim=True)
    # A row whose raw weights all vanish (e.g. zero loss everywhere) falls back to uniform.
    degenerate = (total == 0) & (counts > 0)
    raw = torch.where(degenerate, valid_f, raw)
    total = torch.where(degenerate, counts, total)
    return raw * (counts / torch.where(total == 0, 1.0, total))


def _masked_softmax(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax over the valid positions of each row; 0 elsewhere (all-invalid rows give 0)."""
    masked = torch.where(valid, scores, float("-inf"))
    probs = torch.softmax(masked, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)


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


def shift_predictions_right(first_tokens: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """Temporal residual input: ``x~_0 = x_0``, ``x~_t = x^_t`` (prediction of token t).

    ``predictions`` is ``B x (T-1)`` (prediction for position ``t+1`` made at ``t``) and
    ``first_tokens`` is ``B``; returns ``B x T``.
    """
    return torch.cat([first_tokens.unsqueeze(-1), predictions], dim=-1)


def mix_embeddings(truth: torch.Tensor, predicted: torch.Tensor, lam: float) -> torch.Tensor:
    """``e_t = (1 - lam) E(x_t) + lam E(x~_t)``."""
    if lam == 0:
        return truth
    return (1 - lam) * truth + lam * predicted


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip padding on either side: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension, in float32."""
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def token_losses_and_mask(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(l_t, m_t)``: per-token NLL (``B x (T-1)``, 0 where masked) and the label mask."""
    return -label_logprobs(logits, labels), label_mask(labels)
