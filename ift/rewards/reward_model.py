"""A learned reward: the scalar output of a sequence-classification model.

The folder is checked when the reward is built (before any training step): it must exist,
and it must be a sequence classifier whose weights hold its classification head. A causal
LM folder (what :class:`~ift.callbacks.ExportPretrained` writes for a policy) would
otherwise load with a randomly initialised head, and PPO would train against noise with
nothing but transformers' "newly initialized" line (hidden in quiet mode) to say so. A hub
id cannot be checked offline: its weights are checked the same way when it is loaded.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Union

import torch

from ift.core.model_source import check_model_folder, looks_like_a_path
from ift.rewards.base import Reward

#: How to make a reward model, for messages.
MAKE_A_REWARD_MODEL = (
    "A reward model is an AutoModelForSequenceClassification folder with a trained score head (config.json "
    "architectures ending in ForSequenceClassification): train one with the RewardModeling objective and "
    "ift.callbacks.ExportPretrained, which writes it as <dirpath>/final, e.g. `ift fit --config "
    "configs/reward/reward_model.yaml` writes runs/reward_model/final"
)


class NotARewardModelError(ValueError):
    """A folder given as a reward model that would score with an untrained head; the message
    says what the folder is and how to make a reward model."""


def _stored_weight_names(folder: str) -> Optional[set]:
    """The names of the tensors saved in ``folder`` (safetensors, single file or sharded),
    read from the file headers; None when the weights are in another format."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            return set(json.load(handle).get("weight_map", {}))
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        from safetensors import safe_open

        with safe_open(single, "pt") as weights:
            return set(weights.keys())
    return None


def head_weight_names(config: Any) -> Optional[List[str]]:
    """The weights of the sequence classifier built from ``config`` that lie outside its
    trunk (the classification head: ``score.weight`` for GPT-2 or Llama), found by building
    the model on the meta device (no memory, no weights); None when it cannot be built so
    (the weights are then checked when loaded)."""
    from transformers import AutoModelForSequenceClassification

    try:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config)
    except Exception:  # an architecture without a meta-device build: left to the load-time check
        return None
    prefix = model.base_model_prefix + "."
    return sorted(name for name in model.state_dict() if not name.startswith(prefix))


def _refuse_missing_head(source: str, missing: Iterable[str]) -> None:
    missing = sorted(missing)
    if missing:
        raise NotARewardModelError(
            f"RewardModelScore {source!r}: the weights have no {', '.join(missing)}, so from_pretrained would "
            f"initialise them at random and every score would be noise. {MAKE_A_REWARD_MODEL}"
        )


def check_reward_model_source(source: str, label_index: int = 0) -> None:
    """Check, without loading the weights, that ``source`` can serve as a reward model.

    A local folder must exist, hold ``config.json``, name a ``*ForSequenceClassification``
    architecture with at least ``label_index + 1`` labels, and (for safetensors weights) hold
    every weight of its classification head; a name written as a path must exist. A hub id
    passes: it is checked when loaded. Raises ``FileNotFoundError`` or
    :class:`NotARewardModelError` naming the folder, what it is and how to make a reward model.
    """
    local = os.path.expanduser(source)
    if not os.path.isdir(local):
        if os.path.exists(local):
            raise NotARewardModelError(f"RewardModelScore {source!r}: {os.path.abspath(local)} is a file, not a "
                                       f"model folder. {MAKE_A_REWARD_MODEL}")
        if looks_like_a_path(source):
            raise FileNotFoundError(
                f"RewardModelScore {source!r}: no folder {os.path.abspath(local)} exists (relative paths start at "
                f"{os.getcwd()}). Train the reward model first, or give an existing folder. {MAKE_A_REWARD_MODEL}")
        return  # a hub id: checked when loaded
    check_model_folder(source, "RewardModelScore model_name_or_path")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(local)
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(name.endswith("ForSequenceClassification") for name in architectures):
        causal = any(name.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for name in architectures)
        kind = (", a causal language model (what ExportPretrained writes for a policy)" if causal else "")
        raise NotARewardModelError(
            f"RewardModelScore {source!r}: the folder holds {', '.join(architectures)}{kind}, not a sequence "
            f"classifier: loaded as one it would score with a randomly initialised classification head, and the "
            f"policy would train against noise. {MAKE_A_REWARD_MODEL}"
        )
    if label_index >= config.num_labels:
        raise ValueError(f"RewardModelScore: label_index {label_index} but {source!r} has {config.num_labels} "
                         f"label(s)")
    stored = _stored_weight_names(local)
    head = head_weight_names(config) if stored is not None else None
    if head is not None:
        _refuse_missing_head(source, set(head) - stored)


