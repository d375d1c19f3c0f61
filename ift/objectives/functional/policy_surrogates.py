"""Per-token policy-gradient surrogates for critic-free RL: PPO/GRPO clipping, GSPO, CISPO.

Each function returns the *unreduced* loss (per token, or per sequence for GSPO), to be
reduced by :mod:`~ift.objectives.functional.loss_aggregation`, together with detached
diagnostics: the importance ratio used and where clipping was active.

Shapes: ``B`` completions, ``R`` response tokens. ``logprobs`` are the sampled tokens'
log-probs under the current policy (with gradient), ``old_logprobs`` the same under the
policy that generated them (no gradient). ``advantages`` are ``B`` (one per completion,
broadcast over its tokens) or ``B x R``. ``mask`` is ``B x R`` bool/0-1 with any pattern.

Every function computes in float32 (float64 stays float64) whatever the input precision,
and never lets values at masked positions (possibly nan/inf) leak into a result or a
gradient: they are replaced with ``torch.where`` before any arithmetic. At masked
positions the loss is exactly 0, the ratio is 1 (log-ratio taken as 0) and every flag is
False.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ift.objectives.functional.masked_stats import _compute_dtype, masked_mean


class TokenSurrogate(NamedTuple):
    """A per-token surrogate (unpacks as ``loss, ratio, clipped_low, clipped_high, dual_clipped``)."""

    #: ``B x R`` loss to minimise (minus the surrogate objective), with gradient; 0 at masked positions.
    loss: torch.Tensor
    #: ``B x R`` detached importance ratio used (1 at masked positions).
    ratio: torch.Tensor
    #: ``B x R`` bool: the lower clip was active (``ratio < 1 - eps_low`` and ``A < 0``).
    clipped_low: torch.Tensor
    #: ``B x R`` bool: the upper clip was active (``ratio > 1 + eps_high`` and ``A > 0``; CISPO: weight capped).
    clipped_high: torch.Tensor
    #: ``B x R`` bool: ``A < 0`` and the dual-clip bound ``-c A`` was the loss.
    dual_clipped: torch.Tensor


class SequenceSurrogate(NamedTuple):
    """GSPO's per-sequence surrogate (unpacks as ``loss, ratio, clipped_low, clipped_high``)."""

    #: ``B`` loss to minimise, with gradient; 0 for a row without a valid token.
    loss: torch.Tensor
    #: ``B`` detached sequence ratio ``s_i`` (1 for a row without a valid token).
    ratio: torch.Tensor
    #: ``B`` bool: ``s_i < 1 - eps_low`` and ``A_i < 0``.
    clipped_low: torch.Tensor
    #: ``B`` bool: ``s_i > 1 + eps_high`` and ``A_i > 0``.
    clipped_high: torch.Tensor


def _check_clip(name: str, epsilon_low: float, epsilon_high: float, log_ratio_clamp: float) -> None:
    if not 0.0 <= epsilon_low < 1.0:
        raise ValueError(f"{name}: epsilon_low must be in [0, 1), got {epsilon_low}")
    if epsilon_high < 0.0:
        raise ValueError(f"{name}: epsilon_high must be >= 0, got {epsilon_high}")
    if log_ratio_clamp <= 0.0:
        raise ValueError(f"{name}: log_ratio_clamp must be > 0, got {log_ratio_clamp}")


