"""val/accuracy reads the answer with the same rule as the reward when asked to
(``AnswerAccuracy(answer_trigger=...)``): ReFT's rule counts an answer only after the
trigger, the liberal default also after ``=`` or as the last number."""

import pytest
import torch

import ift.callbacks.answer_accuracy as answer_accuracy
from ift.callbacks import AnswerAccuracy
from ift.modules import FineTuneModule

RESPONSES = ["2+3=5 answer: 5", "2+3=5", "answer: 6", "the sum is 5"]  # gold 5 for all


@pytest.fixture
def decoded(monkeypatch):
    """Greedy decoding replaced by fixed responses, so only the answer rule is under test."""
    def fake_generate(policy, prompt_ids, prompt_mask, eos_token_id, pad_token_id, max_new_tokens, **_):
        module = FineTuneModule("tiny-gpt2")
        encoded = module.tokenizer(RESPONSES, add_special_tokens=False, padding=True, return_tensors="pt")
        return encoded["input_ids"], encoded["attention_mask"]

    monkeypatch.setattr(answer_accuracy, "generate_responses", fake_generate)


def batch():
    return {"prompt_input_ids": torch.zeros(4, 2, dtype=torch.long), "prompt_attention_mask": torch.ones(4, 2),
            "answer": ["5"] * 4}


def test_liberal_default_reads_the_number_after_equals_or_the_last_one(decoded):
    accuracy = AnswerAccuracy().accuracy(FineTuneModule("tiny-gpt2"), batch())
    assert float(accuracy) == pytest.approx(3 / 4)  # all but "answer: 6"


def test_reft_rule_counts_only_an_answer_after_the_trigger(decoded):
    accuracy = AnswerAccuracy(answer_trigger=["answer:"]).accuracy(FineTuneModule("tiny-gpt2"), batch())
    assert float(accuracy) == pytest.approx(1 / 4)  # only "2+3=5 answer: 5"


def test_a_blank_trigger_is_refused_at_construction_naming_the_argument():
    with pytest.raises(ValueError, match="AnswerAccuracy: answer_trigger"):
        AnswerAccuracy(answer_trigger=" ")
