"""``ift predict``: responses of a checkpoint written by ``ift fit`` and of its export are the
same; a seed repeats a sampled run; scores follow val/accuracy's answer rule; bad records,
policy paths and output folders are named before anything is generated; and the command
runs end to end through ``ift.cli.main``."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest

from ift.cli import main
from ift.data.records import DataFormatError
from ift.predict import PredictError
from ift.cli.commands import COMMANDS
from ift.rewards.answer import AnswerMatchReward, answers_match

def run(argv):
    """``ift predict`` with these options, its errors raised as they are (not turned into an exit)."""
    return COMMANDS["predict"].invoke(argv)


pytestmark = [pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

# Characters the arithmetic task writes: the checkpoint's tokenizer is not the default
# `char`, so loading it needs the tokenizer the run recorded.
CHARS = "char:0123456789+-=*"
PROMPTS = [{"prompt": "12+7=", "answer": 19}, {"prompt": "3+4=", "answer": "7"}, {"prompt": "20+2="},
           {"prompt": "1+1=", "answer": "2"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step `ift fit` on the arithmetic task that also exports: (checkpoint, export folder)."""
    root = tmp_path_factory.mktemp("fit")
    main(["fit", "--model.model", "tiny-gpt2", "--model.tokenizer", CHARS,
          "--data", "ift.tasks.arithmetic.ArithmeticDataModule", "--data.init_args.num_train", "16",
          "--data.init_args.num_val", "4", "--data.init_args.num_test", "0", "--data.init_args.operators", "+",
          "--data.init_args.batch_size", "8", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
          "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root),
          "--trainer.callbacks+=ift.callbacks.ExportPretrained"])
    checkpoints = glob.glob(str(root / "**" / "*.ckpt"), recursive=True)
    exports = glob.glob(str(root / "**" / "export" / "final"), recursive=True)
    assert len(checkpoints) == 1 and len(exports) == 1, (checkpoints, exports)
    return checkpoints[0], exports[0]


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows),
                    encoding="utf-8")
    return str(path)


def read_jsonl(path) -> list:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def predict_lines(policy, data, output, *extra) -> list:
    run(["--policy", policy, "--data", data, "--output", str(output), "--max_new_tokens", "6", *map(str, extra)])
    return read_jsonl(output)


def test_checkpoint_and_its_export_give_the_same_responses(trained, tmp_path):
    checkpoint, export = trained
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    from_checkpoint = predict_lines(checkpoint, data, tmp_path / "ckpt.jsonl")
    from_export = predict_lines(export, data, tmp_path / "export.jsonl")
    assert [line["response"] for line in from_checkpoint] == [line["response"] for line in from_export]
    assert [line["location"] for line in from_checkpoint] == [f"{data}:{n}" for n in range(1, 5)]
    assert [line["prompt"] for line in from_checkpoint] == [row["prompt"] for row in PROMPTS]


def test_a_checkpoint_loads_with_the_tokenizer_its_run_recorded(trained, tmp_path):
    checkpoint, _ = trained
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:1])
    # The default `char` tokenizer has 100 tokens, the run's 19: without the recorded one
    # the weights would not load.
    assert len(predict_lines(checkpoint, data, tmp_path / "out.jsonl")) == 1
    with pytest.raises(PredictError, match="--tokenizer"):
        run(["--policy", checkpoint, "--data", data, "--output", str(tmp_path / "other.jsonl"), "--tokenizer", "char"])


def test_the_same_seed_gives_the_same_samples(trained, tmp_path):
    _, export = trained
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    sample = ["--temperature", "1.5", "--num_samples", "3", "--max_new_tokens", "8"]
    first = predict_lines(export, data, tmp_path / "a.jsonl", *sample, "--seed", "3")
    again = predict_lines(export, data, tmp_path / "b.jsonl", *sample, "--seed", "3")
    other = predict_lines(export, data, tmp_path / "c.jsonl", *sample, "--seed", "4")
    assert len(first) == len(PROMPTS) * 3
    assert [line["sample"] for line in first[:3]] == [0, 1, 2]
    assert first == again
    assert [line["response"] for line in first] != [line["response"] for line in other]


