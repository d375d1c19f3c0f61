"""Data formats: chat ``messages`` (labels on every assistant turn, checked token by token),
preference pairs (strings and chat), prompts with reference answers, column mapping for
files and ``datasets.load_dataset``, counted-and-reported skipped examples, and errors
that name the file and line for unparseable files."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from eco_helpers import bpe_chatml_tokenizer, chat_rows, write_jsonl, write_parquet
from factories import quiet_trainer
from ift.callbacks import AnswerAccuracy
from ift.data import (
    ChatDataModule,
    DataFormatError,
    PreferenceDataModule,
    PromptResponseDataModule,
    build_char_tokenizer,
)
from ift.data.chat import encode_conversation
from ift.data.records import read_records
from ift.modules import FineTuneModule
from ift.objectives.functional import IGNORE_INDEX

CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "thanks"},
    {"role": "assistant", "content": "ok"},
]


def supervised_runs(ids, labels):
    """Maximal runs of consecutive supervised positions, as lists of ids."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    return runs + ([current] if current else [])


def prepared(data: ChatDataModule | PreferenceDataModule | PromptResponseDataModule, tokenizer=None):
    data.tokenizer = tokenizer or build_char_tokenizer()
    data.setup("fit")
    return data


# ------------------------------------------------------------------ chat: token by token
def test_multi_turn_chat_labels_every_assistant_turn_token_by_token():
    tokenizer = build_char_tokenizer()
    features = encode_conversation(tokenizer, CONVERSATION, max_length=512)
    # Expected, written by hand from the character template "role: content[<eos>]\n":
    # one token per character, <eos> one token, supervised = assistant content + <eos>.
    eos = tokenizer.eos_token_id
    expected_ids, expected_labels = [], []
    for message in CONVERSATION:
        header = [tokenizer.convert_tokens_to_ids(c) for c in f"{message['role']}: "]
        body = [tokenizer.convert_tokens_to_ids(c) for c in message["content"]]
        newline = [tokenizer.convert_tokens_to_ids("\n")]
        if message["role"] == "assistant":
            expected_ids += header + body + [eos] + newline
            expected_labels += [IGNORE_INDEX] * len(header) + body + [eos] + [IGNORE_INDEX]
        else:
            expected_ids += header + body + newline
            expected_labels += [IGNORE_INDEX] * (len(header) + len(body) + 1)
    assert features["input_ids"] == expected_ids
    assert features["labels"] == expected_labels
    # The generation prompt is everything before the last assistant turn, header included.
    assert tokenizer.decode(features["prompt_ids"]).endswith("user: thanks\nassistant: ")
    assert features["response"] == "ok"


