"""PPO with verifiable rewards: KL estimates, per-token rewards, GAE, clipped losses, EOS masks.

Formulas: ``docs/objectives.md`` ("PPO"). Shapes: ``B`` rollouts, ``R`` response tokens.
Position ``t`` of a ``B x R`` tensor is about response token ``t`` (its log-prob, its
value, its reward). Every function computes in float32 (float64 stays float64) whatever
the input precision, and never lets values on masked positions (which may be garbage,
even inf/nan) leak into a result.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ift.objectives.functional.discounting import discounted_cumsum
from ift.objectives.functional.masked_stats import _compute_dtype, _masked_values, masked_mean, masked_var
from ift.objectives.functional.token_losses import batch_mean_of_rows, sequence_mean

KL_ESTIMATORS = ("k1", "k2", "k3")


class AdvantagesAndReturns(NamedTuple):
    """What :func:`gae` returns (unpacks as ``advantages, returns``)."""

    #: ``B x R`` GAE advantages, 0 on masked positions.
    advantages: torch.Tensor
    #: ``B x R`` ``advantages + values``, the value targets, 0 on masked positions.
    returns: torch.Tensor


class PolicyLoss(NamedTuple):
    """What :func:`ppo_policy_loss` returns (unpacks as ``loss, clipfrac, approx_kl``)."""

    #: 0-dim clipped surrogate loss, with gradient.
    loss: torch.Tensor
    #: 0-dim detached share of valid tokens where the clipped branch is strictly larger.
    clipfrac: torch.Tensor
    #: 0-dim detached masked token mean of ``0.5 (logp - old)^2``.
    approx_kl: torch.Tensor


class ValueLoss(NamedTuple):
    """What :func:`ppo_value_loss` returns (unpacks as ``loss, clipfrac``)."""

    #: 0-dim clipped value loss, with gradient.
    loss: torch.Tensor
    #: 0-dim detached share of valid tokens where the clipped branch is strictly larger.
    clipfrac: torch.Tensor


def _check_prefix_mask(mask: torch.Tensor, name: str) -> None:
    """Raise unless every row of ``mask`` is a contiguous run of valid tokens from position 0."""
    valid = mask.bool()
    if valid.shape[-1] > 1 and bool((valid[..., 1:] & ~valid[..., :-1]).any()):
        rows = (valid[..., 1:] & ~valid[..., :-1]).any(-1).nonzero().flatten().tolist()
        raise ValueError(
            f"{name}: the response mask must mark a contiguous prefix of each row (valid tokens "
            f"first, then padding), but rows {rows[:5]} have a valid token after an invalid one. "
            "Build it with response_mask_after_eos() on right-padded response ids."
        )


def _last_valid_index(mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(index, has_valid)``: index of the last true entry of each row (0 if none) and ``B`` bool."""
    valid = mask.bool()
    if valid.shape[-1] == 0:
        return torch.zeros(valid.shape[:-1], dtype=torch.long, device=valid.device), valid.any(-1)
    positions = torch.arange(valid.shape[-1], device=valid.device)
    return torch.where(valid, positions, -1).amax(-1).clamp(min=0), valid.any(-1)

