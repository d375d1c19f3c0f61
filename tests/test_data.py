"""Data: JSONL prompt/response module, the character tokenizer, the arithmetic task, the collator."""

import json
import re

import pytest
import torch
from transformers import AutoTokenizer

from ift.data import DataFormatError, PromptResponseDataModule
from ift.tasks.arithmetic import ArithmeticDataModule, arithmetic_examples
from ift.data.collate import Collator

IGNORE = -100
# ``tokenizer`` (the character tokenizer) is a fixture of conftest.py.


def write_jsonl(path, rows, raw_lines=()):
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        for line in raw_lines:
            handle.write(line + "\n")
    return str(path)


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


EXAMPLES = [
    {"prompt": "What is 2+2?", "response": "4"},
    {"prompt": "Spell cat:", "response": "c-a-t"},
    {"prompt": "A much longer prompt than the others here:", "response": "ok then"},
]


def make_module(path, tokenizer, **kwargs):
    dm = PromptResponseDataModule(train_data=path, tokenizer=tokenizer, **kwargs)
    dm.setup("fit")
    return dm


# ------------------------------------------------------------------------------ JSONL module
def test_labels_only_on_response_and_eos(tmp_path, tokenizer):
    dm = make_module(write_jsonl(tmp_path / "train.jsonl", EXAMPLES), tokenizer)
    items = dm.datasets["train"].items
    assert len(items) == len(EXAMPLES)
    for item, example in zip(items, EXAMPLES):
        prompt_ids = tokenizer(example["prompt"])["input_ids"]
        response_ids = ids_of(tokenizer, example["response"]) + [tokenizer.eos_token_id]
        assert item["input_ids"] == prompt_ids + response_ids
        assert item["labels"] == [IGNORE] * len(prompt_ids) + response_ids
        assert item["prompt_ids"] == prompt_ids
        # token by token: a label is either masked or the input token at the same place
        for token, label in zip(item["input_ids"], item["labels"]):
            assert label in (IGNORE, token)
        assert item["labels"][-1] == tokenizer.eos_token_id
    assert sum(dm.skipped["train"].values()) == 0


def test_dynamic_padding(tmp_path, tokenizer):
    dm = make_module(write_jsonl(tmp_path / "train.jsonl", EXAMPLES), tokenizer, batch_size=2, max_length=128)
    collate = dm.collator()
    items = dm.datasets["train"].items
    short_batch = collate(items[:2])
    long_batch = collate(items[1:])
    lengths = [len(item["input_ids"]) for item in items]
    assert short_batch["input_ids"].shape[1] == max(lengths[:2]) < 128
    assert long_batch["input_ids"].shape[1] == max(lengths[1:])
    for batch, chunk in ((short_batch, items[:2]), (long_batch, items[1:])):
        assert batch["attention_mask"].sum(-1).tolist() == [len(item["input_ids"]) for item in chunk]
        pad = batch["attention_mask"] == 0
        assert torch.all(batch["input_ids"][pad] == tokenizer.pad_token_id)
        assert torch.all(batch["labels"][pad] == IGNORE)
        # right padding by default: real tokens first
        for row, item in enumerate(chunk):
            n = len(item["input_ids"])
            assert batch["input_ids"][row, :n].tolist() == item["input_ids"]
            assert batch["labels"][row, :n].tolist() == item["labels"]
    assert set(short_batch) >= {"input_ids", "attention_mask", "labels", "prompt_input_ids", "prompt_attention_mask"}
    # the training loader really batches with this collator
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 2


def test_left_padding_option(tmp_path, tokenizer):
    dm = make_module(write_jsonl(tmp_path / "train.jsonl", EXAMPLES), tokenizer, padding_side="left")
    items = dm.datasets["train"].items
    batch = dm.collator()(items)
    width = batch["input_ids"].shape[1]
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        assert batch["input_ids"][row, width - n:].tolist() == item["input_ids"]
        assert batch["labels"][row, width - n:].tolist() == item["labels"]
        assert batch["attention_mask"][row, : width - n].sum() == 0


def test_prompt_truncated_from_the_left_keeps_the_response(tmp_path, tokenizer):
    prompt = "0123456789abcdefghij"  # 20 characters
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": prompt, "response": "xyz"}])
    dm = make_module(path, tokenizer, max_length=10)
    (item,) = dm.datasets["train"].items
    response_ids = ids_of(tokenizer, "xyz") + [tokenizer.eos_token_id]
    assert len(item["input_ids"]) == 10
    assert item["input_ids"][-len(response_ids):] == response_ids
    kept = 10 - len(response_ids)
    assert item["input_ids"][:kept] == ids_of(tokenizer, prompt[-kept:])  # the end of the prompt survives
    assert item["labels"] == [IGNORE] * kept + response_ids
    assert item["prompt_ids"] == ids_of(tokenizer, prompt[-kept:])


