"""PPO's own steps of a rollout, each a small function: log-probs with values, advantages,
its statistics. :meth:`ift.objectives.PPO.evaluate_rollout` runs them; the steps every
rollout objective shares (prompts, samples, episode ends, reference log-probs, trimming)
are in :mod:`ift.objectives.rollout_steps`.

See docs/objectives.md, section PPO, for the per-token reward, GAE and whitening.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from ift.core.distributed import all_reduce_sum_fn
from ift.objectives import functional as Fn
from ift.objectives.contract import StepContext
from ift.objectives.explained_variance import rollout_explained_variance
from ift.objectives.rollout_steps import Samples, reference_logprobs, sampled_logprobs
from ift.objectives.value_functions import ValueFunction


def logprobs_and_values(context: StepContext, value_function: ValueFunction, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor, samples: Samples, temperature: float,
                        share_prompts: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(old_logprobs, ref_logprobs, values)`` of the sampled tokens, ``B x R`` each, no gradient
    (``share_prompts``: each distinct prompt runs once, :mod:`ift.core.shared_prompts`)."""
    length = input_ids.shape[1] - samples.ids.shape[1]
    with torch.no_grad():
        logits, values = value_function.logits_and_values(context.policy, input_ids, attention_mask, length,
                                                          share_prompts)
        old_logprobs = sampled_logprobs(logits, samples.ids, temperature)
        del logits
        ref_logprobs = reference_logprobs(context, input_ids, attention_mask, samples.ids, temperature, share_prompts)
    return old_logprobs, ref_logprobs, torch.where(samples.mask, values.float(), 0.0)


def advantages_and_returns(scores: torch.Tensor, kl: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                           kl_coef: float, gamma: float, gae_lambda: float,
                           whiten: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rewards, advantages, returns)``: per-token rewards ``-beta KL_t`` plus the score on
    the last valid token, GAE, and advantages whitened over valid tokens of every process."""
    rewards = Fn.per_token_rewards(scores, kl, mask, kl_coef)
    advantages, returns = Fn.gae(rewards, values, mask, gamma, gae_lambda)
    if whiten:
        advantages = Fn.masked_whiten(advantages, mask, all_reduce=all_reduce_sum_fn())
    return rewards, advantages, returns


def ppo_rollout_metrics(rollout: Any) -> Dict[str, torch.Tensor]:
    """PPO's statistics of one rollout: KL per sequence, the KL coefficient, the value
    function's explained variance (over every process's tokens; left out when undefined)."""
    metrics = {
        "kl": rollout.kl.sum(-1).mean(),
        "kl_coef": torch.tensor(rollout.kl_coef),
    }
    # Over every process's tokens (a torchmetrics metric that gathers them), not rank 0's.
    variance = rollout_explained_variance(rollout.values, rollout.returns, rollout.response_mask)
    if torch.isfinite(variance):
        metrics["explained_variance"] = variance
    return metrics
