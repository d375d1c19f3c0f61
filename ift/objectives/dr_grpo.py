"""Dr.GRPO: GRPO done right (Liu et al. 2025, arXiv 2503.20783, and its oat code)."""

from __future__ import annotations

from ift.objectives.critic_free import CriticFreeRL, RewardArgument


class DrGRPO(CriticFreeRL):
    """Dr.GRPO removes GRPO's two length and difficulty biases: the advantage is
    ``r - mean_G r`` (no division by the std) and the token losses are summed and divided by
    a constant, ``G x max_new_tokens`` (``seq-mean-token-sum-norm``), not by each response's
    length.

    What this option does, exactly (libraries differ): both changes above together, and
    beta 0 (no KL term, no reference pass), as in the paper's runs. TRL's
    ``loss_type="dr_grpo"`` changes the aggregation only and keeps the std scaling unless
    ``scale_rewards`` is set too.

    Args:
        scale_rewards: ``none``: the mean-only advantage.
        loss_aggregation: ``seq-mean-token-sum-norm`` with the constant ``max_new_tokens``.
        beta: 0 (no KL to the reference).
    """

    def __init__(self, reward: RewardArgument = None, *, scale_rewards: str = "none",
                 loss_aggregation: str = "seq-mean-token-sum-norm", beta: float = 0.0, **kwargs):
        super().__init__(reward, scale_rewards=scale_rewards, loss_aggregation=loss_aggregation, beta=beta, **kwargs)