def test_scores_are_val_accuracy_s_answer_match_on_the_response(trained, tmp_path):
    checkpoint, _ = trained
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    result = run(["--policy", checkpoint, "--data", data, "--output", str(tmp_path / "out.jsonl"),
                  "--max_new_tokens", "6"])
    lines = read_jsonl(tmp_path / "out.jsonl")
    rule = AnswerMatchReward()
    scored = [line for line in lines if "answer" in line]
    assert [line["answer"] for line in scored] == ["19", "7", "2"]
    assert "answer" not in lines[2] and "score" not in lines[2]
    for line in scored:
        expected = answers_match(rule.extract(line["response"]), line["answer"])
        assert line["correct"] is expected and line["score"] == float(expected)
        assert line["extracted"] == rule.extract(line["response"])
    assert result.scored == 3
    assert result.mean_score == pytest.approx(sum(line["score"] for line in scored) / 3)


def test_scores_equal_the_module_s_val_accuracy_hits_on_the_same_prompts(trained, tmp_path):
    from ift.callbacks import AnswerAccuracy
    from ift.data.collate import Collator
    from ift.modules import FineTuneModule

    checkpoint, _ = trained
    answered = [row for row in PROMPTS if "answer" in row]
    data = write_jsonl(tmp_path / "prompts.jsonl", answered)
    module = FineTuneModule.load_from_checkpoint(checkpoint, map_location="cpu", tokenizer=CHARS)
    features = [{"prompt_ids": module.tokenizer(row["prompt"])["input_ids"], "answer": str(row["answer"])}
                for row in answered]
    accuracy = AnswerAccuracy()  # val/accuracy's callback, with its defaults
    hits = accuracy.hits(module, Collator(module.tokenizer.pad_token_id)(features)).tolist()
    lines = predict_lines(checkpoint, data, tmp_path / "out.jsonl", "--max_new_tokens", accuracy.max_new_tokens)
    assert [line["score"] for line in lines] == hits


def test_a_response_with_the_answer_scores_one_and_the_trigger_decides_what_counts(tmp_path):
    from ift.predict import score_response

    assert score_response("answer: 19", "19", AnswerMatchReward()) == (19.0, True)
    assert score_response("19", "19.001", AnswerMatchReward()) == (19.0, True)
    assert score_response("17+2=19", "19", AnswerMatchReward(trigger=["answer:"])) == (None, False)
    assert score_response("= 3 answer: 19", "19", AnswerMatchReward(trigger=["answer:"])) == (19.0, True)


def test_the_answer_trigger_option_reads_answers_by_reft_s_rule(trained, tmp_path):
    _, export = trained
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    lines = predict_lines(export, data, tmp_path / "out.jsonl", "--answer_trigger", "####")
    rule = AnswerMatchReward(trigger=["####"])
    for line in lines:
        if "answer" in line:
            assert line["extracted"] == rule.extract(line["response"])
            assert line["correct"] is answers_match(line["extracted"], line["answer"])


def test_a_checkpoint_s_answer_accuracy_trigger_is_the_default_rule(tmp_path, capsys):
    from factories import quiet_trainer, tiny_arithmetic
    from ift.callbacks import AnswerAccuracy
    from ift.modules import FineTuneModule

    # Built in Python: the checkpoint has no run config, and its default `char` tokenizer is right.
    # The trigger is recorded in the checkpoint as the AnswerAccuracy callback's state.
    module = FineTuneModule(model="tiny-gpt2")
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[AnswerAccuracy(answer_trigger=["answer:"])])
    trainer.fit(module, datamodule=tiny_arithmetic(num_train=4))
    checkpoint = str(tmp_path / "python.ckpt")
    trainer.save_checkpoint(checkpoint)
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    lines = predict_lines(checkpoint, data, tmp_path / "out.jsonl", "--max_new_tokens", "12")
    err = capsys.readouterr().err
    assert "answers read with the checkpoint's" in err and "['answer:']" in err
    rule = AnswerMatchReward(trigger=["answer:"])
    assert all(line["extracted"] == rule.extract(line["response"]) for line in lines if "answer" in line)


def test_output_dash_writes_the_lines_to_stdout(tmp_path, capsys):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    run(["--policy", "tiny-gpt2", "--data", data, "--output", "-", "--max_new_tokens", "2"])
    captured = capsys.readouterr()
    assert [json.loads(line)["prompt"] for line in captured.out.splitlines()] == [row["prompt"] for row in PROMPTS]
    assert captured.err.strip().endswith("written to stdout")
    assert not (tmp_path / "prompts.predictions.jsonl").exists()