def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> AdvantagesAndReturns:
    """Generalised advantage estimation over response tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V`` after the last valid token taken
    as 0 (the episode ends there: nothing is bootstrapped), and
    ``A_t = sum_{j >= t} (gamma * lam)^(j - t) delta_j`` over the valid tokens of the row.

    Args:
        rewards: ``B x R`` per-token rewards (see :func:`per_token_rewards`).
        values: ``B x R`` value estimates ``V_t`` of the state before response token ``t``.
        mask: ``B x R`` bool/0-1, a contiguous prefix of valid tokens per row (a row may
            have none); checked, a ValueError otherwise.
        gamma: discount in ``[0, 1]`` (ReFT: 1.0).
        lam: GAE lambda in ``[0, 1]`` (ReFT: 0.95).

    Returns:
        :class:`AdvantagesAndReturns` ``(advantages, returns)``, both ``B x R`` float32
        (float64 for float64 input),
        ``returns = advantages + values``, 0 on masked positions. No gradient is expected
        to flow (detach the inputs), but the computation is differentiable.
    """
    if not 0.0 <= gamma <= 1.0 or not 0.0 <= lam <= 1.0:
        raise ValueError(f"gae: gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    if rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(
            f"gae: rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
            f"{tuple(mask.shape)} must all be B x R"
        )
    _check_prefix_mask(mask, "gae")
    dtype = _compute_dtype(rewards, values)
    valid = mask.bool()
    r = _masked_values(rewards, valid, dtype)
    v = _masked_values(values, valid, dtype)
    next_v = F.pad(v[..., 1:], (0, 1))  # 0 after the last valid token (masked values are 0)
    deltas = torch.where(valid, r + gamma * next_v - v, torch.zeros((), dtype=dtype, device=r.device))
    advantages = discounted_cumsum(deltas, gamma * lam, reverse=True).to(dtype)
    advantages = torch.where(valid, advantages, torch.zeros((), dtype=dtype, device=r.device))
    returns = torch.where(valid, advantages + v, torch.zeros((), dtype=dtype, device=r.device))
    return AdvantagesAndReturns(advantages, returns)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of ``KL(policy || reference)`` from sampled tokens' log-probs.

    With ``d = logprobs - ref_logprobs`` (tokens sampled from the policy):

    - ``k1``: ``d`` (unbiased, can be negative; the classic PPO-RLHF penalty),
    - ``k2``: ``0.5 * d^2`` (biased, non-negative),
    - ``k3``: ``(r - 1) - log r`` with ``r = exp(-d) = exp(ref - logp)`` (unbiased,
      non-negative; Schulman's estimator).

    Args:
        logprobs, ref_logprobs: ``B x R`` (any matching shape), any float dtype.

    Returns:
        float32 tensor of the same shape (float64 for float64 input). Mask it yourself.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_penalty: estimator {estimator!r} is not one of {KL_ESTIMATORS}")
    dtype = _compute_dtype(logprobs, ref_logprobs)
    diff = logprobs.to(dtype) - ref_logprobs.to(dtype)
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * diff.square()
    # k3: exp(-d) - 1 + d; expm1 keeps precision when d is tiny.
    return torch.expm1(-diff) + diff


def per_token_rewards(
    scores: Union[torch.Tensor, Sequence[float]],
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: Union[float, torch.Tensor],
) -> torch.Tensor:
    """Rewards per response token: KL penalty everywhere, the score on the last token.

    ``r_t = -kl_coef * kl_t`` on valid tokens, plus ``scores[b]`` on the last valid token
    of row ``b`` (the token that emits EOS, or the last response token when the rollout
    hit the length limit). Rows with no valid token get all zeros (and no score).

    Args:
        scores: ``B`` scalar scores (tensor or list of floats).
        kl: ``B x R`` per-token KL estimates (see :func:`kl_penalty`).
        mask: ``B x R`` bool/0-1 valid response tokens (see :func:`response_mask_after_eos`).
        kl_coef: the coefficient beta (float or 0-dim tensor).

    Returns:
        ``B x R`` float32 tensor (float64 for float64 ``kl``), 0 on masked positions.
    """
    dtype = _compute_dtype(kl)
    valid = mask.bool()
    scores_t = torch.as_tensor(scores, device=kl.device).to(dtype).reshape(-1)
    if scores_t.shape[0] != kl.shape[0] or kl.shape != mask.shape:
        raise ValueError(
            f"per_token_rewards: expected B scores and B x R kl and mask, got scores "
            f"{tuple(scores_t.shape)}, kl {tuple(kl.shape)}, mask {tuple(mask.shape)}"
        )
    rewards = -kl_coef * _masked_values(kl, valid, dtype)
    if kl.shape[-1] == 0:
        return rewards
    last, has_valid = _last_valid_index(valid)
    at_last = F.one_hot(last, num_classes=kl.shape[-1]).to(dtype)
    bonus = torch.where(has_valid, scores_t, torch.zeros((), dtype=dtype, device=kl.device))
    rewards = rewards + at_last * bonus.unsqueeze(-1)
    return torch.where(valid, rewards, torch.zeros((), dtype=dtype, device=kl.device))


def _eos_hits(response_ids: torch.Tensor, eos_token_id) -> torch.Tensor:
    """``B x R`` bool: where the token is one of the EOS ids (``eos_token_id`` int, list or None)."""
    if eos_token_id is None:
        return torch.zeros_like(response_ids, dtype=torch.bool)
    eos = torch.as_tensor(eos_token_id, device=response_ids.device).reshape(-1).to(response_ids.dtype)
    return torch.isin(response_ids, eos)


def ended_with_eos(response_ids: torch.Tensor, eos_token_id: Union[int, Sequence[int], None]) -> torch.Tensor:
    """``B`` bool: whether each generated response contains an EOS token (did not hit the length limit).

    ``eos_token_id`` may be one id, several (models with more than one stop token) or None.
    """
    return _eos_hits(response_ids, eos_token_id).any(-1)


def response_mask_after_eos(
    response_ids: torch.Tensor,
    eos_token_id: Union[int, Sequence[int], None],
    pad_token_id: Optional[int],
) -> torch.Tensor:
    """Which generated tokens count: everything up to and including the first EOS.

    Args:
        response_ids: ``B x R`` generated ids only (no prompt), right-padded as
            ``generate`` returns them.
        eos_token_id: one id, several, or None (no stop token).
        pad_token_id: the id ``generate`` padded with, or None.

    Returns:
        ``B x R`` bool. A row with an EOS is valid up to and including its first EOS,
        whatever follows (so ``pad_token_id == eos_token_id`` is safe: the first EOS is
        the end, the rest is padding; and a pad id the model sampled *before* its EOS is
        a real token). A row without EOS hit the length limit: it is valid up to its last
        non-pad token, i.e. entirely valid unless it carries trailing padding (or when
        ``pad_token_id`` is None).
    """
    if response_ids.dim() != 2:
        raise ValueError(f"response_mask_after_eos: expected B x R ids, got shape {tuple(response_ids.shape)}")
    is_eos = _eos_hits(response_ids, eos_token_id)
    eos_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # an EOS strictly before t
    with_eos = ~eos_before
    if pad_token_id is None:
        without_eos = torch.ones_like(is_eos)
    else:
        last_real, has_real = _last_valid_index(response_ids != pad_token_id)
        positions = torch.arange(response_ids.shape[-1], device=response_ids.device)
        without_eos = (positions <= last_real.unsqueeze(-1)) & has_real.unsqueeze(-1)
    return torch.where(is_eos.any(-1, keepdim=True), with_eos, without_eos)


def mask_first_tokens(mask: torch.Tensor, counts: Sequence[Optional[int]]) -> torch.Tensor:
    """``mask`` with each row ``b`` cut after its first ``counts[b]`` positions (None: kept whole).

    Args:
        mask: ``B x R`` bool, which generated tokens count.
        counts: ``B`` token counts (>= 0) or None.

    Returns:
        ``B x R`` bool: ``mask[b, t] and t < counts[b]``.
    """
    if mask.dim() != 2 or len(counts) != mask.shape[0]:
        raise ValueError(f"mask_first_tokens: expected a B x R mask and B counts, got {tuple(mask.shape)} and {len(counts)}")
    limits = [mask.shape[1] if count is None else int(count) for count in counts]
    if any(limit < 0 for limit in limits):
        raise ValueError(f"mask_first_tokens: counts must be >= 0, got {list(counts)}")
    positions = torch.arange(mask.shape[1], device=mask.device)
    return mask & (positions < torch.tensor(limits, device=mask.device).unsqueeze(-1))


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> PolicyLoss:
    """PPO clipped surrogate loss (to minimise).

    Per token, with ``rho = exp(logp - old)``:
    ``max(-A rho, -A clip(rho, 1 - eps, 1 + eps))``; token-mean within each sequence, then
    mean over the sequences that have at least one valid token.

    Args:
        logprobs: ``B x R`` log-probs of the sampled tokens under the current policy
            (with gradient; any float dtype, computed in float32).
        old_logprobs: ``B x R`` the same under the rollout policy (no gradient).
        advantages: ``B x R`` (usually whitened; no gradient).
        mask: ``B x R`` bool/0-1 valid response tokens.
        clip_eps: epsilon (0.2 in ReFT).

    Returns:
        :class:`PolicyLoss` ``(loss, clipfrac, approx_kl)``, 0-dim float32. ``clipfrac`` is the share of
        valid tokens where the clipped branch is strictly larger (so its gradient is
        0); ``approx_kl`` is the masked token mean of ``0.5 (logp - old)^2`` (the "k2"
        estimate of ``KL(old || new)``, as logged by TRL). Both are detached.
    """
    if clip_eps <= 0:
        raise ValueError(f"ppo_policy_loss: clip_eps must be > 0, got {clip_eps}")
    dtype = _compute_dtype(logprobs, old_logprobs, advantages)
    valid = mask.bool()
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)
    log_ratio = torch.where(valid, logprobs.to(dtype) - old_logprobs.to(dtype), zero)
    adv = torch.where(valid, advantages.to(dtype), zero)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.where(valid, torch.maximum(unclipped, clipped), zero)
    loss = batch_mean_of_rows(sequence_mean(per_token, valid), valid.any(-1))
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(dtype), valid)
        approx_kl = masked_mean(0.5 * log_ratio.square(), valid)
    return PolicyLoss(loss, clipfrac, approx_kl)


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: Optional[float],
) -> ValueLoss:
    """Clipped value loss: ``0.5 max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2)``.

    Token-mean within each sequence, then mean over sequences with a valid token.
    ``clip_eps=None`` gives the plain ``0.5 (V - R)^2``.

    Args:
        values: ``B x R`` current value predictions (with gradient).
        old_values: ``B x R`` values at rollout time.
        returns: ``B x R`` GAE returns (see :func:`gae`).
        mask: ``B x R`` bool/0-1 valid response tokens.

    Returns:
        :class:`ValueLoss` ``(loss, clipfrac)``, 0-dim float32; ``clipfrac`` (detached) is the share of valid
        tokens where the clipped branch is strictly larger.
    """
    dtype = _compute_dtype(values, old_values, returns)
    valid = mask.bool()
    zero = torch.zeros((), dtype=dtype, device=values.device)
    v = torch.where(valid, values.to(dtype), zero)
    v_old = torch.where(valid, old_values.to(dtype), zero)
    ret = torch.where(valid, returns.to(dtype), zero)
    unclipped = (v - ret).square()
    if clip_eps is None:
        clipped = unclipped
    else:
        if clip_eps <= 0:
            raise ValueError(f"ppo_value_loss: clip_eps must be > 0 or None, got {clip_eps}")
        v_clipped = torch.clamp(v, v_old - clip_eps, v_old + clip_eps)
        clipped = (v_clipped - ret).square()
    per_token = torch.where(valid, 0.5 * torch.maximum(unclipped, clipped), zero)
    loss = batch_mean_of_rows(sequence_mean(per_token, valid), valid.any(-1))
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(dtype), valid)
    return ValueLoss(loss, clipfrac)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var[R - V] / Var[R]`` over the valid tokens (0-dim float32, detached).

    1 is a perfect value function, 0 no better than a constant, negative worse. When the
    returns have no variance over the valid tokens (or fewer than two are valid) it is
    undefined and nan is returned (skip it when logging).
    """
    with torch.no_grad():
        dtype = _compute_dtype(values, returns)
        valid = mask.bool()
        ret = _masked_values(returns, valid, dtype)
        var_returns = masked_var(ret, valid, unbiased=False)
        var_residual = masked_var(ret - _masked_values(values, valid, dtype), valid, unbiased=False)
        nan = torch.full((), float("nan"), dtype=dtype, device=values.device)
        return torch.where(var_returns > 0, 1 - var_residual / torch.where(var_returns > 0, var_returns, 1.0), nan)

