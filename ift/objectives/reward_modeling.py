"""Reward modelling on preference pairs (Bradley–Terry), optionally with a language-modelling
term on the chosen response as in CodePMP (arXiv 2410.02229). See docs/objectives.md,
"Reward modelling".

The reward model is the policy's trunk with a scalar :class:`RewardHead` on its last hidden
state, read at each sequence's last real token. The head is a trainable part of the module
(``StepContext.add_trainable_part``), so it is optimized with the trunk and saved in
checkpoints; :func:`ift.callbacks.export_reward_model` writes trunk + head as a Hugging Face
``AutoModelForSequenceClassification`` folder that :class:`ift.rewards.RewardModelScore` reads.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from ift.core.forward import policy_outputs
from ift.objectives import functional as Fn
from ift.core.arguments import check_number
from ift.objectives.base import Metrics
from ift.objectives.contract import Capabilities, StepContext, StepResult
from ift.objectives.scalar_head import ScalarHead
from ift.objectives.preference import _PreferenceObjective, check_preference_batch, stacked_pair
from ift.objectives.value_functions import hidden_size_of

#: Name of the head among the module's trainable parts (``module.extras``); the export looks for it.
REWARD_HEAD_KEY = "reward_head"


class RewardHead(ScalarHead):
    """``r(h) = w · h``: one scalar per hidden state, computed in float32.

    No bias: the pairwise loss only sees reward differences, so a bias would never be
    trained, and Hugging Face's sequence-classification ``score`` layer, which the export
    fills with ``w``, has none either. The weight starts at zero, so every reward is 0 and
    the loss is ``log(1 + e^m)`` (``log 2`` without a margin) before the first update.

    Args:
        hidden_size: width of the hidden states it reads.
    """

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, bias=False)


def sequence_rewards(
    policy: torch.nn.Module,
    head: RewardHead,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    eos_token_id: Optional[int] = None,
) -> Tuple[torch.Tensor, Any]:
    """``(rewards, outputs)``: ``B`` float32 rewards of whole sequences (padding on either
    side) and the policy's outputs (its logits serve the language-modelling term).

    The reward is read at each row's last real token, or, with ``eos_token_id``, at the
    token before a trailing EOS (see :class:`RewardModeling`'s ``read_at_eos``).
    """
    outputs = policy_outputs(policy, input_ids, attention_mask, output_hidden_states=True)
    read_mask = attention_mask if eos_token_id is None else Fn.drop_trailing_token(input_ids, attention_mask, eos_token_id)
    last = Fn.gather_last_token(outputs.hidden_states[-1], Fn.last_token_index(read_mask))
    return head(last), outputs


class RewardModeling(_PreferenceObjective):
    """Train a reward model on preference pairs (docs/objectives.md, "Reward modelling").

    Per pair: ``-log σ(r(x, y_w) - r(x, y_l) - margin)``, plus ``lm_weight`` times the SFT
    loss (per-sequence token-mean NLL) of the chosen response; averaged over pairs. ``r`` is
    a :class:`RewardHead` on the policy's last hidden state at the sequence's last token.
    CodePMP's pre-training uses ``lm_weight=1``. Logged: ``pairwise_accuracy`` (share of
    pairs with ``r_w > r_l``), ``reward_margin`` (mean ``r_w - r_l``), ``reward_mean`` and
    ``reward_std`` (over both sides), ``reward_chosen``, ``reward_rejected``, ``bt_loss``
    and, with ``lm_weight > 0``, ``lm_loss``.

    Export the result with :class:`~ift.callbacks.ExportPretrained` (or
    :func:`~ift.callbacks.export_reward_model`): a module holding a reward head is written as
    an ``AutoModelForSequenceClassification`` folder, which
    :class:`~ift.rewards.RewardModelScore` scores with.

    Args:
        margin: ``m`` inside the sigmoid: the chosen reward should beat the rejected one by
            at least about ``m``; 0 (default) is the plain Bradley–Terry loss. Any finite
            number (a negative one lets the chosen side lose by up to about ``|m|``).
        lm_weight: weight of the language-modelling (SFT) loss on the chosen response, >= 0;
            0 (default) trains the ranking alone, CodePMP uses 1.
        read_at_eos: read the reward at a trailing EOS token. False (default) reads it at the
            token before a trailing EOS, i.e. at the last token of the response text: where
            ``RewardModelScore``, which scores decoded text without EOS, reads it too.
    """

    capabilities = Capabilities(adds_trainable_parts=True)

    def __init__(self, margin: float = 0.0, lm_weight: float = 0.0, read_at_eos: bool = False):
        self.margin = check_number("RewardModeling", "margin", margin)
        self.lm_weight = check_number("RewardModeling", "lm_weight", lm_weight, "[0, inf)")
        self.read_at_eos = bool(read_at_eos)

    def attach(self, context: StepContext) -> None:
        """Register the reward head as a trainable part of the module (optimized, checkpointed)."""
        if context.trainable_part(REWARD_HEAD_KEY) is None:
            device = next(context.policy.parameters()).device
            context.add_trainable_part(REWARD_HEAD_KEY, RewardHead(hidden_size_of(context.policy)).to(device))

    def head(self, context: StepContext) -> RewardHead:
        """The head :meth:`attach` registered."""
        part = context.trainable_part(REWARD_HEAD_KEY)
        if part is None:
            raise RuntimeError("RewardModeling: no reward head registered; the module calls attach when it builds the policy")
        return part

    def training_step(self, context: StepContext, batch: Dict[str, Any]) -> StepResult:
        eos = None if self.read_at_eos else getattr(context.tokenizer, "eos_token_id", None)
        loss, metrics = self.loss_with_head(context.policy, self.head(context), batch, eos)
        return StepResult(loss, metrics)

    def loss(self, policy: torch.nn.Module, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics]:
        raise RuntimeError(
            "RewardModeling needs its reward head: inside a FineTuneModule call training_step(context, batch); "
            "on its own call loss_with_head(policy, head, batch, eos_token_id)"
        )

    def loss_with_head(
        self, policy: torch.nn.Module, head: RewardHead, batch: Dict[str, Any], eos_token_id: Optional[int] = None
    ) -> Tuple[torch.Tensor, Metrics]:
        """Loss (with gradient into the policy and the head) and detached metrics for a
        preference batch; ``eos_token_id``: read rewards before a trailing EOS (None: at
        the last token)."""
        check_preference_batch(batch, "RewardModeling")
        ids, mask, labels = stacked_pair(batch)
        pairs = batch["chosen_input_ids"].shape[0]
        rewards, outputs = sequence_rewards(policy, head, ids, mask, eos_token_id)
        chosen, rejected = rewards[:pairs], rewards[pairs:]
        bt_losses, margins = Fn.bradley_terry_loss(chosen, rejected, self.margin)
        loss = bt_losses.mean()
        detached = rewards.detach()
        metrics: Metrics = {
            "bt_loss": loss.detach(),
            "pairwise_accuracy": (margins > 0).float().mean(),
            "reward_margin": margins.mean(),
            "reward_mean": detached.mean(),
            "reward_std": detached.std(correction=0),
            "reward_chosen": chosen.detach().mean(),
            "reward_rejected": rejected.detach().mean(),
        }
        if self.lm_weight > 0:
            token_nll, token_mask = Fn.token_losses_and_mask(outputs.logits[:pairs], labels[:pairs])
            lm_loss = Fn.weighted_token_loss(token_nll, token_mask)
            loss = loss + self.lm_weight * lm_loss
            metrics["lm_loss"] = lm_loss.detach()
        return loss, metrics