def test_chat_messages_are_rendered_with_the_generation_prompt(tmp_path):
    data = write_jsonl(tmp_path / "chats.jsonl", [
        {"messages": [{"role": "user", "content": "1+1="}]},
        {"messages": [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}], "answer": 4},
    ])
    lines = predict_lines("tiny-gpt2", data, tmp_path / "out.jsonl")
    assert lines[0]["prompt"] == "user: 1+1=\nassistant: "
    # A final assistant turn is the reference, not part of the prompt.
    assert lines[1]["prompt"] == "user: 2+2=\nassistant: " and lines[1]["reference"] == "4"
    assert lines[1]["answer"] == "4"


def test_a_message_list_under_the_prompt_key_is_a_chat_prompt(tmp_path):
    data = write_jsonl(tmp_path / "chats.jsonl", [{"prompt": [{"role": "user", "content": "1+1="}]}])
    assert predict_lines("tiny-gpt2", data, tmp_path / "out.jsonl")[0]["prompt"] == "user: 1+1=\nassistant: "


def test_an_empty_prompt_is_skipped_and_counted_in_the_summary(tmp_path, capsys):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": ""}, PROMPTS[0]])
    result = run(["--policy", "tiny-gpt2", "--data", data, "--output", str(tmp_path / "out.jsonl"),
                  "--max_new_tokens", "2"])
    assert result.skipped == {"empty prompt": 1} and result.prompts == 1
    assert [line["location"] for line in read_jsonl(tmp_path / "out.jsonl")] == [f"{data}:2"]
    assert "1 records skipped (empty prompt: 1)" in capsys.readouterr().err


def test_a_bad_record_names_its_file_and_line(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [PROMPTS[0], {"prompt": None}])
    with pytest.raises(DataFormatError, match=r"prompts\.jsonl:2: field 'prompt'.*null"):
        run(["--policy", "tiny-gpt2", "--data", data, "--output", str(tmp_path / "out.jsonl")])
    broken = write_jsonl(tmp_path / "broken.jsonl", [PROMPTS[0], "{not json"])
    with pytest.raises(DataFormatError, match=r"broken\.jsonl:2: not valid JSON"):
        run(["--policy", "tiny-gpt2", "--data", broken, "--output", str(tmp_path / "out.jsonl")])
    nothing = write_jsonl(tmp_path / "keys.jsonl", [{"question": "1+1="}])
    with pytest.raises(DataFormatError, match=r"keys\.jsonl:1: missing key 'prompt'.*--prompt_key"):
        run(["--policy", "tiny-gpt2", "--data", nothing, "--output", str(tmp_path / "out.jsonl")])
    assert not os.path.exists(tmp_path / "out.jsonl") and not os.path.exists(tmp_path / "out.jsonl.partial")


def test_an_answer_without_a_number_names_its_record_before_generating(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [PROMPTS[0], {"prompt": "hi", "answer": "Paris"}])
    with pytest.raises(DataFormatError, match=r"prompts\.jsonl:2: field 'answer'.*no number.*--answer_key none"):
        run(["--policy", "tiny-gpt2", "--data", data, "--output", str(tmp_path / "out.jsonl")])
    lines = predict_lines("tiny-gpt2", data, tmp_path / "out.jsonl", "--answer_key", "none")
    assert len(lines) == 2 and all("answer" not in line for line in lines)


def test_prompt_and_answer_fields_are_configurable(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"question": "3+4=", "gold": "7"}])
    lines = predict_lines("tiny-gpt2", data, tmp_path / "out.jsonl", "--prompt_key", "question", "--answer_key", "gold")
    assert lines[0]["prompt"] == "3+4=" and lines[0]["answer"] == "7" and "score" in lines[0]


