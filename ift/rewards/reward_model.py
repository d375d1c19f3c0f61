"""A learned reward: the scalar output of a sequence-classification model."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch

from ift.rewards.base import Reward


class RewardModelScore(Reward):
    """Score ``prompt + response`` with an ``AutoModelForSequenceClassification``.

    The score is the logit of label ``label_index`` (0: the single logit of a
    ``num_labels=1`` reward model). The model and tokenizer are loaded on first use, so
    building the reward (e.g. by LightningCLI) is cheap.

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
        model = AutoModelForSequenceClassification.from_pretrained(self.model_name_or_path)
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
