"""Data input that is wrong stops at load time with a clear error: fields of the wrong type,
empty files, bytes that are not UTF-8, unknown file formats, data that does not fit the
objective or the model's context; CSV files are read; an ``answer`` field gives
``val/accuracy`` without ``answer_key``. Each message names the place (``file:line``, the
config key) and the fix."""

from __future__ import annotations

import json
import re

import pytest

from factories import quiet_trainer
from ift.callbacks import AnswerAccuracy
from ift.data import ChatDataModule, DataFormatError, PreferenceDataModule, PromptResponseDataModule, build_char_tokenizer
from ift.data.records import DataMismatchError, file_format, read_records
from ift.modules import FineTuneModule
from ift.objectives import DPO, SFT, Sequential

GOOD = {"prompt": "2+2=", "response": "4"}
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
PAIR = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}


def write_lines(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def prepared(data):
    data.tokenizer = build_char_tokenizer()
    data.setup("fit")
    return data


def fit(data, objective=None, model="tiny-gpt2", **module_args):
    """One training step of a tiny module on ``data`` (the data module's checks run in setup)."""
    module = FineTuneModule(model=model, objective=objective, tokenizer="char", **module_args)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    return trainer


# ------------------------------------------------------------------ 1, 2: fields are type-checked at load time
@pytest.mark.parametrize("field,value,found", [
    ("prompt", None, "null"), ("prompt", 7, "number"), ("prompt", ["a", "b"], "list"),
    ("response", None, "null"), ("response", 4, "number"), ("response", ["4"], "list"), ("response", {"t": 1}, "object"),
])
def test_prompt_or_response_of_the_wrong_type_stops_with_file_line_field_and_types(tmp_path, field, value, found):
    path = write_lines(tmp_path / "typed.jsonl", [GOOD, {**GOOD, field: value}])
    with pytest.raises(DataFormatError) as info:
        prepared(PromptResponseDataModule(train_data=path))
    message = str(info.value)
    assert re.search(r"typed\.jsonl:2: field '%s' \(the data module's %s_key\) is %s" % (field, field, found), message)
    assert "expected a string" in message


def test_null_prompt_is_not_trained_on_as_the_text_none(tmp_path):
    path = write_lines(tmp_path / "null.jsonl", [{"prompt": None, "response": "r"}])
    with pytest.raises(DataFormatError, match=r"null\.jsonl:1: field 'prompt'.* is null"):
        prepared(PromptResponseDataModule(train_data=path))


def test_null_response_fails_at_load_not_with_a_key_error_steps_later(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [GOOD] * 4 + [{"prompt": "p", "response": None}] + [GOOD] * 4)
    data = PromptResponseDataModule(train_data=path, batch_size=2)
    with pytest.raises(DataFormatError, match=r"train\.jsonl:5: field 'response'.* is null"):
        fit(data)


def test_list_prompt_points_to_the_chat_data_module(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": CHAT["messages"], "response": "x"}])
    with pytest.raises(DataFormatError, match="ChatDataModule"):
        prepared(PromptResponseDataModule(train_data=path))


@pytest.mark.parametrize("messages,expected", [
    ("hi there", r"field 'messages' \(the data module's messages_key\) is string"),
    (None, r"field 'messages' .* is null"),
    (["hi"], r"field 'messages\[0\]' .* is string"),
    ([{"from": "human", "value": "hi"}], r"field 'messages\[0\]' .* has no 'role' or 'content'; keys found: \['from', 'value'\]"),
    ([{"role": 1, "content": "hi"}], r"field 'messages\[0\]\.role' .* is number"),
])
def test_chat_messages_of_the_wrong_structure_stop_with_file_line(tmp_path, messages, expected):
    path = write_lines(tmp_path / "chat.jsonl", [CHAT, {"messages": messages}])
    with pytest.raises(DataFormatError, match=r"chat\.jsonl:2: " + expected):
        prepared(ChatDataModule(train_data=path))


@pytest.mark.parametrize("row,expected", [
    ({**PAIR, "chosen": 4}, r"field 'chosen' \(the data module's chosen_key\) is number"),
    ({**PAIR, "rejected": None}, r"field 'rejected' .* is null"),
    ({**PAIR, "prompt": None}, r"field 'prompt' .* is null; expected a string or a list"),
    ({**PAIR, "chosen": [{"content": "4"}], "rejected": "5"}, r"field 'chosen\[0\]' .* has no 'role'"),
])
def test_preference_fields_of_the_wrong_type_stop_with_file_line(tmp_path, row, expected):
    path = write_lines(tmp_path / "pref.jsonl", [PAIR, row])
    with pytest.raises(DataFormatError, match=r"pref\.jsonl:2: " + expected):
        prepared(PreferenceDataModule(train_data=path))


def test_answer_must_be_a_string_or_a_number(tmp_path):
    numbers = prepared(PromptResponseDataModule(train_data=write_lines(tmp_path / "n.jsonl", [{**GOOD, "answer": 4}])))
    assert numbers.datasets["train"].items[0]["answer"] == "4"
    path = write_lines(tmp_path / "a.jsonl", [{**GOOD, "answer": ["4"]}])
    with pytest.raises(DataFormatError, match=r"a\.jsonl:1: field 'answer' \(the data module's answer_key\) is list"):
        prepared(PromptResponseDataModule(train_data=path))


# ------------------------------------------------------------------ 3: empty files
@pytest.mark.parametrize("name,content,shape", [
    ("empty.jsonl", "", r"one JSON object per line, e\.g\. \{\"prompt\": \"\.\.\.\", \"response\": \"\.\.\.\"\}"),
    ("blank.jsonl", "\n  \n\n", "one JSON object per line"),
    ("empty.json", "[]", "a JSON list of objects"),
    ("header.csv", "prompt,response\n", r"a header row naming the fields \(prompt, response\)"),
])
def test_empty_file_names_the_file_and_what_a_record_looks_like(tmp_path, name, content, shape):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        prepared(PromptResponseDataModule(train_data=str(tmp_path / name)))
    message = str(info.value)
    assert f"train_data {tmp_path / name} is empty" in message
    assert re.search(shape, message), message
    assert "no usable" not in message


def test_empty_chat_file_shows_a_messages_record(tmp_path):
    (tmp_path / "chat.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"chat\.jsonl is empty.*\{\"messages\": \[\{\"role\": \"user\""):
        prepared(ChatDataModule(train_data=str(tmp_path / "chat.jsonl")))


def test_empty_validation_file_is_named_as_the_validation_data(tmp_path):
    (tmp_path / "val.jsonl").write_text("", encoding="utf-8")
    data = PromptResponseDataModule(train_data=write_lines(tmp_path / "t.jsonl", [GOOD]), val_data=str(tmp_path / "val.jsonl"))
    with pytest.raises(DataFormatError, match=r"val_data .*val\.jsonl is empty"):
        prepared(data)


# ------------------------------------------------------------------ 4: bytes that are not UTF-8
def test_non_utf8_bytes_in_jsonl_name_file_line_and_byte_offset(tmp_path):
    first = (json.dumps(GOOD) + "\n").encode()
    bad = b'{"prompt": "caf\xe9", "response": "x"}\n'
    (tmp_path / "latin1.jsonl").write_bytes(first + bad)
    with pytest.raises(DataFormatError) as info:
        read_records(str(tmp_path / "latin1.jsonl"))
    message = str(info.value)
    assert "latin1.jsonl:2: not valid UTF-8" in message
    column = bad.index(b"\xe9")
    assert f"byte 0xe9 at byte offset {len(first) + column} of the file, column {column + 1}" in message


@pytest.mark.parametrize("name,data,line", [
    ("bad.json", b'[\n {"prompt": "a", "response": "b"},\n {"prompt": "\xff", "response": "b"}\n]', 3),
    ("bad.csv", b"prompt,response\na,b\nc,\xe9\n", 3),
])
def test_non_utf8_bytes_in_json_and_csv_name_file_and_line(tmp_path, name, data, line):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataFormatError, match=rf"{re.escape(name)}:{line}: not valid UTF-8 \(byte 0x.. at byte offset \d+"):
        read_records(str(tmp_path / name))


def test_a_utf8_byte_order_mark_is_allowed(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\n").encode())
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfprompt,response\n2+2=,4\n")
    assert read_records(str(tmp_path / "bom.jsonl")) == [(f"{tmp_path / 'bom.jsonl'}:1", GOOD)]
    assert read_records(str(tmp_path / "bom.csv")) == [(f"{tmp_path / 'bom.csv'}:2", GOOD)]


# ------------------------------------------------------------------ 5: CSV files, unknown formats
def test_csv_file_is_read_with_the_header_row_as_field_names(tmp_path):
    (tmp_path / "train.csv").write_text(
        'prompt,response,answer\n2+2=,4,4\n"say ""a, b""",' + '"a,\nb",x\n\n1+1=,2,2\n', encoding="utf-8")
    records = read_records(str(tmp_path / "train.csv"))
    assert [location.rsplit(":", 1)[1] for location, _ in records] == ["2", "3", "6"]  # the line each record starts on
    assert records[1][1] == {"prompt": 'say "a, b"', "response": "a,\nb", "answer": "x"}
    data = prepared(PromptResponseDataModule(train_data=str(tmp_path / "train.csv")))
    assert [item["answer"] for item in data.datasets["train"].items] == ["4", "x", "2"]


def test_csv_row_with_the_wrong_number_of_values_names_its_line(tmp_path):
    (tmp_path / "rows.csv").write_text("prompt,response\na,b\nc,d,e\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"rows\.csv:3: 3 values but the header names 2 columns \(prompt, response\)"):
        read_records(str(tmp_path / "rows.csv"))


def test_an_existing_file_of_an_unknown_format_lists_the_accepted_formats(tmp_path):
    (tmp_path / "train.txt").write_text("2+2= 4\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        prepared(PromptResponseDataModule(train_data=str(tmp_path / "train.txt")))
    message = str(info.value)
    assert "train.txt: files ending in '.txt' are not read" in message
    for suffix in (".jsonl", ".json", ".csv", ".parquet", "datasets.load_dataset"):
        assert suffix in message


@pytest.mark.parametrize("source", ["data/train.tsv", "missing.xlsx", "./runs/data.foo", "/no/such/file.dat"])
def test_a_missing_file_path_of_an_unknown_format_is_not_looked_up_on_the_hub(source):
    with pytest.raises(DataFormatError, match=r"no such file, and '\.\w+' files are not read anyway; accepted files: \.jsonl"):
        read_records(source)


@pytest.mark.parametrize("name", ["openai/gsm8k", "teknium/OpenHermes-2.5", "json", "HuggingFaceH4/ultrachat_200k"])
def test_dataset_names_still_go_to_datasets(name):
    assert file_format(name) is None


# ------------------------------------------------------------------ 6: data that does not fit the objective
def test_sft_on_a_preference_file_says_it_looks_like_preference_data(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [PAIR] * 4)
    with pytest.raises(DataMismatchError) as info:
        fit(PromptResponseDataModule(train_data=path, batch_size=2), SFT())
    message = str(info.value)
    assert "pairs.jsonl:1: no 'response' field, but 'chosen' and 'rejected'" in message
    assert "looks like preference data" in message and "DPO and ORPO" in message and "PreferenceDataModule" in message
    assert "SFT needs a 'response'" in message


def test_sft_with_the_preference_data_module_says_sft_trains_on_responses(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [PAIR] * 4)
    with pytest.raises(DataMismatchError) as info:
        fit(PreferenceDataModule(train_data=path, batch_size=2), SFT())
    message = str(info.value)
    assert f"train_data {path} (PreferenceDataModule) gives preference pairs (data for DPO or ORPO)" in message
    assert "the objective SFT trains on prompts with responses" in message
    assert "model.objective.class_path: DPO or ORPO" in message


def test_a_custom_objective_is_held_to_what_it_declares_it_trains_on(tmp_path):
    """The check reads the objective's ``trains_on``, not its class name: an objective of
    the user's own, not derived from DPO, that declares preference pairs is refused SFT data."""
    from ift.core.constants import TRAINS_ON_PAIRS
    from ift.objectives.sft import SFT as _Base

    class MyPairwiseLoss(_Base):
        trains_on = TRAINS_ON_PAIRS

    path = write_lines(tmp_path / "sft.jsonl", [GOOD] * 4)
    with pytest.raises(DataMismatchError) as info:
        fit(PromptResponseDataModule(train_data=path, batch_size=2), MyPairwiseLoss())
    assert "the objective MyPairwiseLoss trains on preference pairs" in str(info.value)


def test_dpo_on_prompt_response_data_says_it_needs_preference_pairs(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [GOOD] * 4)
    with pytest.raises(DataMismatchError) as info:
        fit(PromptResponseDataModule(train_data=path, batch_size=2), DPO())
    message = str(info.value)
    assert f"train_data {path} (PromptResponseDataModule) gives prompts with responses (data for SFT or IFT)" in message
    assert "the objective DPO trains on preference pairs" in message and "ift.data.PreferenceDataModule" in message


def test_dpo_given_an_sft_file_in_the_preference_data_module_says_it_looks_like_sft_data(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [GOOD] * 4)
    with pytest.raises(DataFormatError) as info:
        fit(PreferenceDataModule(train_data=path, batch_size=2), DPO())
    message = str(info.value)
    assert "sft.jsonl:1: missing key 'chosen'" in message
    assert "looks like supervised data" in message and "DPO needs a chosen and a rejected response" in message


def test_a_recipe_stage_that_needs_responses_is_checked_against_prompt_only_data(tmp_path):
    path = write_lines(tmp_path / "prompts.jsonl", [{"prompt": "2+2="}] * 4)
    recipe = Sequential(stages=[{"objective": SFT(), "steps": 1}, {"objective": SFT()}])
    with pytest.raises(DataMismatchError, match=r"gives prompts alone, but the objective SFT .*response_key"):
        fit(PromptResponseDataModule(train_data=path, response_key=None, batch_size=2), recipe)


# ------------------------------------------------------------------ 7: sequences longer than the model's context
SHORT_CONTEXT = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64}


def test_max_length_above_the_model_context_stops_naming_both_limits(tmp_path):
    rows = [GOOD] * 3 + [{"prompt": "x" * 100, "response": "long"}]
    path = write_lines(tmp_path / "long.jsonl", rows)
    with pytest.raises(DataMismatchError) as info:
        fit(PromptResponseDataModule(train_data=path, max_length=128, batch_size=2), model=SHORT_CONTEXT)
    message = str(info.value)
    assert "data.init_args.max_length is 128, but the model reads at most 64 positions (its config's n_positions)" in message
    assert "1 example(s) are longer, the longest (105 tokens) at" in message and "long.jsonl:4 (train)" in message
    assert "Set data.init_args.max_length to 64 or less" in message


def test_max_length_above_the_model_context_is_fine_while_every_example_fits(tmp_path):
    path = write_lines(tmp_path / "short.jsonl", [GOOD] * 4)
    trainer = fit(PromptResponseDataModule(train_data=path, max_length=128, batch_size=2), model=SHORT_CONTEXT)
    assert trainer.global_step == 1


# ------------------------------------------------------------------ 8: an answer field gives val/accuracy
def test_an_answer_field_gives_val_accuracy_without_answer_key(tmp_path):
    rows = [{"prompt": f"{i}+{i}=", "response": str(2 * i), "answer": str(2 * i)} for i in range(4)]
    path = write_lines(tmp_path / "qa.jsonl", rows)
    data = PromptResponseDataModule(train_data=path, val_data=path, batch_size=4)
    trainer = quiet_trainer(callbacks=[AnswerAccuracy(max_new_tokens=3)])
    trainer.validate(FineTuneModule(model="tiny-gpt2"), datamodule=data)
    assert "val/accuracy" in trainer.callback_metrics
    assert next(iter(data.val_dataloader()))["answer"] == ["0", "2", "4", "6"]


@pytest.mark.parametrize("cls,row", [(PromptResponseDataModule, GOOD), (ChatDataModule, CHAT), (PreferenceDataModule, PAIR)])
def test_every_data_module_reads_an_answer_field_by_default(tmp_path, cls, row):
    data = prepared(cls(train_data=write_lines(tmp_path / "d.jsonl", [{**row, "answer": 12}])))
    assert data.datasets["train"].items[0]["answer"] == "12"


def test_some_records_without_an_answer_stop_naming_one_of_each(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [{**GOOD, "answer": "4"}, GOOD])
    with pytest.raises(DataFormatError, match=r"mixed\.jsonl:2: this train example has no answer, but .*mixed\.jsonl:1 has an answer"):
        prepared(PromptResponseDataModule(train_data=path))


def test_an_answer_key_that_was_asked_for_must_be_in_every_record(tmp_path):
    path = write_lines(tmp_path / "gold.jsonl", [{**GOOD, "gold": "4"}, GOOD])
    with pytest.raises(DataFormatError, match=r"gold\.jsonl:2: missing key 'gold'.*answer_key"):
        prepared(PromptResponseDataModule(train_data=path, answer_key="gold"))
    assert "answer" not in prepared(PromptResponseDataModule(train_data=path, answer_key=None)).datasets["train"].items[0]


def test_empty_answer_cells_of_a_csv_mean_no_answer(tmp_path):
    (tmp_path / "t.csv").write_text("prompt,response,answer\n2+2=,4,\n1+1=,2,\n", encoding="utf-8")
    data = prepared(PromptResponseDataModule(train_data=str(tmp_path / "t.csv")))
    assert all("answer" not in item for item in data.datasets["train"].items)
