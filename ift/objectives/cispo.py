"""CISPO: clipped importance-sampling policy optimization (MiniMax-M1, arXiv 2506.13585)."""

from __future__ import annotations

from ift.objectives.critic_free import CriticFreeRL, RewardArgument


class CISPO(CriticFreeRL):
    """CISPO: every token keeps its gradient; only its importance weight is clipped, and
    only from above: ``-sg(min(rho, epsilon_high)) A log pi(o_t)``. GRPO's group-normalised
    advantages, ``token-mean`` aggregation, no KL term. ``epsilon_high`` 5 is the value TRL
    and ScaleRL use (the paper tunes it and sets no lower bound).

    Args:
        policy_loss: ``cispo``.
        epsilon_high: the largest importance weight (5).
        loss_aggregation: ``token-mean``.
        beta: 0.
    """

    def __init__(self, reward: RewardArgument = None, *, policy_loss: str = "cispo", epsilon_high: float = 5.0,
                 loss_aggregation: str = "token-mean", beta: float = 0.0, **kwargs):
        super().__init__(reward, policy_loss=policy_loss, epsilon_high=epsilon_high,
                         loss_aggregation=loss_aggregation, beta=beta, **kwargs)