class RewardModelScore(Reward):
    """Score ``prompt + response`` with an ``AutoModelForSequenceClassification``.

    The score is the logit of label ``label_index`` (0: the single logit of a
    ``num_labels=1`` reward model). The model and tokenizer are loaded on first use, so
    building the reward (e.g. by LightningCLI) is cheap; a local folder is checked when the
    reward is built (:func:`check_reward_model_source`): a missing folder, or one that is not
    a sequence classifier with its trained head (a causal LM), stops before any training.

    Args:
        model_name_or_path: hub id or local folder of the reward model.
        tokenizer: a tokenizer object, a hub id / folder, or None for ``model_name_or_path``'s.
        batch_size: texts scored per forward pass.
        device: e.g. ``"cuda:0"``; None picks CUDA when available, else CPU.
        max_length: truncate texts to this many tokens (from the left, keeping the
            response's end); None: no truncation.
        label_index: which logit is the score.

    Padding: texts are right-padded and the model pools at the last non-pad token. A
    tokenizer without a pad token pads with EOS. The model's ``pad_token_id`` is always set
    to the tokenizer's pad id (the model must find the padding the tokenizer adds); with EOS
    padding a text whose tokenization itself ends in EOS is pooled one token early.
    Override :meth:`format_text` to apply a chat template instead of plain concatenation.
    """

    def __init__(
        self,
        model_name_or_path: str,
        tokenizer: Union[str, Any, None] = None,
        batch_size: int = 8,
        device: Optional[str] = None,
        max_length: Optional[int] = None,
        label_index: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"RewardModelScore: batch_size must be >= 1, got {batch_size}")
        self.model_name_or_path = str(model_name_or_path)
        check_reward_model_source(self.model_name_or_path, int(label_index))
        self._tokenizer_spec = tokenizer
        self.batch_size = int(batch_size)
        self.device = device
        self.max_length = max_length
        self.label_index = int(label_index)
        self._model = None
        self._tokenizer = None

    def format_text(self, prompt: str, response: str, example: Dict[str, Any]) -> str:
        """The text the reward model reads (default: ``prompt + response``)."""
        return prompt + response

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        spec = self._tokenizer_spec
        if spec is None or isinstance(spec, str):
            tokenizer = AutoTokenizer.from_pretrained(spec or self.model_name_or_path)
        else:
            tokenizer = spec
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(
                    f"RewardModelScore: the tokenizer of {self.model_name_or_path!r} has neither a pad "
                    "nor an EOS token, so batches cannot be padded; pass a tokenizer with a pad token"
                )
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, loading = AutoModelForSequenceClassification.from_pretrained(self.model_name_or_path,
                                                                            output_loading_info=True)
        # The folder was checked when built; a hub id only now: any weight the files lack
        # would score with random values.
        _refuse_missing_head(self.model_name_or_path, loading.get("missing_keys") or ())
        if self.label_index >= model.config.num_labels:
            raise ValueError(
                f"RewardModelScore: label_index {self.label_index} but {self.model_name_or_path!r} has "
                f"{model.config.num_labels} label(s)"
            )
        # The model pools at the last token that is not its pad id: that must be the id the
        # tokenizer pads with, whatever the saved config says.
        model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device).eval()
        model.requires_grad_(False)
        self._tokenizer, self._model, self._device = tokenizer, model, torch.device(device)

    @torch.inference_mode()
    def __call__(self, prompts: List[str], responses: List[str], examples: List[Dict[str, Any]]) -> List[float]:
        self._load()
        texts = [self.format_text(p, r, e) for p, r, e in zip(prompts, responses, examples)]
        if self.max_length is not None:
            self._tokenizer.truncation_side = "left"
        scores: List[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self._tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
                add_special_tokens=True,
            ).to(self._device)
            logits = self._model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            scores.extend(logits[:, self.label_index].float().cpu().tolist())
        return scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name_or_path!r}, batch_size={self.batch_size})"
