"""Chat data: ``messages`` lists rendered with the tokenizer's chat template.

Which tokens are supervised is found by rendering prefixes of the conversation with the
same template, so it works for any template that renders a conversation as the
concatenation of its turns (ChatML/Qwen, Llama 3, Mistral, Gemma, ...):

* ``render(messages[:i], add_generation_prompt=True)`` is everything the model reads
  before assistant turn ``i`` writes (earlier turns plus the assistant header);
* ``render(messages[:i + 1])`` is that plus the turn itself and its end-of-turn marker.

The characters between the two are what assistant turn ``i`` adds: its content and the
template's end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, EOS, ...), which the model
must learn to emit to stop. Trailing whitespace the template puts after that marker is
not supervised. The whole conversation is tokenized once (so ``input_ids`` are exactly
what the template and tokenizer produce) and a token is supervised when it starts inside
one of those character spans. Every assistant turn is supervised by default
(``assistant_turns="last"``: only the final one).

A template that re-renders earlier turns differently once later turns exist (e.g. one
that drops the reasoning of earlier turns) is not prefix-consistent: such examples are
skipped with that reason, and the data module reports them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from transformers import PreTrainedTokenizerBase

from ift.data.encoding import SkipExample
from ift.data.records import require_keys
from ift.data.datamodule import DEFAULT_ANSWER_KEY, SourceDataModule
from ift.data.fields import expect_messages
from ift.core.constants import IGNORE_INDEX

Message = Dict[str, Any]
ROLES = ("system", "user", "assistant", "tool")
ASSISTANT_TURNS = ("all", "last")


def check_messages(messages: Any) -> List[Message]:
    """``messages`` as a list of ``{role, content}`` dicts with text content, else :class:`SkipExample`."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise SkipExample("messages is not a non-empty list")
    checked = []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise SkipExample("a message is not a {role, content} object")
        if message["role"] not in ROLES:
            raise SkipExample(f"unknown role {message['role']!r}")
        if not isinstance(message["content"], str):
            raise SkipExample("non-text message content")
        checked.append({"role": message["role"], "content": message["content"]})
    return checked


def render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """The conversation as text, with the tokenizer's chat template."""
    if tokenizer.chat_template is None:
        raise ValueError(
            "chat data needs a tokenizer with a chat_template (set tokenizer.chat_template or use a chat model's tokenizer)"
        )
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as error:  # jinja raises TemplateError for e.g. non-alternating roles
        raise SkipExample(f"chat template error: {error}") from None


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], turns: str = "all"
) -> Tuple[str, List[Tuple[int, int]]]:
    """``(text, spans)``: the rendered conversation and the ``[start, end)`` character span
    that each supervised assistant turn adds (see the module docstring)."""
    if turns not in ASSISTANT_TURNS:
        raise ValueError(f"assistant_turns {turns!r} is not one of {ASSISTANT_TURNS}")
    text = render(tokenizer, messages)
    indices = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    if not indices:
        raise SkipExample("no assistant turn")
    if turns == "last":
        indices = indices[-1:]
    spans = []
    for i in indices:
        if i == 0:
            raise SkipExample("conversation starts with an assistant turn")
        if not messages[i]["content"].strip():
            raise SkipExample("empty assistant turn")
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not upto.startswith(before) or not text.startswith(upto):
            raise SkipExample("chat template is not prefix-consistent")
        end = len(upto)
        while end > len(before) and upto[end - 1].isspace():
            end -= 1
        spans.append((len(before), end))
    return text, spans


def tokenize_spans(
    tokenizer: PreTrainedTokenizerBase, text: str, spans: Sequence[Tuple[int, int]]
) -> Tuple[List[int], List[int]]:
    """``(input_ids, turn)``: ids of ``text`` and, per token, the index of the span it
    starts in (-1 outside every span)."""

    def span_of(position: int) -> int:
        for index, (start, end) in enumerate(spans):
            if start <= position < end:
                return index
        return -1

    if tokenizer.is_fast:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        turn = [span_of(start) if end > start else -1 for start, end in encoded["offset_mapping"]]
        return ids, turn
    # Slow tokenizers have no offsets: tokenize the pieces between span boundaries apart.
    cuts = sorted({0, len(text), *(p for span in spans for p in span)})
    ids, turn = [], []
    for start, end in zip(cuts, cuts[1:]):
        piece = tokenizer(text[start:end], add_special_tokens=False)["input_ids"]
        ids += piece
        turn += [span_of(start)] * len(piece)
    return ids, turn


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], max_length: int, turns: str = "all"
) -> Dict[str, Any]:
    """Token ids of a conversation with labels on its assistant turns.

    Returns ``input_ids``, ``labels`` (-100 outside supervised assistant turns),
    ``prompt_ids`` (every token before the last assistant turn: the prompt for
    generation), ``prompt`` (that text) and ``response`` (the last assistant content).
    A conversation longer than ``max_length`` loses tokens from its left; if that would
    cut into the last assistant turn the example is skipped.
    """
    text, spans = assistant_spans(tokenizer, messages, turns)
    ids, turn = tokenize_spans(tokenizer, text, spans)
    last = len(spans) - 1
    if last not in turn:
        raise SkipExample("assistant turn has no token")
    first_of_last = turn.index(last)
    if len(ids) > max_length:
        cut = len(ids) - max_length
        if first_of_last - cut < 1:
            raise SkipExample("last assistant turn longer than max_length")
        ids, turn, first_of_last = ids[cut:], turn[cut:], first_of_last - cut
    labels = [token if index >= 0 else IGNORE_INDEX for token, index in zip(ids, turn)]
    return {
        "input_ids": ids,
        "labels": labels,
        "prompt_ids": ids[:first_of_last],
        "prompt": text[: spans[-1][0]],
        "response": messages[max(i for i, m in enumerate(messages) if m["role"] == "assistant")]["content"],
    }