def _token_advantages(name: str, advantages: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``B x R`` advantages in ``dtype`` (a ``B`` vector is broadcast over tokens), 0 where masked."""
    if advantages.dim() == 1 and advantages.shape[0] == mask.shape[0]:
        advantages = advantages.unsqueeze(-1).expand(mask.shape)
    if advantages.shape != mask.shape:
        raise ValueError(
            f"{name}: advantages {tuple(advantages.shape)} must be B or B x R for a mask of {tuple(mask.shape)}"
        )
    return torch.where(mask.bool(), advantages.to(dtype), torch.zeros((), dtype=dtype, device=mask.device))


def _clamped_log_ratio(
    name: str, logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, clamp: float
) -> torch.Tensor:
    """``clamp(logp - old, -c, c)`` at valid positions, 0 elsewhere (with gradient).

    The clamp keeps ``exp`` finite when a token's probability collapsed between rollout
    and update; a clamped token gets no gradient, like a clipped one.
    """
    if logprobs.shape != mask.shape or old_logprobs.shape != mask.shape:
        raise ValueError(
            f"{name}: logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must all be B x R"
        )
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)
    diff = torch.where(mask.bool(), logprobs.to(dtype) - old_logprobs.to(dtype), zero)
    return diff.clamp(-clamp, clamp)


def _clipped_objective_loss(
    ratio: torch.Tensor, adv: torch.Tensor, epsilon_low: float, epsilon_high: float
) -> torch.Tensor:
    """``-min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A)`` elementwise."""
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)
    return torch.maximum(unclipped, clipped)


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    dual_clip: Optional[float] = None,
    log_ratio_clamp: float = 20.0,
) -> TokenSurrogate:
    """PPO/GRPO clipped surrogate per token, with DAPO's clip-higher and optional dual clip.

    ``ratio = exp(clamp(logp - old, -c, c))`` and
    ``loss = -min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A)``. A larger
    ``epsilon_high`` than ``epsilon_low`` ("clip-higher") lets unlikely tokens with a
    positive advantage grow faster, which fights entropy collapse. With
    ``dual_clip = c > 1``, for ``A < 0`` the loss is further capped at ``-c A`` (objective
    ``max(l, c A)``): a token whose ratio exploded cannot produce an unbounded update.

    Args:
        logprobs: ``B x R`` current log-probs (with gradient), any float dtype.
        old_logprobs: ``B x R`` rollout log-probs.
        advantages: ``B`` or ``B x R``.
        mask: ``B x R`` bool/0-1, any pattern.
        epsilon_low: in ``[0, 1)``.
        epsilon_high: ``>= 0``.
        dual_clip: None or ``> 1``.
        log_ratio_clamp: ``c > 0`` bounding the log-ratio.

    Returns:
        :class:`TokenSurrogate`; the loss is float32 (float64 for float64 inputs).
    """
    name = "clipped_surrogate"
    _check_clip(name, epsilon_low, epsilon_high, log_ratio_clamp)
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"{name}: dual_clip must be None or > 1, got {dual_clip}")
    dtype = _compute_dtype(logprobs, old_logprobs, advantages)
    valid = mask.bool()
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)
    adv = _token_advantages(name, advantages, mask, dtype)
    ratio = torch.exp(_clamped_log_ratio(name, logprobs, old_logprobs, mask, dtype, log_ratio_clamp))
    loss = _clipped_objective_loss(ratio, adv, epsilon_low, epsilon_high)
    negative = valid & (adv < 0)
    if dual_clip is not None:
        bound = -dual_clip * adv
        dual_clipped = negative & (bound < loss).detach()
        loss = torch.where(negative, torch.minimum(loss, bound), loss)
    else:
        dual_clipped = torch.zeros_like(valid)
    loss = torch.where(valid, loss, zero)
    with torch.no_grad():
        r = ratio.detach()
        clipped_low = negative & (r < 1.0 - epsilon_low)
        clipped_high = valid & (adv > 0) & (r > 1.0 + epsilon_high)
    return TokenSurrogate(loss, r, clipped_low, clipped_high, dual_clipped)


def _sequence_log_ratio(
    name: str, logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, clamp: float
) -> torch.Tensor:
    """``B`` ``log s_i``: masked token mean of the clamped log-ratio (0 for an empty row), with gradient."""
    return masked_mean(_clamped_log_ratio(name, logprobs, old_logprobs, mask, dtype, clamp), mask, dim=-1)


def sequence_ratio_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float = 3e-4,
    epsilon_high: float = 4e-4,
    log_ratio_clamp: float = 20.0,
) -> SequenceSurrogate:
    """GSPO: one clipped importance ratio per sequence.

    ``s_i = exp(mean over valid t of clamp(logp_it - old_it, -c, c))`` (the geometric
    mean of the token ratios, so its scale does not grow with length) and
    ``loss_i = -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)``. The clip range
    is tiny because ``s_i`` is a per-token-averaged quantity.

    Args:
        logprobs, old_logprobs: ``B x R``; advantages: ``B``; mask: ``B x R`` any pattern.

    Returns:
        :class:`SequenceSurrogate`; a row with no valid token has loss 0, ratio 1 and
        flags False. Reduce with :func:`aggregate_sequence_losses`.
    """
    name = "sequence_ratio_surrogate"
    _check_clip(name, epsilon_low, epsilon_high, log_ratio_clamp)
    if advantages.shape != mask.shape[:1]:
        raise ValueError(f"{name}: advantages must be B = {mask.shape[0]}, got {tuple(advantages.shape)}")
    dtype = _compute_dtype(logprobs, old_logprobs, advantages)
    row_valid = mask.bool().any(-1)
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)
    adv = torch.where(row_valid, advantages.to(dtype), zero)
    ratio = torch.exp(_sequence_log_ratio(name, logprobs, old_logprobs, mask, dtype, log_ratio_clamp))
    loss = torch.where(row_valid, _clipped_objective_loss(ratio, adv, epsilon_low, epsilon_high), zero)
    with torch.no_grad():
        r = ratio.detach()
        clipped_low = row_valid & (adv < 0) & (r < 1.0 - epsilon_low)
        clipped_high = row_valid & (adv > 0) & (r > 1.0 + epsilon_high)
    return SequenceSurrogate(loss, r, clipped_low, clipped_high)


def sequence_token_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float = 3e-4,
    epsilon_high: float = 4e-4,
    log_ratio_clamp: float = 20.0,
) -> TokenSurrogate:
    """GSPO-token: GSPO's sequence ratio, but a loss per token (so advantages may vary per token).

    ``s_it = exp(sg(log s_i) + l_it - sg(l_it))`` with ``l_it`` the clamped log-ratio and
    ``sg`` stop-gradient: its value is the sequence ratio ``s_i`` and its gradient is that
    of token ``t`` alone. Then the clipped loss of :func:`clipped_surrogate` with ``s_it``
    (no dual clip). With one advantage per row, its seq-mean-token-mean equals the mean
    of :func:`sequence_ratio_surrogate`'s loss, in value and gradient. (Going through the
    clamped ``l_it`` rather than the raw log-prob keeps that equality also for tokens
    beyond the clamp.)

    Args:
        logprobs, old_logprobs: ``B x R``; advantages: ``B`` or ``B x R``; mask: ``B x R``.

    Returns:
        :class:`TokenSurrogate` (``dual_clipped`` all False; ``ratio`` is ``s_i`` on the
        row's valid tokens).
    """
    name = "sequence_token_surrogate"
    _check_clip(name, epsilon_low, epsilon_high, log_ratio_clamp)
    dtype = _compute_dtype(logprobs, old_logprobs, advantages)
    valid = mask.bool()
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)
    adv = _token_advantages(name, advantages, mask, dtype)
    token_log_ratio = _clamped_log_ratio(name, logprobs, old_logprobs, mask, dtype, log_ratio_clamp)
    seq_log_ratio = masked_mean(token_log_ratio.detach(), mask, dim=-1).unsqueeze(-1)
    log_ratio = torch.where(valid, seq_log_ratio + token_log_ratio - token_log_ratio.detach(), zero)
    ratio = torch.exp(log_ratio)
    loss = torch.where(valid, _clipped_objective_loss(ratio, adv, epsilon_low, epsilon_high), zero)
    with torch.no_grad():
        r = ratio.detach()
        clipped_low = valid & (adv < 0) & (r < 1.0 - epsilon_low)
        clipped_high = valid & (adv > 0) & (r > 1.0 + epsilon_high)
    return TokenSurrogate(loss, r, clipped_low, clipped_high, torch.zeros_like(valid))


def cispo_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_high: float = 5.0,
    log_ratio_clamp: float = 20.0,
) -> TokenSurrogate:
    """CISPO: REINFORCE with a clipped, detached importance weight; no token loses its gradient.

    ``loss_t = -sg(min(ratio_t, epsilon_high)) * A_t * logp_t``, so the gradient wrt
    ``logp_t`` is ``-min(ratio_t, epsilon_high) * A_t``. Unlike PPO clipping, a token
    whose ratio left the trust region still contributes (with a capped weight), which
    keeps rare "fork" tokens learning. The loss *value* is not a surrogate objective;
    only its gradient matters.

    Args:
        logprobs, old_logprobs: ``B x R``; advantages: ``B`` or ``B x R``; mask: ``B x R``.
        epsilon_high: the cap on the weight, ``> 0``.

    Returns:
        :class:`TokenSurrogate`: ``clipped_high`` where ``ratio > epsilon_high`` (either
        sign of ``A``); ``clipped_low`` and ``dual_clipped`` all False.
    """
    name = "cispo_surrogate"
    if epsilon_high <= 0.0:
        raise ValueError(f"{name}: epsilon_high must be > 0, got {epsilon_high}")
    if log_ratio_clamp <= 0.0:
        raise ValueError(f"{name}: log_ratio_clamp must be > 0, got {log_ratio_clamp}")
    dtype = _compute_dtype(logprobs, old_logprobs, advantages)
    valid = mask.bool()
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)
    adv = _token_advantages(name, advantages, mask, dtype)
    with torch.no_grad():
        ratio = torch.exp(_clamped_log_ratio(name, logprobs, old_logprobs, mask, dtype, log_ratio_clamp))
        weight = ratio.clamp(max=epsilon_high)
        clipped_high = valid & (ratio > epsilon_high)
    logp = torch.where(valid, logprobs.to(dtype), zero)
    loss = torch.where(valid, -weight * adv * logp, zero)
    no_flags = torch.zeros_like(valid)
    return TokenSurrogate(loss, ratio, no_flags, clipped_high, no_flags)