def test_chatml_bpe_template_labels_each_assistant_turn_and_its_end_marker():
    tokenizer = bpe_chatml_tokenizer()
    messages = chat_rows(1)[0]["messages"]
    features = encode_conversation(tokenizer, messages, max_length=512)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    # input_ids are exactly the template's text tokenized as a whole.
    assert features["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    # Independent expectation: tokenize the ChatML segments apart (they do not merge across
    # the boundaries), supervised = each assistant content + its <|im_end|>.
    expected_ids, expected_labels = [], []

    def add(text, supervised):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        expected_ids.extend(ids)
        expected_labels.extend(ids if supervised else [IGNORE_INDEX] * len(ids))

    add("<|im_start|>system\nYou are helpful.<|im_end|>\n", False)
    for message in messages:
        add(f"<|im_start|>{message['role']}\n", False)
        add(message["content"] + "<|im_end|>", message["role"] == "assistant")
        add("\n", False)
    assert features["input_ids"] == expected_ids
    assert features["labels"] == expected_labels
    runs = supervised_runs(features["input_ids"], features["labels"])
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert [tokenizer.decode(run) for run in runs] == [text + "<|im_end|>" for text in assistant]


def test_last_assistant_turn_only_and_left_truncation_keeps_it():
    tokenizer = build_char_tokenizer()
    last_only = encode_conversation(tokenizer, CONVERSATION, max_length=512, turns="last")
    runs = supervised_runs(last_only["input_ids"], last_only["labels"])
    assert [tokenizer.decode(run) for run in runs] == ["ok<eos>"]
    full = encode_conversation(tokenizer, CONVERSATION, max_length=512)
    cut = encode_conversation(tokenizer, CONVERSATION, max_length=20)
    assert cut["input_ids"] == full["input_ids"][-20:] and cut["labels"] == full["labels"][-20:]
    from ift.data.encoding import SkipExample

    with pytest.raises(SkipExample, match="longer than max_length"):
        encode_conversation(tokenizer, CONVERSATION, max_length=3)


# ------------------------------------------------------------------ chat data module, sources
def test_chat_data_module_reads_jsonl_parquet_and_datasets_the_same(tmp_path):
    rows = chat_rows(6)
    renamed = [{"conversation": r["messages"], "gold": str(i)} for i, r in enumerate(rows)]
    jsonl = write_jsonl(tmp_path / "chat.jsonl", renamed)
    parquet = write_parquet(tmp_path / "chat.parquet", renamed)
    common = dict(messages_key="conversation", answer_key="gold", batch_size=3)
    cache = str(tmp_path / "hf_cache")  # datasets' cache stays in the test folder
    variants = [
        ChatDataModule(train_data=jsonl, **common),
        ChatDataModule(train_data=parquet, **common),
        ChatDataModule(train_data="parquet", dataset_kwargs={"data_files": parquet, "cache_dir": cache}, **common),
        ChatDataModule(train_data="json", dataset_kwargs={"data_files": jsonl, "cache_dir": cache}, **common),
    ]
    encoded = [[item["input_ids"] for item in prepared(dm).datasets["train"].items] for dm in variants]
    assert all(e == encoded[0] for e in encoded) and len(encoded[0]) == 6
    batch = next(iter(variants[0].train_dataloader()))
    assert set(batch) >= {"input_ids", "attention_mask", "labels", "prompt_input_ids", "answer", "examples"}
    assert batch["prompt_input_ids"][:, -1].ne(variants[0].tokenizer.pad_token_id).all()  # left-padded prompts


def test_chat_prompt_only_gives_prompts_with_reference_answers(tmp_path):
    rows = [{"messages": r["messages"][:3], "answer": r["messages"][3]["content"]} for r in chat_rows(4)]
    data = prepared(ChatDataModule(train_data=write_jsonl(tmp_path / "p.jsonl", rows), prompt_only=True,
                                       answer_key="answer", batch_size=4))
    batch = next(iter(data.train_dataloader()))
    assert "input_ids" not in batch and sorted(batch["answer"]) == sorted(r["answer"] for r in rows)
    tokenizer = data.tokenizer
    for row in batch["prompt_input_ids"]:
        assert tokenizer.decode(row, skip_special_tokens=True).endswith("and times 2?\nassistant: ")


def test_column_mapping_same_through_our_readers_and_datasets(tmp_path):
    rows = [{"question": f"{i}+1=", "solution": f"so {i + 1}", "final": i + 1} for i in range(5)]
    jsonl = write_jsonl(tmp_path / "qa.jsonl", rows)
    parquet = write_parquet(tmp_path / "qa.parquet", rows)
    keys = dict(prompt_key="question", response_key="solution", answer_key="final", batch_size=5)
    cache = str(tmp_path / "hf_cache")
    modules = [
        PromptResponseDataModule(train_data=jsonl, **keys),
        PromptResponseDataModule(train_data=parquet, **keys),
        PromptResponseDataModule(train_data="json", dataset_kwargs={"data_files": jsonl, "cache_dir": cache}, **keys),
        PromptResponseDataModule(train_data="parquet", dataset_kwargs={"data_files": {"train": parquet}, "cache_dir": cache}, **keys),
    ]
    batches = [next(iter(prepared(dm).train_dataloader())) for dm in modules]
    for batch in batches[1:]:
        assert torch.equal(batch["input_ids"], batches[0]["input_ids"])
        assert torch.equal(batch["labels"], batches[0]["labels"])
        assert batch["answer"] == batches[0]["answer"]
    assert sorted(batches[0]["answer"]) == [str(i + 1) for i in range(5)]


def test_prompt_data_with_reference_answers_gives_val_accuracy(tmp_path):
    rows = [{"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(4)]
    path = write_jsonl(tmp_path / "prompts.jsonl", rows)
    data = PromptResponseDataModule(train_data=path, val_data=path, response_key=None, answer_key="answer", batch_size=4)
    module = FineTuneModule(model="tiny-gpt2")
    trainer = quiet_trainer(callbacks=[AnswerAccuracy(max_new_tokens=3)])
    trainer.validate(module, datamodule=data)
    assert "val/accuracy" in trainer.callback_metrics
    batch = next(iter(data.val_dataloader()))
    assert "labels" not in batch and batch["answer"] == ["0", "2", "4", "6"]


# ------------------------------------------------------------------ preference data
def test_string_preference_pairs_label_only_the_responses(tmp_path):
    rows = [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}, {"prompt": "1+1=", "chosen": "2", "rejected": "11"}]
    data = prepared(PreferenceDataModule(train_data=write_jsonl(tmp_path / "pref.jsonl", rows), batch_size=2))
    tokenizer = data.tokenizer
    batch = next(iter(data.train_dataloader()))
    for side in ("chosen", "rejected"):
        assert {f"{side}_input_ids", f"{side}_attention_mask", f"{side}_labels"} <= set(batch)
    by_prompt = {ex["prompt"]: ex for ex in batch["examples"]}
    for row, ids, labels in zip(batch["examples"], batch["chosen_input_ids"], batch["chosen_labels"]):
        runs = supervised_runs(ids.tolist(), labels.tolist())
        assert [tokenizer.decode(run) for run in runs] == [by_prompt[row["prompt"]]["chosen"] + "<eos>"]
    for row, ids, labels in zip(batch["examples"], batch["rejected_input_ids"], batch["rejected_labels"]):
        runs = supervised_runs(ids.tolist(), labels.tolist())
        assert [tokenizer.decode(run) for run in runs] == [by_prompt[row["prompt"]]["rejected"] + "<eos>"]


@pytest.mark.parametrize("style", ["implicit_prompt", "explicit_prompt"])
def test_chat_preference_pairs_label_only_the_last_assistant_turn(tmp_path, style):
    context = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"},
               {"role": "user", "content": "2+2?"}]
    if style == "implicit_prompt":  # UltraFeedback-binarized: both sides hold the whole conversation
        row = {"prompt": "2+2?", "chosen": context + [{"role": "assistant", "content": "4"}],
               "rejected": context + [{"role": "assistant", "content": "5"}]}
    else:
        row = {"prompt": context, "chosen": [{"role": "assistant", "content": "4"}],
               "rejected": [{"role": "assistant", "content": "5"}]}
    data = prepared(PreferenceDataModule(train_data=write_jsonl(tmp_path / "p.jsonl", [row]), batch_size=1))
    tokenizer = data.tokenizer
    batch = next(iter(data.train_dataloader()))
    for side, text in (("chosen", "4"), ("rejected", "5")):
        runs = supervised_runs(batch[f"{side}_input_ids"][0].tolist(), batch[f"{side}_labels"][0].tolist())
        assert [tokenizer.decode(run) for run in runs] == [text + "<eos>"]
    prompt = tokenizer.decode(batch["prompt_input_ids"][0], skip_special_tokens=False)
    assert prompt == "user: hi\nassistant: hey<eos>\nuser: 2+2?\nassistant: "


# ------------------------------------------------------------------ skipped examples: counted, reported per epoch
def test_unusable_examples_are_counted_and_reported_once_per_epoch(tmp_path, caplog):
    good = chat_rows(4)
    bad = [
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]},
        {"messages": []},  # a list, but empty: skipped (a non-list is a type error, tests/test_data_errors.py)
        {"messages": [{"role": "user", "content": ["image"]}, {"role": "assistant", "content": "y"}]},
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", good[:2] + bad + good[2:])
    data = ChatDataModule(train_data=path, batch_size=2)
    module = FineTuneModule(model="tiny-gpt2")
    from pytorch_lightning.loggers import CSVLogger

    trainer = quiet_trainer(max_epochs=2, limit_train_batches=1, logger=CSVLogger(str(tmp_path)))
    with caplog.at_level(logging.WARNING, logger="ift.data"):
        trainer.fit(module, datamodule=data)
    assert sum(data.skipped["train"].values()) == 4
    assert set(data.skipped["train"]) == {"no assistant turn", "empty assistant turn",
                                          "messages is not a non-empty list", "non-text message content"}
    reports = [r.getMessage() for r in caplog.records if r.name == "ift.data" and "epoch" in r.getMessage()]
    assert len(reports) == 2 and "epoch 0" in reports[0] and "epoch 1" in reports[1]
    assert "4 of 8 examples skipped" in reports[0] and f"{path}:3 (no assistant turn)" in reports[0]
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "data/skipped_train" in metrics