def test_over_long_response_is_skipped_and_counted(tmp_path, tokenizer):
    rows = EXAMPLES + [{"prompt": "p", "response": "r" * 40}, {"prompt": "q", "response": "s" * 50}]
    dm = make_module(write_jsonl(tmp_path / "train.jsonl", rows), tokenizer, max_length=30)
    assert len(dm.datasets["train"]) == len(EXAMPLES)
    skipped = dm.skipped["train"]
    assert sum(skipped.values()) == 2
    assert any("long" in reason for reason in skipped)
    assert all(len(item["input_ids"]) <= 30 for item in dm.datasets["train"].items)


def test_empty_response_is_skipped_and_counted(tmp_path, tokenizer):
    rows = EXAMPLES + [{"prompt": "p", "response": ""}, {"prompt": "q", "response": "   "}]
    dm = make_module(write_jsonl(tmp_path / "train.jsonl", rows), tokenizer)
    assert len(dm.datasets["train"]) == len(EXAMPLES)
    assert sum(dm.skipped["train"].values()) == 2
    assert any("empty" in reason for reason in dm.skipped["train"])


def test_nothing_usable_is_an_error(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "response": ""}])
    with pytest.raises(DataFormatError, match="no usable"):
        make_module(path, tokenizer)


def test_malformed_jsonl_line_names_file_and_line(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "broken.jsonl", EXAMPLES[:2], raw_lines=["", '{"prompt": "a", "response": '])
    with pytest.raises(DataFormatError) as info:
        make_module(path, tokenizer)
    message = str(info.value)
    assert "broken.jsonl" in message
    assert re.search(r"broken\.jsonl:4\b", message), message  # line 3 is blank, line 4 is bad


def test_non_object_line_is_an_error(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "list.jsonl", EXAMPLES[:1], raw_lines=["[1, 2]"])
    with pytest.raises(DataFormatError, match=r"list\.jsonl:2"):
        make_module(path, tokenizer)


@pytest.mark.parametrize("missing", ["prompt", "response"])
def test_missing_key_names_the_key_and_the_keys_found(tmp_path, tokenizer, missing):
    bad = {"prompt": "p", "response": "r", "extra": 1}
    del bad[missing]
    path = write_jsonl(tmp_path / "keys.jsonl", EXAMPLES[:2] + [bad])
    with pytest.raises(DataFormatError) as info:
        make_module(path, tokenizer)
    message = str(info.value)
    assert repr(missing) in message or f'"{missing}"' in message
    for found in bad:
        assert found in message
    assert "keys.jsonl:3" in message


def test_custom_keys(tmp_path, tokenizer):
    rows = [{"question": "1+1=", "solution": "2", "gold": 2}]
    dm = make_module(write_jsonl(tmp_path / "custom.jsonl", rows), tokenizer, prompt_key="question",
                     response_key="solution", answer_key="gold")
    (item,) = dm.datasets["train"].items
    assert item["answer"] == "2"
    assert item["labels"][-2:] == ids_of(tokenizer, "2") + [tokenizer.eos_token_id]


def test_chat_template_keeps_labels_on_the_response(tmp_path, tokenizer):
    dm = make_module(write_jsonl(tmp_path / "chat.jsonl", EXAMPLES[:1]), tokenizer, use_chat_template=True)
    (item,) = dm.datasets["train"].items
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": EXAMPLES[0]["prompt"]}],
                                             tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(item["prompt_ids"]) == rendered
    response_ids = ids_of(tokenizer, EXAMPLES[0]["response"]) + [tokenizer.eos_token_id]
    assert item["labels"] == [IGNORE] * len(item["prompt_ids"]) + response_ids


def test_val_file_and_loaders(tmp_path, tokenizer):
    train = write_jsonl(tmp_path / "train.jsonl", EXAMPLES)
    val = write_jsonl(tmp_path / "val.jsonl", EXAMPLES[:1])
    dm = PromptResponseDataModule(train_data=train, val_data=val, tokenizer=tokenizer, batch_size=2)
    dm.setup("fit")
    assert len(dm.datasets["val"]) == 1
    assert next(iter(dm.val_dataloader()))["input_ids"].shape[0] == 1


