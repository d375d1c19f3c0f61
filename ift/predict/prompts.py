"""The prompts of ``ift predict``, read and encoded by the data layer.

Any source :func:`~ift.data.records.read_records` reads (``.jsonl``, ``.json``, ``.csv``,
``.parquet``, a ``datasets`` name or folder). Each record holds either

* a ``prompt`` string (``--prompt_key``), encoded as :class:`~ift.data.PromptResponseDataModule`
  encodes prompts (with the tokenizer's chat template when ``use_chat_template``), or
* chat ``messages`` (``--messages_key``; also a message list under the prompt key), rendered
  as :class:`~ift.data.ChatDataModule` renders prompts: every message, then the assistant
  header (``add_generation_prompt``); a final assistant turn is cut off and kept as the
  record's ``reference``,

and optionally an ``answer`` (``--answer_key``), read and type-checked as the data modules
read it. A bad record stops with :class:`~ift.data.records.DataFormatError` naming its
``file:line``; a gold answer without a number stops too (it could never be scored). An
unusable but well-formed record (an empty prompt, a chat template error) is skipped and
counted, as the data modules skip and count.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from transformers import PreTrainedTokenizerBase

from ift.data.chat import ChatDataModule
from ift.data.datamodule import PromptResponseDataModule, SourceDataModule
from ift.data.encoding import SkipExample
from ift.data.records import DataFormatError, read_records, require_keys
from ift.data.skip_tally import encode_records
from ift.rewards.answer import answers_match

log = logging.getLogger(__name__)
# Prompts are encoded whole and cut here, so that a cut prompt is counted, not silent.
_UNLIMITED = 1 << 62


@dataclasses.dataclass
class PromptItem:
    """One prompt, ready to generate from.

    Attributes:
        location: where the record is (``file:line``).
        prompt: the prompt as written in the record (a chat prompt: as the template renders it).
        prompt_ids: the token ids the model reads (left-cut to the model's context).
        answer: the reference answer (text), or None.
        reference: a chat record's final assistant turn, or None.
    """

    location: str
    prompt: str
    prompt_ids: List[int]
    answer: Optional[str] = None
    reference: Optional[str] = None


@dataclasses.dataclass
class PromptSet:
    """The usable prompts of a source, and what was skipped or cut.

    Attributes:
        items: the prompts, in the source's order.
        records: how many records the source held.
        skipped: reasons of skipped records, counted.
        skipped_examples: the first few skipped records, as ``(location, reason)``.
        cut: how many prompts lost tokens from their left to fit the model's context.
    """

    items: List[PromptItem]
    records: int
    skipped: Counter
    skipped_examples: List[Tuple[str, str]]
    cut: int = 0


class PromptReader:
    """Normalises and encodes the records of one source with the data modules' own code.

    Args:
        source: the prompts (file or ``datasets`` name).
        tokenizer: the policy's tokenizer.
        prompt_key: field of a prompt string (or of a message list).
        messages_key: field of chat messages, read when a record has no ``prompt_key``.
        answer_key: field of the reference answer; the default ``answer`` is read where a
            record has it, another name must be in every record, None reads none.
        use_chat_template: render prompt strings as a user turn with the chat template.
        split: the split of a ``datasets`` source.
    """

    def __init__(self, source: str, tokenizer: PreTrainedTokenizerBase, prompt_key: str = "prompt",
                 messages_key: str = "messages", answer_key: Optional[str] = "answer",
                 use_chat_template: bool = False, split: str = "test"):
        self.source, self.split = source, split
        self.prompt_key, self.messages_key, self.answer_key = prompt_key, messages_key, answer_key
        self.tokenizer = tokenizer
        self.prompts = PromptResponseDataModule(source, prompt_key=prompt_key, response_key=None,
                                                answer_key=answer_key, use_chat_template=use_chat_template,
                                                max_length=_UNLIMITED, tokenizer=tokenizer)
        self.prompts.tokenizer = tokenizer
        self._chats: Dict[str, ChatDataModule] = {}

    def chat_reader(self, key: str) -> ChatDataModule:
        """The chat data module reading messages from ``key`` (prompts only)."""
        if key not in self._chats:
            chat = ChatDataModule(self.source, messages_key=key, answer_key=self.answer_key, prompt_only=True,
                                  max_length=_UNLIMITED, tokenizer=self.tokenizer)
            chat.tokenizer = self.tokenizer
            self._chats[key] = chat
        return self._chats[key]

    def reader_for(self, location: str, record: Dict[str, Any]) -> SourceDataModule:
        """The data module that reads this record: prompt strings or chat messages."""
        if self.prompt_key in record:
            value = record[self.prompt_key]
            return self.chat_reader(self.prompt_key) if isinstance(value, (list, tuple)) else self.prompts
        if self.messages_key in record:
            return self.chat_reader(self.messages_key)
        require_keys(location, record, [self.prompt_key],
                     f"Each record needs a prompt string under {self.prompt_key!r} (--prompt_key) or chat messages "
                     f"under {self.messages_key!r} (--messages_key).")
        raise AssertionError("unreachable")  # pragma: no cover

    def encode_record(self, location: str, record: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """The normalised example and the features of one record; raises
        :class:`~ift.data.encoding.SkipExample` for an unusable one, DataFormatError for a bad one."""
        reader = self.reader_for(location, record)
        example = reader.normalise(location, record)
        try:
            features = reader.encode_one(example)
        except (SkipExample, DataFormatError):
            raise
        except ValueError as error:  # e.g. chat messages for a tokenizer without a chat template
            raise DataFormatError(f"{location}: {error}") from None
        if example.get("answer") is not None:
            check_gold(location, example["answer"], self.answer_key)
        return example, features

    def read(self, max_prompt_tokens: Optional[int] = None) -> PromptSet:
        """Every record of the source as a :class:`PromptItem`; prompts longer than
        ``max_prompt_tokens`` keep their last tokens (and are counted in ``cut``)."""
        records = read_records(self.source, self.split)
        if not records:
            raise DataFormatError(f"{self.source}: no records; it should hold one prompt per record, e.g. "
                                  f'{{"{self.prompt_key}": "12+7=", "answer": "19"}}')
        encoded, tally = encode_records(records, self.encode_record)
        items, cut = [], 0
        for location, (example, features) in encoded:
            ids = list(features["prompt_ids"])
            if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
                ids, cut = ids[-max_prompt_tokens:], cut + 1
            items.append(PromptItem(location, features["prompt"], ids, example.get("answer"), features.get("response")))
        skipped, first_skipped = tally.counts, tally.first
        if tally:
            log.warning("ift predict: skipped %d of %d records of %s: %s (first: %s)", tally.total,
                        len(records), self.source, dict(skipped), first_skipped[0][0])
        if not items:
            raise DataFormatError(f"{self.source}: no usable prompt ({tally.describe()})")
        return PromptSet(items, len(records), skipped, first_skipped, cut)


def check_gold(location: str, answer: str, answer_key: Optional[str]) -> None:
    """Stop now, naming the record, when its answer holds no number: it could never be scored."""
    try:
        answers_match(0.0, answer)
    except ValueError as error:
        raise DataFormatError(
            f"{location}: field {answer_key!r} (--answer_key): {error}; answers are compared as numbers, as "
            f"val/accuracy compares them. Give a numeric answer, or --answer_key none to read no answers"
        ) from None


def read_prompts(source: str, tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: Optional[int] = None,
                 **options: Any) -> PromptSet:
    """The prompts of ``source`` (see :class:`PromptReader` for ``options``)."""
    return PromptReader(source, tokenizer, **options).read(max_prompt_tokens)
