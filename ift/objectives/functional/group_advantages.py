"""Critic-free advantages: GRPO, Dr.GRPO, RLOO, REINFORCE++ and DAPO's length penalty.

These estimators replace PPO's value function by comparing several completions of the
same prompt. Shapes: ``B`` completions (rows), ``R`` response tokens. Rows are grouped
consecutively: row ``b`` belongs to group ``b // G`` (``G = group_size``, the completions
sampled for one prompt), so ``B`` must be a multiple of ``G``.

``valid`` (optional, ``B`` bool) marks the completions whose reward could be computed.
An invalid row is left out of every group statistic (its score may be anything, even
nan) and gets advantage 0, so it neither pushes nor pulls the policy.

Every function computes in float32 (float64 stays float64) whatever the input precision,
and never lets values at masked or invalid positions (possibly nan/inf) leak into a
result: they are replaced with ``torch.where``, never multiplied by 0.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from ift.objectives.functional.discounting import discounted_cumsum
from ift.objectives.functional.masked_stats import _compute_dtype, _masked_values, masked_whiten
from ift.objectives.functional.ppo_losses import per_token_rewards

ADVANTAGE_SCALES = ("group", "batch", "none")

#: Two scores closer than this (in float64) count as equal when looking for groups
#: without signal; exact ties are the common case (binary rewards).
ZERO_VARIANCE_TOL = 1e-12

ScoresLike = Union[torch.Tensor, Sequence[float]]
ValidLike = Optional[Union[torch.Tensor, Sequence[bool]]]


def _as_scores(scores: ScoresLike) -> torch.Tensor:
    """``B`` scores as a 1-D tensor (lists and integer tensors accepted)."""
    t = torch.as_tensor(scores)
    if t.dim() != 1:
        raise ValueError(f"expected B scores (a 1-D tensor), got shape {tuple(t.shape)}")
    return t


def _as_valid(valid: ValidLike, scores: torch.Tensor) -> torch.Tensor:
    """``B`` bool validity flags (all true when ``valid`` is None)."""
    if valid is None:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    v = torch.as_tensor(valid, device=scores.device).bool().reshape(-1)
    if v.shape != scores.shape:
        raise ValueError(f"valid must hold one flag per score: got {tuple(v.shape)} for {tuple(scores.shape)} scores")
    return v


def _check_groups(name: str, batch: int, group_size: int) -> int:
    """The number of groups; ValueError unless ``group_size >= 2`` divides ``batch``."""
    if group_size < 2:
        raise ValueError(
            f"{name}: group_size={group_size}, but a group baseline needs at least 2 completions "
            "per prompt; set num_generations >= 2"
        )
    if batch % group_size != 0:
        raise ValueError(
            f"{name}: {batch} completions cannot be split into groups of {group_size} "
            "(the batch must hold whole groups: B % group_size == 0)"
        )
    return batch // group_size


def _grouped(
    scores: ScoresLike, group_size: int, valid: ValidLike, name: str
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(values, valid, counts)``: ``n_groups x G`` scores (0 where invalid), flags, valid counts."""
    s = _as_scores(scores)
    n_groups = _check_groups(name, s.shape[0], group_size)
    ok = _as_valid(valid, s)
    values = _masked_values(s, ok, _compute_dtype(s)).view(n_groups, group_size)
    ok = ok.view(n_groups, group_size)
    return values, ok, ok.sum(-1, keepdim=True).to(values.dtype)


def _centred(values: torch.Tensor, ok: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``r_i - mean of the group's valid scores`` (``n_groups x G``), 0 where invalid."""
    mean = values.sum(-1, keepdim=True) / counts.clamp(min=1)
    return torch.where(ok, values - mean, torch.zeros((), dtype=values.dtype, device=values.device))


def _without_signal(
    deviations: torch.Tensor, ok: torch.Tensor, counts: torch.Tensor, zero_var: torch.Tensor
) -> torch.Tensor:
    """``deviations`` with invalid rows and groups that carry no signal set to exactly 0.

    A group of equal scores should give advantage 0, but ``r - sum(r)/n`` can be off by
    one rounding step; and a lone valid member has nothing to be compared with.
    """
    keep = ok & (counts >= 2) & ~zero_var.unsqueeze(-1)
    return torch.where(keep, deviations, torch.zeros((), dtype=deviations.dtype, device=deviations.device))


def zero_variance_groups(scores: ScoresLike, group_size: int, valid: ValidLike = None) -> torch.Tensor:
    """Which groups carry no learning signal: all valid scores equal, or fewer than 2 valid.

    Such groups get advantage 0 from every group estimator here; DAPO's dynamic sampling
    drops them and samples more prompts instead. Scores count as equal when
    ``max - min <= ZERO_VARIANCE_TOL`` in float64.

    Args:
        scores: ``B`` rewards (tensor or list).
        group_size: ``G >= 2`` completions per prompt, consecutive rows.
        valid: optional ``B`` bool, completions whose reward could be computed.

    Returns:
        ``B // G`` bool tensor.
    """
    s = _as_scores(scores)
    n_groups = _check_groups("zero_variance_groups", s.shape[0], group_size)
    ok = _as_valid(valid, s).view(n_groups, group_size)
    s64 = s.to(torch.float64).view(n_groups, group_size)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=s.device)
    top = torch.where(ok, s64, -inf).amax(-1)
    bottom = torch.where(ok, s64, inf).amin(-1)
    few = ok.sum(-1) < 2
    # where: with fewer than 2 valid, top - bottom may be -inf - inf = nan.
    return few | (torch.where(few, torch.zeros_like(top), top - bottom) <= ZERO_VARIANCE_TOL)


