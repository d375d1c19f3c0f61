"""RLOO: REINFORCE leave-one-out (Ahmadian et al. 2024, "Back to Basics", arXiv 2402.14740)."""

from __future__ import annotations

from ift.objectives.critic_free import CriticFreeRL, RewardArgument


class RLOO(CriticFreeRL):
    """RLOO: each response's baseline is the mean reward of the *other* responses to its
    prompt, ``A_i = r_i - (1 / (G - 1)) sum_{j != i} r_j``, with the KL to the reference in
    the reward (k1, ``r_i - beta sum_t KL_t``, no gradient through it), and REINFORCE on the
    whole response: the token losses are summed, divided by the constant
    ``G x max_new_tokens`` (``seq-mean-token-sum-norm``; the paper's sum up to that constant).
    beta 0.05 is TRL's RLOO default.

    Args:
        advantage_estimator: ``rloo``.
        beta: the KL coefficient in the reward (0.05).
        kl_estimator: ``k1``.
        kl_placement: ``reward``.
        loss_aggregation: ``seq-mean-token-sum-norm``.
    """

    def __init__(self, reward: RewardArgument = None, *, advantage_estimator: str = "rloo", beta: float = 0.05,
                 kl_estimator: str = "k1", kl_placement: str = "reward",
                 loss_aggregation: str = "seq-mean-token-sum-norm", **kwargs):
        super().__init__(reward, advantage_estimator=advantage_estimator, beta=beta, kl_estimator=kl_estimator,
                         kl_placement=kl_placement, loss_aggregation=loss_aggregation, **kwargs)
