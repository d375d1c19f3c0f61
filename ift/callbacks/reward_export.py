"""Export a reward model (a causal LM's trunk + :class:`~ift.objectives.RewardHead`) as a
Hugging Face ``AutoModelForSequenceClassification`` folder with one label.

Hugging Face's sequence-classification models (GPT-2, Llama and the generic ones) run the
same trunk as the causal LM, apply a bias-free ``score`` linear layer to the last hidden
state and read it at the rightmost token that is not ``pad_token_id``. Copying the trunk's
weights and the head's ``w`` into ``score`` therefore gives the same reward as the trained
module, read at the last token of the text (:class:`~ift.rewards.RewardModelScore` pads
on the right with the tokenizer's pad id).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional

import torch

from ift.objectives.reward_modeling import REWARD_HEAD_KEY, RewardHead


def reward_head_of(module: torch.nn.Module) -> Optional[RewardHead]:
    """The reward head a :class:`~ift.modules.FineTuneModule` holds (trained with
    :class:`~ift.objectives.RewardModeling`), or None."""
    extras = getattr(module, "extras", None)
    if extras is None or REWARD_HEAD_KEY not in extras:
        return None
    return extras[REWARD_HEAD_KEY]


def _causal_lm_state(policy: torch.nn.Module) -> tuple:
    """``(causal LM, its weights)``: a LoRA policy's base model with the adapters merged in."""
    from ift.core.lora import is_peft_model, merged_state_dict

    if is_peft_model(policy):
        return policy.get_base_model(), merged_state_dict(policy)
    return policy, policy.state_dict()


@torch.no_grad()
def reward_model_from_policy(policy: torch.nn.Module, head: RewardHead, pad_token_id: int) -> torch.nn.Module:
    """A new ``AutoModelForSequenceClassification`` (``num_labels=1``) holding ``policy``'s
    trunk and ``head``'s weight in its ``score`` layer, in the policy's dtype, on the CPU.

    The training model is not touched. ``pad_token_id`` must be the id its tokenizer pads
    with: the model reads the reward at the last token that is not this id.
    """
    from transformers import AutoModelForSequenceClassification

    causal_lm, state = _causal_lm_state(policy)
    config = getattr(causal_lm, "config", None)
    prefix = getattr(causal_lm, "base_model_prefix", "")
    if config is None or not prefix:
        raise TypeError(f"cannot export a reward model from a {type(causal_lm).__name__}: not a Hugging Face causal LM")
    config = copy.deepcopy(config)
    config.num_labels = 1
    config.pad_token_id = pad_token_id
    config.architectures = None  # save_pretrained writes the sequence-classification class
    classifier = AutoModelForSequenceClassification.from_config(config)
    if classifier.base_model_prefix != prefix:
        raise TypeError(f"{type(classifier).__name__} keeps its trunk under {classifier.base_model_prefix!r}, "
                        f"{type(causal_lm).__name__} under {prefix!r}: cannot copy the trunk")
    score = getattr(classifier, "score", None)
    if not isinstance(score, torch.nn.Linear) or score.bias is not None or score.out_features != 1:
        raise TypeError(f"{type(classifier).__name__} has no bias-free one-output 'score' layer to hold the reward head")
    trunk = {key[len(prefix) + 1:]: value for key, value in state.items() if key.startswith(prefix + ".")}
    # strict: every trunk weight must arrive, or the exported model would score with random ones.
    classifier.base_model.load_state_dict(trunk, strict=True)
    score.weight.copy_(head.linear.weight.detach().to(score.weight))
    dtype = next(causal_lm.parameters()).dtype
    return classifier.to(device="cpu", dtype=dtype).eval()


def export_reward_model(module: Any, path: str, state_dict: Optional[Dict[str, Any]] = None) -> str:
    """Write ``module``'s policy trunk + reward head as an ``AutoModelForSequenceClassification``
    folder (``num_labels=1``, ``pad_token_id`` set) with its tokenizer at ``path``.

    Load it with ``ift.rewards.RewardModelScore(path)`` or
    ``AutoModelForSequenceClassification.from_pretrained(path)``. A tokenizer without a pad
    token is saved padding with EOS (what ``RewardModelScore`` would do), so the model's
    ``pad_token_id`` and the saved tokenizer agree. ``state_dict`` (a sharded module's
    gathered weights) is not supported yet.
    """
    if state_dict is not None:
        raise NotImplementedError("exporting a reward model trained under a sharding strategy (FSDP) is not supported; "
                                  "train with DDP or one device")
    head = reward_head_of(module)
    if head is None:
        raise ValueError("export_reward_model: the module holds no reward head (train it with RewardModeling)")
    tokenizer = copy.deepcopy(module.tokenizer)  # setting a pad token must not change the training one
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("export_reward_model: the tokenizer has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    classifier = reward_model_from_policy(module.policy, head, tokenizer.pad_token_id)
    os.makedirs(path, exist_ok=True)
    classifier.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