def group_normalized_advantages(
    scores: ScoresLike,
    group_size: int,
    scale: str = "group",
    eps: float = 1e-4,
    valid: ValidLike = None,
) -> torch.Tensor:
    """GRPO's advantage ``(r_i - mean_group(r)) / (std + eps)``, one number per completion.

    The mean and std are over the *valid* members of the group; std is the unbiased
    (``n - 1``) sample standard deviation.

    - ``scale="group"``: std within the group (GRPO);
    - ``scale="batch"``: one std, that of all valid scores of this batch (more robust when
      groups are small; the local batch only, no DDP reduction);
    - ``scale="none"``: no division (Dr.GRPO: dividing by the group std over-weights
      prompts that are nearly always or never solved).

    Groups with fewer than 2 valid members, or whose valid scores are all equal (see
    :func:`zero_variance_groups`), give exactly 0 to all their members.

    Args:
        scores: ``B`` rewards (tensor or list; any dtype).
        group_size: ``G >= 2`` completions per prompt, consecutive rows, ``B % G == 0``.
        scale: one of :data:`ADVANTAGE_SCALES`.
        eps: added to the std (not the variance), as GRPO does.
        valid: optional ``B`` bool; invalid rows are left out and get 0.

    Returns:
        ``B`` float32 advantages (float64 for float64 scores), 0 on invalid rows.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"group_normalized_advantages: scale {scale!r} is not one of {ADVANTAGE_SCALES}")
    values, ok, counts = _grouped(scores, group_size, valid, "group_normalized_advantages")
    deviations = _centred(values, ok, counts)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    if scale == "group":
        sq = deviations.square().sum(-1, keepdim=True)
        var = torch.where(counts >= 2, sq / (counts - 1).clamp(min=1), zero)
        deviations = deviations / (var.sqrt() + eps)
    elif scale == "batch":
        n = ok.sum().to(values.dtype)
        batch_mean = values.sum() / n.clamp(min=1)
        sq = torch.where(ok, values - batch_mean, zero).square().sum()
        var = torch.where(n >= 2, sq / (n - 1).clamp(min=1), zero)
        deviations = deviations / (var.sqrt() + eps)
    zero_var = zero_variance_groups(scores, group_size, valid).to(values.device)
    return _without_signal(deviations, ok, counts, zero_var).reshape(-1)


def leave_one_out_advantages(scores: ScoresLike, group_size: int, valid: ValidLike = None) -> torch.Tensor:
    """RLOO: ``r_i - mean of the other valid members of the group``.

    Unbiased, since the baseline does not depend on ``r_i``. Written as
    ``n / (n - 1) * (r_i - mean)`` (the same number) so it needs one centring only.

    Args:
        scores: ``B`` rewards; group_size: ``G >= 2``, ``B % G == 0``; valid: optional ``B`` bool.

    Returns:
        ``B`` float32 advantages (float64 for float64 scores); 0 on invalid rows, on a
        valid row alone in its group, and in groups whose valid scores are all equal.
    """
    values, ok, counts = _grouped(scores, group_size, valid, "leave_one_out_advantages")
    deviations = _centred(values, ok, counts) * (counts / (counts - 1).clamp(min=1))
    zero_var = zero_variance_groups(scores, group_size, valid).to(values.device)
    return _without_signal(deviations, ok, counts, zero_var).reshape(-1)


def group_mean_baseline(scores: ScoresLike, group_size: int, valid: ValidLike = None) -> torch.Tensor:
    """``r_i - mean of the group's valid scores`` (REINFORCE++-baseline's first step).

    Args:
        scores: ``B`` rewards; group_size: ``G >= 2``, ``B % G == 0``; valid: optional ``B`` bool.

    Returns:
        ``B`` float32 (float64 for float64 scores); 0 on invalid rows, on a valid row
        alone in its group, and in groups whose valid scores are all equal.
    """
    values, ok, counts = _grouped(scores, group_size, valid, "group_mean_baseline")
    zero_var = zero_variance_groups(scores, group_size, valid).to(values.device)
    return _without_signal(_centred(values, ok, counts), ok, counts, zero_var).reshape(-1)


def reinforce_pp_advantages(
    scores: ScoresLike,
    mask: torch.Tensor,
    kl: Optional[torch.Tensor] = None,
    kl_coef: Union[float, torch.Tensor] = 0.0,
    valid: ValidLike = None,
    eps: float = 1e-8,
    all_reduce: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]] = None,
) -> torch.Tensor:
    """REINFORCE++ token advantages: undiscounted returns, whitened over the whole batch.

    Per-token reward ``-kl_coef * kl_t`` on valid tokens plus the row's score on its last
    valid token; the return is the reverse cumulative sum (``gamma = 1``) over the valid
    tokens; then the returns are whitened (mean shifted, unbiased variance) over all valid
    tokens of valid rows. No group is needed (one completion per prompt works); for
    REINFORCE++-baseline pass scores already centred by :func:`group_mean_baseline`.

    Args:
        scores: ``B`` rewards.
        mask: ``B x R`` bool/0-1 tokens that count (any pattern: left or right padding).
        kl: optional ``B x R`` per-token KL estimates (see :func:`kl_penalty`); garbage at
            masked positions is ignored.
        kl_coef: the KL coefficient beta.
        valid: optional ``B`` bool; invalid rows are 0 and left out of the statistics.
        eps: added to the variance when whitening.
        all_reduce: under DDP, a sum over ranks (see :func:`masked_whiten`), so the
            statistics are those of the global batch; every rank must call.

    Returns:
        ``B x R`` float32 (float64 if ``scores`` or ``kl`` is float64), 0 at masked
        positions and on invalid rows.
    """
    s = _as_scores(scores).to(mask.device)
    if mask.dim() != 2 or mask.shape[0] != s.shape[0]:
        raise ValueError(
            f"reinforce_pp_advantages: expected B scores and a B x R mask, got {tuple(s.shape)} and {tuple(mask.shape)}"
        )
    if kl is not None and kl.shape != mask.shape:
        raise ValueError(f"reinforce_pp_advantages: kl {tuple(kl.shape)} must match the mask {tuple(mask.shape)}")
    dtype = _compute_dtype(s, *(() if kl is None else (kl,)))
    ok = _as_valid(valid, s)
    tokens = mask.bool() & ok.unsqueeze(-1)
    kl_t = torch.zeros(mask.shape, dtype=dtype, device=mask.device) if kl is None else kl.to(dtype)
    rewards = per_token_rewards(_masked_values(s, ok, dtype), kl_t, tokens, kl_coef)
    # Masked rewards are 0, so a plain reverse sum over every position is the sum over
    # the row's later valid tokens, whatever the padding pattern.
    returns = discounted_cumsum(rewards, 1.0, reverse=True)
    return masked_whiten(returns, tokens, shift_mean=True, eps=eps, all_reduce=all_reduce)


def soft_overlong_penalty(
    lengths: Union[torch.Tensor, Sequence[int]], max_length: int, cache_length: int
) -> torch.Tensor:
    """DAPO's soft overlong punishment, added to the reward of long completions.

    With ``L`` the response length and ``S = max_length - cache_length`` the start of the
    soft zone: 0 for ``L <= S``; ``(S - L) / cache_length`` (falling linearly from 0 to
    -1) for ``S < L <= max_length``; -1 beyond ``max_length``.

    Args:
        lengths: ``B`` response lengths in tokens.
        max_length: the generation limit.
        cache_length: the width of the soft zone, ``0 < cache_length <= max_length``.

    Returns:
        ``B`` float32 penalties in ``[-1, 0]`` (float64 for float64 lengths).
    """
    if not 0 < cache_length <= max_length:
        raise ValueError(
            f"soft_overlong_penalty: need 0 < cache_length <= max_length, got cache_length={cache_length}, "
            f"max_length={max_length}"
        )
    L = torch.as_tensor(lengths)
    L = L.to(_compute_dtype(L))
    start = max_length - cache_length
    ramp = (start - L) / cache_length
    zero = torch.zeros((), dtype=L.dtype, device=L.device)
    minus_one = torch.full((), -1.0, dtype=L.dtype, device=L.device)
    return torch.where(L <= start, zero, torch.where(L <= max_length, ramp, minus_one))
