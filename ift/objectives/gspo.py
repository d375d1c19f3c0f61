"""GSPO: group sequence policy optimization (Zheng et al. 2025, arXiv 2507.18071)."""

from __future__ import annotations

from ift.objectives.critic_free import CriticFreeRL, RewardArgument


class GSPO(CriticFreeRL):
    """GSPO: one importance ratio per response, ``s_i = exp(mean_t log rho_it)``, clipped to
    ``[1 - 3e-4, 1 + 4e-4]``, the loss ``-min(s_i A_i, clip(s_i) A_i)`` averaged over
    responses; GRPO's group-normalised advantages; no KL term. With one update per rollout
    the ratio is 1: GSPO differs from GRPO only once a rollout is split into several
    mini-batches (``mini_batch_size``) or epochs.

    ``importance_sampling_level: sequence-token`` is GSPO-token (the sequence ratio's value
    with each token's gradient; the same as ``sequence`` when advantages are per response).

    Args:
        importance_sampling_level: ``sequence``.
        epsilon_low: 3e-4 (the paper's).
        epsilon_high: 4e-4 (the paper's).
        beta: 0.
    """

    def __init__(self, reward: RewardArgument = None, *, importance_sampling_level: str = "sequence", epsilon_low: float = 3e-4,
                 epsilon_high: float = 4e-4, beta: float = 0.0, **kwargs):
        super().__init__(reward, importance_sampling_level=importance_sampling_level, epsilon_low=epsilon_low,
                         epsilon_high=epsilon_high, beta=beta, **kwargs)
