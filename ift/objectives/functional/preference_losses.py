"""Preference objectives: DPO and ORPO, per pair, from sequence log-probabilities.

Formulas: ``docs/objectives.md`` ("DPO and ORPO"). Shapes: ``B`` pairs. Every function
computes in float32 (float64 stays float64) whatever the input dtype.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ift.objectives.functional.masked_stats import _compute_dtype
from ift.objectives.functional.token_losses import label_logprobs, label_mask, sequence_mean

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
