"""The mismatch between the engine that sampled a rollout and the trainer, and its correction.

A rollout sampled by another engine (vLLM) is drawn from ``π_engine``, whose log-probs differ from
the trainer's ``π_old`` in the last bits (other kernels, other precision) or more (stale weights, a
bug). The update's ratio stays ``π / π_old`` (the trainer's own log-probs); the samples are then
reweighted by the truncated importance-sampling (TIS) weight

    w_t = min(exp(log π_old(y_t) − log π_engine(y_t)), C)

per token (``level="token"``), or, for a sequence-level ratio (GSPO),
``w = min(exp(mean_t (log π_old − log π_engine)), C)`` per response (``level="sequence"``).
``w`` carries no gradient and multiplies the advantages: every surrogate here is positively
homogeneous in the advantage (``min(rA, clip(r)A)`` and its relatives), so this is ``w`` times
the per-token loss.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

LEVELS = ("token", "sequence")


def engine_correction(old_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor,
                      cap: Optional[float], level: str = "token") -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
    """``(weights, metrics)`` for ``B x R`` trainer and engine log-probs of the sampled tokens.

    ``weights`` is ``B x R`` (``level="token"``, 0 on masked tokens) or ``B`` (``"sequence"``),
    None when ``cap`` is None (no correction). ``metrics``: ``engine/logprob_diff_mean`` and
    ``engine/logprob_diff_max`` (|log π_old − log π_engine| over the valid tokens) and, with a
    correction, ``engine/tis_weight_mean`` and ``engine/tis_truncated`` (the share of weights cut
    at ``cap``). A batch without a valid token gives zeros.
    """
    if level not in LEVELS:
        raise ValueError(f"engine_correction: level {level!r} is not one of {LEVELS}")
    if old_logprobs.shape != engine_logprobs.shape or old_logprobs.shape != mask.shape:
        raise ValueError(f"engine_correction: shapes differ: trainer {tuple(old_logprobs.shape)}, engine "
                         f"{tuple(engine_logprobs.shape)}, mask {tuple(mask.shape)}")
    mask = mask.bool()
    diff = (old_logprobs.float() - engine_logprobs.float()).masked_fill(~mask, 0.0)
    count = mask.sum()
    zero = diff.new_zeros(())
    metrics = {
        "engine/logprob_diff_mean": diff.abs().sum() / count if count > 0 else zero,
        "engine/logprob_diff_max": diff.abs().max() if count > 0 else zero,
    }
    if cap is None:
        return None, metrics
    if level == "token":
        raw = diff.exp()
        weights = raw.clamp(max=cap).masked_fill(~mask, 0.0)
        valid = mask
    else:
        lengths = mask.sum(-1)
        mean = diff.sum(-1) / lengths.clamp(min=1)
        raw = mean.exp()
        weights = raw.clamp(max=cap).masked_fill(lengths == 0, 0.0)
        valid = lengths > 0
    n = valid.sum()
    metrics["engine/tis_weight_mean"] = weights[valid].mean() if n > 0 else zero
    metrics["engine/tis_truncated"] = (raw[valid] > cap).float().mean() if n > 0 else zero
    return weights, metrics