# ------------------------------------------------------------------------------ tokenizer
def test_char_tokenizer_round_trip(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    texts = ["17+25*2=", "answer: 67", "Hello, World!\n  x", "~`|{}"]
    for text in texts:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert loaded.decode(loaded(text)["input_ids"]) == text
    assert len(loaded) == len(tokenizer)
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id", "unk_token_id"):
        assert getattr(loaded, attr) == getattr(tokenizer, attr)
    assert loaded.pad_token_id != loaded.eos_token_id
    assert loaded.chat_template == tokenizer.chat_template
    batch = loaded(texts, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape[0] == len(texts)


def test_char_tokenizer_one_token_per_character(tokenizer):
    text = "abc 123"
    assert len(ids_of(tokenizer, text)) == len(text)
    assert tokenizer.decode(ids_of(tokenizer, "é")) == tokenizer.unk_token  # unknown characters map to unk


# ------------------------------------------------------------------------------ arithmetic task
def arithmetic(tokenizer, **kwargs):
    base = dict(num_train=300, num_val=60, num_test=40, batch_size=16, tokenizer=tokenizer)
    base.update(kwargs)
    dm = ArithmeticDataModule(**base)
    dm.setup("fit")
    return dm


def test_arithmetic_is_seeded(tokenizer):
    a = arithmetic(tokenizer, task_seed=3).all_examples()
    b = arithmetic(tokenizer, task_seed=3).all_examples()
    c = arithmetic(tokenizer, task_seed=4).all_examples()
    assert a == b
    assert a["train"] != c["train"]


def test_arithmetic_splits_are_disjoint_and_sized(tokenizer):
    examples = arithmetic(tokenizer).all_examples()
    sizes = {split: len(rows) for split, rows in examples.items()}
    assert sizes == {"train": 300, "val": 60, "test": 40}
    prompts = {split: {row["prompt"] for row in rows} for split, rows in examples.items()}
    assert len(prompts["train"]) == 300  # no duplicates inside a split either
    assert not prompts["val"] & prompts["train"]
    assert not prompts["test"] & prompts["train"]
    assert not prompts["test"] & prompts["val"]


@pytest.mark.parametrize("num_operands,operators", [(2, "+-*"), (3, "+-*"), (4, "*-")])
def test_arithmetic_answers_are_correct(num_operands, operators):
    for example in arithmetic_examples(200, seed=1, num_operands=num_operands, operators=operators, max_operand=30):
        prompt = example["prompt"]
        assert prompt.endswith("=") and re.fullmatch(r"[0-9+\-*]+=", prompt)
        assert len(re.findall(r"[+\-*]", prompt)) == num_operands - 1
        expected = eval(prompt[:-1])  # Python gives * precedence over + and -, like the task
        assert example["answer"] == str(expected)
        assert example["response"] == str(expected)


def test_arithmetic_worked_solution_ends_with_the_answer():
    for example in arithmetic_examples(100, seed=2, num_operands=3, worked_solution=True):
        expected = eval(example["prompt"][:-1])
        assert example["response"].endswith(f"answer: {expected}")
        steps = example["response"].split(" answer:")[0].split(",")
        assert len(steps) == 2  # two operators, two steps
        for step in steps:  # every worked step is itself true
            left, right = step.split("=")
            assert eval(left) == int(right)


def test_arithmetic_too_many_problems_for_the_range_is_an_error():
    with pytest.raises(ValueError, match="distinct"):
        arithmetic_examples(1000, seed=0, min_operand=0, max_operand=3, operators="+")


def test_arithmetic_batches_and_left_padded_prompts(tokenizer):
    dm = arithmetic(tokenizer, batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8
    assert len(batch["answer"]) == 8
    prompts, mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]
    width = prompts.shape[1]
    assert (mask.sum(-1) < width).any(), "prompts of different lengths are needed to see padding"
    for row, prompt in enumerate(batch["prompt"]):
        ids = tokenizer(prompt)["input_ids"]
        n = len(ids)
        assert prompts[row, width - n:].tolist() == ids  # real tokens at the right end
        assert mask[row, width - n:].all() and not mask[row, : width - n].any()
        assert torch.all(prompts[row, : width - n] == tokenizer.pad_token_id)
    # training sequences keep the right padding of the default
    assert batch["attention_mask"][:, 0].all()


def test_collator_left_pads_prompts_even_with_right_padded_sequences():
    features = [
        {"input_ids": [5, 6, 7, 1], "labels": [IGNORE, IGNORE, 7, 1], "prompt_ids": [5, 6]},
        {"input_ids": [8, 9, 10, 11, 12, 1], "labels": [IGNORE, IGNORE, IGNORE, IGNORE, 12, 1], "prompt_ids": [8, 9, 10, 11]},
    ]
    batch = Collator(pad_token_id=0, padding_side="right")(features)
    assert batch["prompt_input_ids"].tolist() == [[0, 0, 5, 6], [8, 9, 10, 11]]
    assert batch["prompt_attention_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1, 0, 0], [8, 9, 10, 11, 12, 1]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 7, 1, IGNORE, IGNORE], [IGNORE, IGNORE, IGNORE, IGNORE, 12, 1]]
    with pytest.raises(ValueError, match="padding_side"):
        Collator(pad_token_id=0, padding_side="middle")
