"""What ``benchmarks/fault_probes.py`` (the held-out fault probes of issue 13) found wrong or
unclear, each fixed and held here: a JSON key given twice, characters the tokenizer does not
know, preference pairs that prefer nothing, the places behind "no usable example", a missing
val file, sizes of 0, a missing field's ``*_key``, LoRA layers that do not exist, a YAML
syntax error in a config file, and a reward of the wrong class."""

from __future__ import annotations

import json
import re

import pytest

from ift.cli import main
from ift.core.lora import wrap_with_lora
from ift.data import DataFormatError, PreferenceDataModule, PromptResponseDataModule, build_char_tokenizer
from ift.data.records import read_records
from ift.modules import FineTuneModule

GOOD = {"prompt": "2+2=", "response": "4"}
PAIR = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def write_lines(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def prepared(data):
    data.tokenizer = build_char_tokenizer()
    data.setup("fit")
    return data


def test_a_jsonl_key_given_twice_stops_with_file_line_instead_of_keeping_the_last(tmp_path):
    path = write_lines(tmp_path / "dup.jsonl", [GOOD, '{"prompt": "3+4=", "response": "7", "response": "8"}'])
    with pytest.raises(DataFormatError, match=r"dup\.jsonl:2: the key 'response' appears twice"):
        read_records(path)


def test_a_json_file_key_given_twice_is_refused_too(tmp_path):
    (tmp_path / "dup.json").write_text('[{"prompt": "a", "prompt": "b", "response": "c"}]', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"dup\.json: the key 'prompt' appears twice"):
        read_records(str(tmp_path / "dup.json"))


def test_not_valid_json_message_reads_as_one_sentence(tmp_path):
    path = write_lines(tmp_path / "cut.jsonl", [GOOD, '{"prompt": "3+4=", "resp'])
    with pytest.raises(DataFormatError) as info:
        read_records(path)
    assert "cut.jsonl:2: not valid JSON (" in str(info.value) and " at at " not in str(info.value)


def test_a_response_with_characters_the_tokenizer_lacks_is_skipped_and_counted_not_trained_as_unk(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [GOOD, {"prompt": "6*7=", "response": "四十二"}])
    data = prepared(PromptResponseDataModule(train_data=path))
    assert len(data.datasets["train"]) == 1
    ((location, reason),) = data.skipped_examples["train"]
    assert location.endswith("t.jsonl:2") and "unknown to the tokenizer" in reason


def test_a_prompt_with_unknown_characters_is_kept(tmp_path):
    data = prepared(PromptResponseDataModule(train_data=write_lines(tmp_path / "t.jsonl", [{"prompt": "é?", "response": "4"}])))
    assert len(data.datasets["train"]) == 1


def test_a_preference_pair_whose_chosen_equals_rejected_is_skipped_and_counted(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [PAIR, {**PAIR, "rejected": "4"}])
    data = prepared(PreferenceDataModule(train_data=path))
    assert len(data.datasets["train"]) == 1
    assert data.skipped_examples["train"][0][0].endswith("p.jsonl:2")
    assert data.skipped["train"] == {"chosen and rejected are the same": 1}


def test_no_usable_example_names_the_first_skipped_places(tmp_path):
    path = write_lines(tmp_path / "e.jsonl", [{"prompt": "a", "response": ""}, {"prompt": "b", "response": " "}])
    with pytest.raises(DataFormatError, match=r"no usable train example .*first: .*e\.jsonl:1 \(empty response\), .*e\.jsonl:2"):
        prepared(PromptResponseDataModule(train_data=path))


def test_a_missing_val_file_names_the_val_data_setting(tmp_path):
    data = PromptResponseDataModule(train_data=write_lines(tmp_path / "t.jsonl", [GOOD]), val_data=str(tmp_path / "vaal.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"val_data .*vaal\.jsonl: no such file .*data\.init_args\.val_data"):
        prepared(data)


@pytest.mark.parametrize("setting,value", [("max_length", 0), ("max_length", -5), ("batch_size", 0),
                                           ("eval_batch_size", -1)])
def test_a_size_below_one_stops_at_construction_naming_the_config_key(tmp_path, setting, value):
    with pytest.raises(ValueError, match=rf"{setting} must be a whole number >= 1, got {value}; set data\.init_args\.{setting}"):
        PromptResponseDataModule(train_data="t.jsonl", **{setting: value})


def test_a_missing_field_names_the_key_argument_that_maps_it(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [{"question": "2+2=", "answer": "4"}])
    with pytest.raises(DataFormatError, match=r"q\.jsonl:1: missing key 'prompt'; keys found: \['answer', 'question'\].*"
                                              r"data\.init_args\.prompt_key"):
        prepared(PromptResponseDataModule(train_data=path))


def test_lora_on_layers_the_model_lacks_lists_the_layers_it_has():
    module = FineTuneModule(model="tiny-gpt2", tokenizer="char")
    with pytest.raises(ValueError) as info:
        wrap_with_lora(module.policy, {"r": 4, "target_modules": ["q_proj"]})
    message = str(info.value)
    assert "model.lora target_modules ['q_proj']: no such layer" in message
    assert "c_attn" in message and "set model.lora.target_modules" in message


def test_a_yaml_syntax_error_in_a_config_file_names_the_file_and_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  objective: SFT\n   max_grad_norm: 1.0\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config)])
    assert re.search(r"ift: error: --config .*run\.yaml:3: not valid YAML", str(stop.value.code))


def test_a_reward_of_the_wrong_class_points_at_the_reward_not_at_the_objective_list(tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text(json.dumps({"prompt": "2+2=", "answer": "4"}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["fit", "--model.model", "tiny-gpt2", "--model.objective", "PPO", "--model.objective.init_args.reward",
              "collections.OrderedDict", "--data", "ift.data.PromptResponseDataModule",
              "--data.train_data", str(tmp_path / "t.jsonl")])
    err = capsys.readouterr().err
    assert "the objective PPO exists; the error above is in its argument model.objective.init_args.reward" in err
    assert "valid objectives" not in err


def test_an_empty_folder_as_train_data_is_named_a_folder_not_a_missing_file(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train_data .*data: a folder that datasets\.load_dataset finds no data file"):
        prepared(PromptResponseDataModule(train_data=str(tmp_path / "data")))