def test_a_missing_checkpoint_path_is_named(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    missing = str(tmp_path / "runs" / "last.ckpt")
    with pytest.raises(PredictError, match=f"--policy {missing}: no such checkpoint file or folder"):
        run(["--policy", missing, "--data", data, "--output", str(tmp_path / "out.jsonl")])
    assert not os.path.exists(tmp_path / "out.jsonl.partial")


def test_a_file_that_is_not_a_checkpoint_and_a_folder_without_a_model_are_named(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(PredictError, match=f"--policy {cut}: cannot be read as a checkpoint.*incomplete"):
        run(["--policy", str(cut), "--data", data, "--output", str(tmp_path / "a.jsonl")])
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(PredictError, match=r"no config\.json.*checkpoints in it: .*last\.ckpt"):
        run(["--policy", str(tmp_path / "run"), "--data", data, "--output", str(tmp_path / "b.jsonl")])


def test_an_unwritable_output_folder_is_named_before_the_model_loads(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    (tmp_path / "a_file").write_text("", encoding="utf-8")
    import ift.predict.command as command

    monkeypatch.setattr(command, "load_policy", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(PredictError, match=f"the folder {tmp_path / 'a_file'} cannot be written"):
        run(["--policy", "tiny-gpt2", "--data", data, "--output", str(tmp_path / "a_file" / "out.jsonl")])


def test_an_existing_output_is_kept_without_overwrite(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    (tmp_path / "out.jsonl").write_text("earlier work\n", encoding="utf-8")
    with pytest.raises(PredictError, match="already exists; pass --overwrite"):
        run(["--policy", "tiny-gpt2", "--data", data, "--output", str(tmp_path / "out.jsonl")])
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == "earlier work\n"
    assert len(predict_lines("tiny-gpt2", data, tmp_path / "out.jsonl", "--overwrite")) == len(PROMPTS)


def test_the_default_output_lies_next_to_the_prompts(tmp_path, capsys):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    run(["--policy", "tiny-gpt2", "--data", data, "--max_new_tokens", "2"])
    assert len(read_jsonl(tmp_path / "prompts.predictions.jsonl")) == len(PROMPTS)


def test_an_error_mid_run_keeps_the_lines_written_in_a_partial_file(tmp_path, monkeypatch):
    import ift.predict.generate as generate

    real, calls = generate.generate_responses, []

    def fail_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "generate_responses", fail_on_the_second_batch)
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    with pytest.raises(RuntimeError, match="out of memory"):
        run(["--policy", "tiny-gpt2", "--data", data, "--output", str(tmp_path / "out.jsonl"), "--batch_size", "2"])
    assert not (tmp_path / "out.jsonl").exists()
    assert len(read_jsonl(tmp_path / "out.jsonl.partial")) == 2


@pytest.mark.parametrize("options, message", [
    (["--num_samples", "2"], "--num_samples 2 with greedy decoding"),
    (["--temperature", "-1"], "--temperature must be 0"),
    (["--max_new_tokens", "0"], "--max_new_tokens must be at least 1"),
    (["--max_new_tokens", "600"], "--max_new_tokens 600 leaves no room for a prompt"),
])
def test_options_that_cannot_be_meant_stop_with_the_option_named(tmp_path, options, message):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    with pytest.raises(PredictError, match=message):
        run(["--policy", "tiny-gpt2", "--data", data, "--output", str(tmp_path / "out.jsonl"), *options])


def test_a_long_prompt_is_cut_from_the_left_and_counted(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "1" * 600 + "+2="}, {"prompt": "1+2="}])
    result = run(["--policy", "tiny-gpt2", "--data", data, "--output", str(tmp_path / "out.jsonl"),
                  "--max_new_tokens", "4"])
    assert result.cut == 1 and result.responses == 2
    assert "1 prompts cut to fit the context" in result.summary()


def test_the_cli_entry_runs_end_to_end_and_prints_a_summary(trained, tmp_path, capsys):
    checkpoint, _ = trained
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    output = tmp_path / "predictions" / "out.jsonl"
    result = main(["predict", "--policy", checkpoint, "--data", data, "--output", str(output),
                   "--max-new-tokens", "4", "--batch-size", "3"])  # dashed spellings are accepted too
    assert result.output == str(output)
    lines = read_jsonl(output)
    assert len(lines) == len(PROMPTS)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    mean = sum(line["score"] for line in lines if "score" in line) / 3
    assert err == (f"ift predict: {len(PROMPTS)} responses to {len(PROMPTS)} prompts; mean score {mean:.4f} over 3 "
                   f"with an answer" + _unfinished(lines) + f"; written to {output}")


def _unfinished(lines) -> str:
    count = sum(not line["finished"] for line in lines)
    return f"; {count} stopped at max_new_tokens" if count else ""


def test_the_cli_entry_turns_errors_into_one_message(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--policy", str(tmp_path / "nothing.ckpt"), "--data", data])
    assert str(stop.value.code).startswith(f"ift predict: error: --policy {tmp_path / 'nothing.ckpt'}: no such")
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--policy", "tiny-gpt2", "--data", str(tmp_path / "missing.jsonl")])
    assert str(stop.value.code) == f"ift predict: error: --data {tmp_path / 'missing.jsonl'}: no such file"


def test_help_names_the_predict_command(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    assert "ift predict --help" in capsys.readouterr().out