def test_missing_messages_column_names_the_key_and_the_keys_found(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"conversation": []}])
    with pytest.raises(DataFormatError, match=r"c\.jsonl:1: missing key 'messages'.*\['conversation'\]"):
        prepared(ChatDataModule(train_data=path))


# ------------------------------------------------------------------ files that cannot be parsed
def test_unparseable_files_stop_with_their_name_and_line(tmp_path):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"prompt": "a", "response": "b"}\n{"prompt": oops}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: not valid JSON"):
        read_records(str(jsonl))
    broken = tmp_path / "bad.json"
    broken.write_text('[\n  {"prompt": "a"},\n  {"prompt": }\n]\n')
    with pytest.raises(DataFormatError, match=r"bad\.json:3: not valid JSON"):
        read_records(str(broken))
    not_objects = tmp_path / "list.json"
    not_objects.write_text(json.dumps([{"prompt": "a"}, "b"]))
    with pytest.raises(DataFormatError, match=r"list\.json\[1\]: expected a JSON object, got str"):
        read_records(str(not_objects))
    parquet = tmp_path / "bad.parquet"
    parquet.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataFormatError, match=r"bad\.parquet: not a readable Parquet file"):
        read_records(str(parquet))
    with pytest.raises(DataFormatError, match=r"only apply to datasets\.load_dataset.*train_data: json"):
        read_records(str(jsonl), "train", name="main")
