"""DAPO: decoupled clip and dynamic sampling policy optimization (Yu et al. 2025, arXiv 2503.14476)."""

from __future__ import annotations

from ift.objectives.critic_free import CriticFreeRL, RewardArgument


class DAPO(CriticFreeRL):
    """DAPO: GRPO's advantages with four changes, each its own option here.

    - clip-higher: ``epsilon_low`` 0.2, ``epsilon_high`` 0.28;
    - dynamic sampling: groups whose rewards all agree give no gradient; they are drawn
      again (here: the same prompts on new streams, up to ``max_resample_rounds``; the paper
      draws new prompts) and what stays flat is logged (``groups_dropped``, ``groups_filled``);
    - ``token-mean`` aggregation over every token of the optimizer step;
    - overlong reward shaping: the soft length penalty, ``L_max`` = ``max_new_tokens`` and a
      ramp of ``overlong_cache_tokens`` (the paper: 4,096 of 20,480; default a fifth).

    And no KL term (beta 0). Paper values: 16 responses per prompt.

    Args:
        epsilon_high: the upper clip range (0.28).
        loss_aggregation: ``token-mean``.
        beta: 0.
        dynamic_sampling: on.
        overlong: ``soft`` (the length penalty); ``mask`` leaves truncated responses out instead.
    """

    def __init__(self, reward: RewardArgument = None, *, epsilon_high: float = 0.28, loss_aggregation: str = "token-mean",
                 beta: float = 0.0, dynamic_sampling: bool = True, overlong: str = "soft", **kwargs):
        super().__init__(reward, epsilon_high=epsilon_high, loss_aggregation=loss_aggregation, beta=beta,
                         dynamic_sampling=dynamic_sampling, overlong=overlong, **kwargs)
