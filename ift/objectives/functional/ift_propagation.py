"""IFT's own maths: relation-propagation token weights and the temporal residual input.

Formulas: ``docs/objectives.md`` (IFT). Shapes as in
:mod:`ift.objectives.functional.token_losses`: ``B x (T-1)`` aligned with the shifted labels.
"""

from __future__ import annotations

import torch

from ift.objectives.functional.discounting import discounted_cumsum

PROPAGATION_SIDES = ("left", "right")
PROPAGATION_NORMS = ("L1", "L2", "softmax", "log")
PROPAGATION_TYPES = ("loss", "mask", "logps")


def ift_token_weights(
    token_losses: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    side: str = "left",
    norm: str = "L1",
    kind: str = "loss",
) -> torch.Tensor:
    """IFT relation-propagation weights (docs/objectives.md, IFT step 4).

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