def encode_chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], max_length: int) -> Dict[str, Any]:
    """A conversation as a generation prompt: every message, then the assistant header."""
    text = render(tokenizer, messages, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise SkipExample("empty prompt")
    return {"prompt_ids": ids[-max_length:], "prompt": text}


class ChatDataModule(SourceDataModule):
    """Conversations (``[{role, content}, ...]``) from files or ``datasets``, e.g.
    UltraChat's ``messages``, rendered with the tokenizer's chat template.

    Training examples are supervised on every assistant turn (or the last one only); the
    tokens before the last assistant turn are the prompt for generation (samples,
    ``val/accuracy``, PPO). With ``prompt_only`` each conversation is cut before its last
    assistant turn and used as a prompt (the cut turn becomes the reference ``response``).

    Args:
        train_data: see :class:`~ift.data.datamodule.SourceDataModule` (as are the split,
            ``dataset_kwargs`` and ``max_examples`` arguments).
        messages_key: column holding the message list.
        answer_key: column holding a reference answer for rewards and ``val/accuracy``: the
            default ``answer`` is read when the records have it (then every record of a split
            must have one); another name must be in every record; None reads none.
        assistant_turns: ``all`` (supervise every assistant turn) or ``last``.
        prompt_only: produce prompts (for PPO) instead of supervised conversations.
        system_prompt: a system message put first in conversations that have none (optional).
        batch_size: see :class:`~ift.data.datamodule.ExamplesDataModule` (as are the
            other arguments; ``use_chat_template`` is implied here).
    """

    def __init__(
        self,
        train_data: str,
        messages_key: str = "messages",
        answer_key: Optional[str] = DEFAULT_ANSWER_KEY,
        assistant_turns: str = "all",
        prompt_only: bool = False,
        system_prompt: Optional[str] = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("use_chat_template", True)
        super().__init__(train_data, **kwargs)
        if assistant_turns not in ASSISTANT_TURNS:
            raise ValueError(f"assistant_turns {assistant_turns!r} is not one of {ASSISTANT_TURNS}")
        self.messages_key = messages_key
        self.answer_key = answer_key
        self.assistant_turns = assistant_turns
        self.prompt_only = prompt_only
        self.system_prompt = system_prompt

    def record_example(self) -> Dict[str, Any]:
        return {self.messages_key: [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}

    def normalise(self, location: str, record: Dict[str, Any]) -> Dict[str, Any]:
        hint = "Set messages_key to the column that holds the [{role, content}, ...] list."
        if self.messages_key not in record and "prompt" in record:
            hint += (" This record has a 'prompt': files of prompt/response records are read by "
                     "ift.data.PromptResponseDataModule, prompt/chosen/rejected ones by ift.data.PreferenceDataModule.")
        require_keys(location, record, [self.messages_key], hint)
        example: Dict[str, Any] = {"messages": expect_messages(location, self.messages_key, record[self.messages_key],
                                                               "messages_key")}
        answer = self.answer_of(location, record, self.answer_key)
        if answer is not None:
            example["answer"] = answer
        return example

    def conversation(self, messages: Any) -> List[Message]:
        messages = check_messages(messages)
        if self.system_prompt is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.system_prompt}] + messages
        return messages

    def encode_one(self, example: Dict[str, Any]) -> Dict[str, Any]:
        messages = self.conversation(example["messages"])
        if self.prompt_only:
            assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
            cut = assistant[-1] if assistant and assistant[-1] == len(messages) - 1 else len(messages)
            if cut == 0:
                raise SkipExample("no prompt before the assistant turn")
            features = encode_chat_prompt(self.tokenizer, messages[:cut], self.max_length)
            if cut < len(messages):
                features["response"] = messages[cut]["content"]
        else:
            features = encode_conversation(self.tokenizer, messages, self.max_length, self.assistant_turns)
        features["example"] = example
        if example.get("answer") is not None:
            features["answer"] = str(example["answer"])
        return features
