"""GRPO: group-relative policy optimization (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300)."""

from __future__ import annotations

from ift.objectives.critic_free import CriticFreeRL, RewardArgument


class GRPO(CriticFreeRL):
    """GRPO as the paper defines it: advantages ``(r - mean_G r) / (std_G r + eps)``, PPO's
    clipped ratio per token (epsilon 0.2), the k3 KL to the reference in the loss with beta
    0.04, each response's token mean averaged over responses (``seq-mean-token-mean``).

    Defaults from DeepSeekMath §4.1–4.2 (epsilon 0.2, beta 0.04, one update per rollout),
    except ``num_generations``: the paper samples 64 per prompt; 8 is a compute choice (set
    it). ``advantage_eps`` is TRL's 1e-4. Every other option of :class:`CriticFreeRL` can be
    given too.

    Args:
        beta: KL coefficient of the k3 term in the loss (the paper's 0.04; 0 skips the reference).
        loss_aggregation: the paper's ``seq-mean-token-mean``.
    """

    def __init__(self, reward: RewardArgument = None, *, beta: float = 0.04, loss_aggregation: str = "seq-mean-token-mean", **kwargs):
        super().__init__(reward, beta=beta, loss_aggregation=loss_aggregation, **kwargs)
