"""The typed container of one rollout, and the base of objectives that learn from rollouts.

The container: what was sampled, and everything computed
from it once (old log-probs, reference log-probs, values, rewards, advantages).

Shapes: ``B`` rollouts (prompts x samples per prompt), ``P`` prompt length (left-padded),
``R`` response length (right-padded after EOS), ``T = P + R``. Position ``t`` of a
``B x R`` tensor is about response token ``t``: its log-prob, the value of the state
that emitted it, its reward.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from ift.core.constants import TRAINS_ON_PROMPTS
from ift.objectives.base import Objective
from ift.objectives.contract import Capabilities, StepContext, StepResult


@dataclass
class Rollout:
    """One batch of sampled responses with everything PPO needs to learn from it."""

    #: ``B x T`` long: left-padded prompt followed by the response (pad after EOS).
    input_ids: torch.Tensor
    #: ``B x T`` long: 1 on real prompt tokens and valid response tokens (up to and with EOS).
    attention_mask: torch.Tensor
    #: ``B x R`` long: the generated tokens only; pad id after a row's first EOS.
    response_ids: torch.Tensor
    #: ``B x R`` bool: tokens that count (up to and including the first EOS; all when no EOS).
    response_mask: torch.Tensor
    #: ``B x R`` float32: log-probs of the sampled tokens under the policy at rollout time.
    old_logprobs: torch.Tensor
    #: ``B x R`` float32: the same under the frozen reference policy.
    ref_logprobs: torch.Tensor
    #: ``B x R`` float32: value estimates at rollout time (state before each response token).
    values: torch.Tensor
    #: ``B x R`` float32: per-token rewards, ``-beta KL_t`` plus the score on the last valid token.
    rewards: torch.Tensor
    #: ``B x R`` float32: GAE advantages (whitened when the objective asks), 0 on masked tokens.
    advantages: torch.Tensor
    #: ``B x R`` float32: GAE returns (``advantages + values`` before whitening), the value targets.
    returns: torch.Tensor
    #: ``B x R`` float32: per-token KL estimate between policy and reference (before beta).
    kl: torch.Tensor
    #: ``B`` float32: the reward's score of each response (nan/inf already replaced by 0).
    scores: torch.Tensor
    #: ``B`` bool: whether the response emitted EOS (False: it hit ``max_new_tokens``).
    ended_with_eos: torch.Tensor
    #: ``B`` prompt texts (repeated once per sample).
    prompts: List[str] = field(default_factory=list)
    #: ``B`` decoded responses (special tokens removed), as the reward saw them.
    responses: List[str] = field(default_factory=list)
    #: ``B`` data rows the prompts came from (gold ``answer`` etc.).
    examples: List[Dict[str, Any]] = field(default_factory=list)
    #: how many scores were nan/inf and replaced by 0.
    n_nan_rewards: int = 0
    #: the KL coefficient beta used for :attr:`rewards`.
    kl_coef: float = 0.0
    #: statistics of the whole rollout (``score``, ``kl``, ``eos_rate``, timings, ...), for logging.
    metrics: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.response_ids.shape[0])

    @property
    def prompt_length(self) -> int:
        """``P``: the response starts at column ``P`` of :attr:`input_ids`."""
        return int(self.input_ids.shape[1] - self.response_ids.shape[1])

    def select(self, index: torch.Tensor) -> "Rollout":
        """The rollouts at ``index`` (a mini-batch); list fields follow the tensors."""
        picked: Dict[str, Any] = {}
        rows = index.tolist()
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, torch.Tensor):
                picked[item.name] = value[index.to(value.device)]
            elif isinstance(value, list):
                picked[item.name] = [value[i] for i in rows] if value else []
            else:
                picked[item.name] = value
        return Rollout(**picked)


class RolloutObjective(Objective):
    """Base of objectives that learn from responses they sample themselves (PPO).

    One training batch of prompts is one iteration: :meth:`rollout` collects and scores
    responses without gradient, :meth:`loss_on_rollout` is the loss (with gradient) of the
    current policy on (a mini-batch of) that rollout. :meth:`training_step` takes its own
    optimizer steps from them. A :class:`~ift.objectives.Mix` recognises this base and uses
    one rollout and one ``loss_on_rollout`` per batch instead, in its single step.
    """

    trains_on = TRAINS_ON_PROMPTS

    capabilities = Capabilities(manual_optimization=True)
    #: A base to build on, not an objective to train with (left out of the list of objectives).
    is_base = True

    def rollout(self, context: StepContext, batch: Dict[str, Any]) -> Rollout:
        """Sample, score and evaluate one batch of prompts (no gradient)."""
        raise NotImplementedError

    def loss_on_rollout(self, context: StepContext, rollout: Rollout) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``(loss, metrics)`` of the current policy on ``rollout``, the loss with gradient."""
        raise NotImplementedError

    def validation_loss(self, context: StepContext, batch: Dict[str, Any]) -> Optional[StepResult]:
        return None  # no loss on a fixed batch; the module logs the NLL and accuracy
