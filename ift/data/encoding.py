"""Turn text examples into token ids with labels only on the response."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from transformers import PreTrainedTokenizerBase

from ift.core.constants import IGNORE_INDEX


class SkipExample(Exception):
    """An example that cannot be used; the reason is counted and reported, never silent."""


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, use_chat_template: bool) -> str:
    """The prompt text the model sees (a user turn plus the assistant header with a template)."""
    if not use_chat_template:
        return prompt
    if tokenizer.chat_template is None:
        raise ValueError("use_chat_template=True but the tokenizer has no chat_template")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt_text: str, use_chat_template: bool) -> List[int]:
    # Chat templates write their own BOS; plain prompts get the tokenizer's usual specials.
    return tokenizer(prompt_text, add_special_tokens=not use_chat_template)["input_ids"]


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, prompt_ids: List[int], response: str, max_length: int
) -> Dict[str, List[int]]:
    """``input_ids = prompt + response + EOS`` with labels on the response and EOS only.

    Truncation keeps the response: the prompt loses tokens from its left. A response that
    alone does not fit in ``max_length`` (with at least one prompt token) is skipped.
    """
    if not response or not response.strip():
        raise SkipExample("empty response")
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    check_known_tokens(tokenizer, response, response_ids)
    response_ids = response_ids + [tokenizer.eos_token_id]
    if len(response_ids) + 1 > max_length:
        raise SkipExample("response longer than max_length")
    room = max_length - len(response_ids)
    kept_prompt = prompt_ids[-room:] if len(prompt_ids) > room else prompt_ids
    input_ids = kept_prompt + response_ids
    labels = [IGNORE_INDEX] * len(kept_prompt) + response_ids
    return {"input_ids": input_ids, "labels": labels, "prompt_ids": kept_prompt}


def check_known_tokens(tokenizer: PreTrainedTokenizerBase, text: str, ids: List[int]) -> None:
    """Skip a response the tokenizer maps (in part) to its unknown token: the model would be
    trained to write ``<unk>`` where the text has characters its vocabulary lacks (the
    character tokenizer and non-byte-level ones do this silently; byte-level BPE never does)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or unk not in ids or (tokenizer.unk_token and tokenizer.unk_token in text):
        return
    raise SkipExample("response has characters unknown to the tokenizer (they would be trained as its unk token; "
                      "use a tokenizer that covers them, e.g. model.tokenizer char:CHARS)")


def encode_example(
    tokenizer: PreTrainedTokenizerBase,
    example: Dict[str, Any],
    max_length: int,
    use_chat_template: bool = False,
) -> Dict[str, Any]:
    """Encode a normalised example (keys ``prompt`` and any of ``response``, ``chosen``,
    ``rejected``, ``answer``). Raises :class:`SkipExample` for unusable ones."""
    prompt_ids = encode_prompt(tokenizer, render_prompt(tokenizer, example["prompt"], use_chat_template), use_chat_template)
    if len(prompt_ids) == 0:
        raise SkipExample("empty prompt")
    features: Dict[str, Any] = {"prompt": example["prompt"], "example": example}
    if example.get("response") is not None:
        pair = encode_pair(tokenizer, prompt_ids, example["response"], max_length)
        features.update(pair)
        features["response"] = example["response"]
    else:
        features["prompt_ids"] = prompt_ids[-max_length:]
    for side in ("chosen", "rejected"):
        if example.get(side) is not None:
            pair = encode_pair(tokenizer, prompt_ids, example[side], max_length)
            features[f"{side}_input_ids"] = pair["input_ids"]
            features[f"{side}_labels"] = pair["labels"]
            features.setdefault("prompt_ids", pair["prompt_ids"])
    if example.get("answer") is not None:
        features["answer"] = str(example["answer"])
    return features


def maybe_str(value: Optional[Any]) -> Optional[str]:
    return None if value is None else str(value)
