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

from ift.core.constants import IGNORE_INDEX  # noqa: F401  (re-exported: other code reads it here)
from ift.core.forward import position_ids_from_mask  # noqa: F401  (re-exported)
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


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension, in float32."""
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def token_losses_and_mask(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(l_t, m_t)``: per-token NLL (``B x (T-1)``, 0 where masked) and the label mask."""
    return -label_logprobs(logits, labels), label_mask(labels)


# --------------------------------------------------------------------------------------
# PPO with verifiable rewards (docs/objectives.md, "PPO"). Shapes: ``B`` rollouts, ``R`` response
# tokens. Position ``t`` of a ``B x R`` tensor is about response token ``t`` (its
# log-prob, its value, its reward). Every function computes in float32 (float64 stays
# float64) whatever the input precision, and never lets values on masked positions
# (which may be garbage, even inf/nan) leak into a result.
# --------------------------------------------------------------------------------------

from typing import Callable, Optional, Sequence, Union  # noqa: E402

KL_ESTIMATORS = ("k1", "k2", "k3")


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is never used for sums)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _masked_values(x: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype`` with masked positions set to 0 (``where``, so nan/inf there vanish)."""
    return torch.where(mask.bool(), x.to(dtype), torch.zeros((), dtype=dtype, device=x.device))


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


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is true.

    Args:
        x: any shape, any float dtype (computed in float32; float64 stays float64).
        mask: same shape as ``x``, bool or 0/1.
        dim: reduce this dimension only (result has it removed); ``None`` reduces all.

    Returns:
        A 0-dim tensor (``dim=None``) or ``x``'s shape without ``dim``. Where no entry is
        valid the mean is 0 (not nan), like :func:`sequence_mean`.
    """
    dtype = _compute_dtype(x)
    values = _masked_values(x, mask, dtype)
    counts = mask.bool().to(dtype)
    if dim is None:
        return values.sum() / counts.sum().clamp(min=1)
    return values.sum(dim) / counts.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over all entries where ``mask`` is true (a 0-dim float32 tensor).

    ``unbiased`` divides by ``n - 1`` (Bessel), else by ``n``. With no valid entry, or a
    single one when ``unbiased``, the variance is undefined and 0 is returned, so that
    whitening such a batch gives zeros rather than nan.
    """
    dtype = _compute_dtype(x)
    n = mask.bool().sum().to(dtype)
    mean = masked_mean(x, mask)
    sq = (_masked_values(x, mask, dtype) - mean).square()
    total = torch.where(mask.bool(), sq, torch.zeros((), dtype=dtype, device=x.device)).sum()
    denom = n - 1 if unbiased else n
    return torch.where(denom > 0, total / denom.clamp(min=1), torch.zeros((), dtype=dtype, device=x.device))


def _reduce(all_reduce: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]], t: torch.Tensor) -> torch.Tensor:
    """Apply a user all-reduce (sum) that either returns the result or sums in place (returns None)."""
    if all_reduce is None:
        return t
    out = all_reduce(t)
    return t if out is None else out


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    all_reduce: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]] = None,
    unbiased: bool = True,
) -> torch.Tensor:
    """Normalise ``x`` to mean 0 and variance 1 over its valid entries.

    ``(x - mean) / sqrt(var + eps)`` with ``mean`` and ``var`` (see :func:`masked_var`)
    taken over the entries where ``mask`` is true only. ``shift_mean=False`` rescales the
    spread but adds the mean back (``(x - mean) / std + mean``, as TRL and torchtune do
    for rewards). Masked positions are 0 in the output.

    Under DDP, pass ``all_reduce``: a callable that sums a tensor over all processes and
    returns the sum (e.g. ``lambda t: strategy.reduce(t, reduce_op="sum")``) or sums it in
    place and returns None (``torch.distributed.all_reduce``). The mean and variance are
    then those of the valid entries of every rank together (two collectives: sums and
    counts, then squared deviations). Every rank must call this function, even one
    whose mask is empty.

    Args:
        x: ``B x R`` (any shape) values, e.g. advantages; any float dtype.
        mask: same shape, bool or 0/1.

    Returns:
        float32 (float64 for float64 input) tensor of ``x``'s shape.
    """
    dtype = _compute_dtype(x)
    valid = mask.bool()
    values = _masked_values(x, valid, dtype)
    stats = torch.stack([values.sum(), valid.sum().to(dtype)])
    stats = _reduce(all_reduce, stats)
    total, n = stats[0], stats[1]
    mean = total / n.clamp(min=1)
    sq = torch.where(valid, (values - mean).square(), torch.zeros((), dtype=dtype, device=x.device)).sum()
    sq = _reduce(all_reduce, sq.reshape(1)).reshape(())
    denom = n - 1 if unbiased else n
    var = torch.where(denom > 0, sq / denom.clamp(min=1), torch.zeros((), dtype=dtype, device=x.device))
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(valid, whitened, torch.zeros((), dtype=dtype, device=x.device))


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
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
        ``(advantages, returns)``, both ``B x R`` float32 (float64 for float64 input),
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
    return advantages, returns


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


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        ``(loss, clipfrac, approx_kl)``, 0-dim float32. ``clipfrac`` is the share of
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
    return loss, clipfrac, approx_kl


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: Optional[float],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: ``0.5 max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2)``.

    Token-mean within each sequence, then mean over sequences with a valid token.
    ``clip_eps=None`` gives the plain ``0.5 (V - R)^2``.

    Args:
        values: ``B x R`` current value predictions (with gradient).
        old_values: ``B x R`` values at rollout time.
        returns: ``B x R`` GAE returns (see :func:`gae`).
        mask: ``B x R`` bool/0-1 valid response tokens.

    Returns:
        ``(loss, clipfrac)``, 0-dim float32; ``clipfrac`` (detached) is the share of valid
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
    return loss, clipfrac


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


# --------------------------------------------------------------------------------------
# Preference objectives: DPO and ORPO (docs/objectives.md, "DPO and ORPO"). Shapes: ``B`` pairs.
# Every function computes in float32 (float64 stays float64) whatever the input dtype.
# --------------------------------------------------------------------------------------

#: ORPO's odds are computed from ``p = exp(logp)`` with ``logp`` capped at
#: ``log(1 - ORPO_MAX_PROB_GAP)``: the odds of a certain sequence (``p = 1``) are infinite,
#: so the cap keeps the log-odds (about 13.8 at most) and their gradient finite.
ORPO_MAX_PROB_GAP = 1e-6


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Log-probability of each sequence's supervised tokens: ``B`` float32.

    ``average=False`` gives ``sum_t m_t log p(x_{t+1} | x_{<=t})`` (DPO);
    ``average=True`` the per-token mean over the row's supervised tokens (ORPO).
    A row without a supervised token gives 0. Padding may be on either side.

    Args:
        logits: ``B x T x V`` model outputs (any float dtype; computed in float32).
        labels: ``B x T`` token ids, ``-100`` where not supervised.
    """
    logps = label_logprobs(logits, labels)  # 0 where the label is masked
    if average:
        return sequence_mean(logps, label_mask(labels))
    return logps.sum(-1)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct Preference Optimization, per pair.

    With ``h = (logπ(y_w) - logπ_ref(y_w)) - (logπ(y_l) - logπ_ref(y_l))`` (summed
    sequence log-probs):
    ``loss = -(1 - ε) log σ(β h) - ε log σ(-β h)``; ``ε = label_smoothing`` (0: plain DPO,
    > 0: the "conservative DPO" that assumes a share ε of flipped labels).

    Args:
        policy_chosen_logps: ``B`` (with gradient).
        policy_rejected_logps: ``B`` (with gradient).
        reference_chosen_logps: ``B`` (no gradient needed).
        reference_rejected_logps: ``B``.
        beta: inverse temperature β (> 0; 0.1 in the paper).
        label_smoothing: ε in ``[0, 0.5)``.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``B``: the per-pair losses
        (take their mean for a batch loss) and the implicit rewards
        ``β (logπ - logπ_ref)`` of each side, detached.
    """
    if beta <= 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    dtype = _compute_dtype(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    chosen = policy_chosen_logps.to(dtype) - reference_chosen_logps.to(dtype)
    rejected = policy_rejected_logps.to(dtype) - reference_rejected_logps.to(dtype)
    logits = beta * (chosen - rejected)
    losses = -F.logsigmoid(logits)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate everywhere (Mächler's two branches:
    ``log(-expm1(x))`` near 0, ``log1p(-exp(x))`` below ``-log 2``). Each branch is fed
    only inputs where it is finite, so gradients never become nan. ``x = 0`` gives -inf."""
    cut = -math.log(2.0)
    near = torch.log(-torch.expm1(torch.clamp(x, min=cut)))
    far = torch.log1p(-torch.exp(torch.clamp(x, max=cut)))
    return torch.where(x > cut, near, far)


def log_odds(logps: torch.Tensor, max_prob_gap: float = ORPO_MAX_PROB_GAP) -> torch.Tensor:
    """``log(p / (1 - p)) = logp - log(1 - exp(logp))`` from log-probabilities (float32).

    ``logps`` are capped at ``log(1 - max_prob_gap)`` first (see :data:`ORPO_MAX_PROB_GAP`),
    so a certain sequence gives a large finite value, not inf."""
    dtype = _compute_dtype(logps)
    capped = torch.clamp(logps.to(dtype), max=math.log1p(-max_prob_gap))
    return capped - log1mexp(capped)


def orpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    beta: float = 0.25,
    chosen_nll: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Odds Ratio Preference Optimization, per pair.

    ``loss = NLL(y_w) - β log σ(log-odds(y_w) - log-odds(y_l))`` where the log-probs are
    per-token means over each response (:func:`sequence_logprobs` with ``average=True``)
    and ``odds(p) = p / (1 - p)``.

    Args:
        chosen_logps: ``B`` per-token-mean log-probs of the chosen responses (with gradient).
        rejected_logps: ``B`` the same for the rejected responses.
        beta: weight of the odds-ratio term (0.25 in the paper's baseline).
        chosen_nll: ``B`` SFT loss of the chosen responses; default ``-chosen_logps``
            (the per-sequence token-mean NLL, SFT's loss).

    Returns:
        ``(losses, ratio_losses, log_odds_ratio)``, each ``B``: the per-pair total loss, the
        odds-ratio part ``-log σ(...)`` (before β) and the log-odds ratio (detached).
    """
    if beta < 0:
        raise ValueError(f"orpo_loss: beta must be >= 0, got {beta}")
    dtype = _compute_dtype(chosen_logps, rejected_logps)
    ratio = log_odds(chosen_logps.to(dtype)) - log_odds(rejected_logps.to(dtype))
    ratio_losses = -F.logsigmoid(ratio)
    nll = -chosen_logps.to(dtype) if chosen_nll is None else chosen_nll.to(dtype)
    return nll + beta * ratio_losses, ratio_losses, ratio.detach()
