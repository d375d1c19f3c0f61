"""Preference pairs for DPO / ORPO: a prompt, a chosen and a rejected response.

Accepted shapes of a record (columns renamed with ``prompt_key`` / ``chosen_key`` /
``rejected_key``):

* strings: ``{"prompt": "...", "chosen": "...", "rejected": "..."}``; the prompt is
  rendered as one user turn when ``use_chat_template`` is set;
* chat pairs with the prompt inside (UltraFeedback-binarized style):
  ``{"chosen": [user, assistant], "rejected": [user, assistant]}`` (``prompt`` may be
  present as a string: it is then ignored, the messages already hold it);
* chat pairs with an explicit prompt: ``{"prompt": [messages...] or "text",
  "chosen": [assistant...], "rejected": [assistant...]}`` (or plain response strings).

Only the last assistant turn of each side is supervised. Batches carry
``chosen_input_ids/attention_mask/labels``, ``rejected_*`` and the left-padded
``prompt_input_ids`` for generation.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ift.data.chat import Message, check_messages, encode_conversation
from ift.data.encoding import SkipExample, encode_example
from ift.data.records import require_keys
from ift.data.datamodule import DEFAULT_ANSWER_KEY, SourceDataModule
from ift.data.fields import expect_text_or_messages
from ift.data.fit_checks import PAIRS


def as_conversation(prompt: Any, side: Any) -> List[Message]:
    """The full conversation of one side of a pair (see the module docstring)."""
    if isinstance(side, str):
        side = [{"role": "assistant", "content": side}]
    side = check_messages(side)
    if side[0]["role"] != "assistant":
        return side  # the prompt is already inside the messages
    if prompt is None:
        raise SkipExample("no prompt before the responses")
    prompt_messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else check_messages(prompt)
    return prompt_messages + side


class PreferenceDataModule(SourceDataModule):
    """Preference data (prompt, chosen, rejected) from files or ``datasets``, as strings or
    chat message lists (see the module docstring).

    Args:
        train_data: see :class:`~ift.data.datamodule.SourceDataModule` (as are the split,
            ``dataset_kwargs`` and ``max_examples`` arguments).
        prompt_key: column of the prompt (a string or messages); None when the chosen and
            rejected conversations hold it.
        chosen_key: column of the preferred response (a string or messages).
        rejected_key: column of the rejected response (a string or messages).
        answer_key: column holding a reference answer for rewards and ``val/accuracy``: the
            default ``answer`` is read when the records have it (then every record of a split
            must have one); another name must be in every record; None reads none.
        batch_size: see :class:`~ift.data.datamodule.ExamplesDataModule` (as are the
            other arguments; ``use_chat_template`` applies to string pairs, chat pairs
            always use the template).
    """

    def __init__(
        self,
        train_data: str,
        prompt_key: Optional[str] = "prompt",
        chosen_key: str = "chosen",
        rejected_key: str = "rejected",
        answer_key: Optional[str] = DEFAULT_ANSWER_KEY,
        **kwargs: Any,
    ):
        super().__init__(train_data, **kwargs)
        self.prompt_key = prompt_key
        self.chosen_key = chosen_key
        self.rejected_key = rejected_key
        self.answer_key = answer_key

    def record_example(self) -> Dict[str, Any]:
        keys = [self.prompt_key, self.chosen_key, self.rejected_key]
        return {key: "..." for key in keys if key is not None}

    def normalise(self, location: str, record: Dict[str, Any]) -> Dict[str, Any]:
        hint = "Set prompt_key / chosen_key / rejected_key to the matching columns."
        sides = (self.chosen_key, self.rejected_key)
        if not all(key in record for key in sides) and ("response" in record or "messages" in record):
            objectives = ", ".join(name for name, need in self.objective_needs if need == PAIRS) or "DPO/ORPO"
            hint += (f" This record looks like supervised data (a 'response' or 'messages'), which SFT and IFT train "
                     f"on (ift.data.PromptResponseDataModule / ift.data.ChatDataModule); {objectives} needs a "
                     f"chosen and a rejected response per example.")
        require_keys(location, record, list(sides), hint)
        example = {side: expect_text_or_messages(location, key, record[key], f"{side}_key")
                   for side, key in zip(("chosen", "rejected"), sides)}
        if self.prompt_key is not None:
            string_pair = isinstance(example["chosen"], str) and isinstance(example["rejected"], str)
            # A null prompt beside chat pairs is harmless: their messages hold the prompt.
            if string_pair or record.get(self.prompt_key) is not None:
                require_keys(location, record, [self.prompt_key], hint)
                example["prompt"] = expect_text_or_messages(location, self.prompt_key, record[self.prompt_key],
                                                            "prompt_key")
        answer = self.answer_of(location, record, self.answer_key)
        if answer is not None:
            example["answer"] = answer
        return example

    def encode_one(self, example: Dict[str, Any]) -> Dict[str, Any]:
        prompt, chosen, rejected = example.get("prompt"), example["chosen"], example["rejected"]
        if chosen == rejected:
            # The pair prefers nothing: DPO's loss is log 2 with no gradient, ORPO's odds term is constant.
            raise SkipExample("chosen and rejected are the same")
        if all(isinstance(value, str) for value in (prompt, chosen, rejected)):
            features = encode_example(
                self.tokenizer, {"prompt": prompt, "chosen": chosen, "rejected": rejected},
                self.max_length, self.use_chat_template,
            )
        else:
            chosen_side = encode_conversation(self.tokenizer, as_conversation(prompt, chosen), self.max_length, "last")
            rejected_side = encode_conversation(self.tokenizer, as_conversation(prompt, rejected), self.max_length, "last")
            features = {
                "chosen_input_ids": chosen_side["input_ids"],
                "chosen_labels": chosen_side["labels"],
                "rejected_input_ids": rejected_side["input_ids"],
                "rejected_labels": rejected_side["labels"],
                "prompt_ids": chosen_side["prompt_ids"],
                "prompt": chosen_side["prompt"],
            }
        features["example"] = example
        if example.get("answer") is not None:
            features["answer"] = str(example["answer"])
        return features
