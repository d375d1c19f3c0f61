"""REINFORCE++ (Hu 2025, arXiv 2501.03262) and REINFORCE++-baseline."""

from __future__ import annotations

from ift.objectives.critic_free import CriticFreeRL, RewardArgument


class ReinforcePlusPlus(CriticFreeRL):
    """REINFORCE++: per-token rewards ``-beta KL_t`` (k1, against the reference) plus the
    score on the last token, returns with gamma 1, advantages whitened over every valid
    token of the batch (over every process under DDP); PPO's clipped ratio (0.2) and
    ``token-mean`` aggregation. beta 0.01 is OpenRLHF's default KL coefficient.

    ``baseline: true`` is REINFORCE++-baseline: the group's mean score is subtracted from
    each score first (needs ``num_generations >= 2``).

    Args:
        baseline: subtract the group mean from the scores first (REINFORCE++-baseline).
        beta: the KL coefficient in the per-token reward (0.01).
        kl_estimator: ``k1``.
        kl_placement: ``reward``.
        loss_aggregation: ``token-mean``.
    """

    def __init__(self, reward: RewardArgument = None, *, baseline: bool = False, beta: float = 0.01, kl_estimator: str = "k1",
                 kl_placement: str = "reward", loss_aggregation: str = "token-mean", **kwargs):
        if "advantage_estimator" in kwargs:
            raise ValueError("ReinforcePlusPlus: the advantage estimator is set by `baseline` "
                             "(false: reinforce++, true: reinforce++-baseline); use CriticFreeRL for another one")
        self.baseline = baseline
        super().__init__(reward, advantage_estimator="reinforce++-baseline" if baseline else "reinforce++",
                         beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement,
                         loss_aggregation=loss_aggregation, **kwargs)
