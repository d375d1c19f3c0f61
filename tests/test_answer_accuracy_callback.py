"""Held-out answer accuracy is a callback (:class:`ift.callbacks.AnswerAccuracy`), not a
module setting: it logs ``val/accuracy`` as greedy decoding and the answer rule give it by
hand, honours ``answer_trigger``, skips batches without answers, and is recorded in
checkpoints; ``FineTuneModule`` has no ``eval_*`` arguments left, and an old config or call
that gives one is told where they went."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from factories import quiet_trainer, tiny_arithmetic, tiny_module
from ift.callbacks import AnswerAccuracy
from ift.callbacks.answer_accuracy import recorded_answer_settings, recorded_answer_trigger
from ift.core.generation import generate_responses
from ift.data import PromptResponseDataModule
from ift.modules import FineTuneModule
from ift.rewards.answer import AnswerMatchReward, answers_match

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")]

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["12+13=", "8-16=", "12-9=", "11+18=", "16-4="]
MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def module():
    """A tiny model trained a few SFT steps on arithmetic, so that its greedy answers hold numbers."""
    module = tiny_module(optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    quiet_trainer(max_steps=30, limit_val_batches=0).fit(module, datamodule=tiny_arithmetic(32, 8))
    return module


def prompt_data(folder: Path, answers) -> PromptResponseDataModule:
    """The prompts of ``PROMPTS`` with these reference answers, in held-out batches of 2, 2 and 1."""
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in zip(PROMPTS, answers)))
    return PromptResponseDataModule(train_data=str(path), val_data=str(path), response_key=None,
                                    answer_key="answer", batch_size=2, eval_batch_size=2)


def greedy_texts(module, data) -> list:
    """Greedy responses to the held-out prompts, batch by batch as validation makes them."""
    data.tokenizer = module.tokenizer
    data.setup("validate")
    texts = []
    for batch in data.val_dataloader():
        ids, _ = generate_responses(module.policy, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                    eos_token_id=module.tokenizer.eos_token_id,
                                    pad_token_id=module.tokenizer.pad_token_id, max_new_tokens=MAX_NEW_TOKENS)
        texts += module.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return texts


def validate(module, data, *callbacks) -> dict:
    trainer = quiet_trainer(callbacks=list(callbacks))
    trainer.validate(module, datamodule=data, verbose=False)
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


@pytest.fixture(scope="module")
def answered(module, tmp_path_factory):
    """Data whose even rows' answers are what the model answers (by the liberal rule) and whose
    odd rows' are wrong, and the greedy responses to it."""
    folder = tmp_path_factory.mktemp("answers")
    texts = greedy_texts(module, prompt_data(folder, ["0"] * len(PROMPTS)))
    liberal = AnswerMatchReward()
    answers = [(f"{liberal.extract(text):g}" if liberal.extract(text) is not None else "1") if i % 2 == 0
               else "-12345" for i, text in enumerate(texts)]
    data = prompt_data(folder, answers)
    assert greedy_texts(module, data) == texts
    return data, texts, answers


def hand_accuracy(texts, answers, trigger=None) -> float:
    rule = AnswerMatchReward(trigger=trigger)
    hits = [answers_match(rule.extract(text), gold) for text, gold in zip(texts, answers)]
    return sum(hits) / len(hits)


def test_val_accuracy_is_greedy_decoding_and_the_answer_rule_by_hand(module, answered):
    data, texts, answers = answered
    expected = hand_accuracy(texts, answers)
    assert expected > 0, texts  # the model answers with numbers: a real test of the rule, not 0 == 0
    metrics = validate(module, data, AnswerAccuracy(max_new_tokens=MAX_NEW_TOKENS))
    assert metrics["val/accuracy"] == pytest.approx(expected)


def test_the_answer_trigger_decides_what_counts_as_an_answer(module, answered):
    data, texts, answers = answered
    trigger = ["answer:"]
    metrics = validate(module, data, AnswerAccuracy(max_new_tokens=MAX_NEW_TOKENS, answer_trigger=trigger),
                       AnswerAccuracy(max_new_tokens=MAX_NEW_TOKENS, name="liberal_accuracy"))
    assert metrics["val/accuracy"] == pytest.approx(hand_accuracy(texts, answers, trigger))
    assert metrics["val/liberal_accuracy"] == pytest.approx(hand_accuracy(texts, answers))
    assert metrics["val/accuracy"] < metrics["val/liberal_accuracy"]  # no "answer:" in these responses


def test_max_new_tokens_bounds_the_decoded_answer(module, answered):
    data, texts, answers = answered
    short = validate(module, data, AnswerAccuracy(max_new_tokens=1))["val/accuracy"]
    assert short == pytest.approx(hand_accuracy([text[:1] for text in texts], answers))


def test_batches_without_answers_are_skipped(module, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": "1"}) + "\n" for p in PROMPTS))
    data = PromptResponseDataModule(train_data=str(path), val_data=str(path), batch_size=2, eval_batch_size=2)
    accuracy = AnswerAccuracy()
    calls = []
    accuracy.hits = lambda pl_module, batch: calls.append(batch) or torch.ones(1)
    metrics = validate(module, data, accuracy)
    assert "val/loss" in metrics and "val/accuracy" not in metrics and not calls
    # Not even a mapping: nothing to measure either.
    accuracy.on_validation_batch_end(None, module, None, (torch.zeros(1),), 0)
    assert not calls


def test_test_runs_log_test_accuracy(module):
    trainer = quiet_trainer(callbacks=[AnswerAccuracy(max_new_tokens=2)])
    trainer.test(module, datamodule=tiny_arithmetic(8, 4), verbose=False)
    assert "test/accuracy" in trainer.callback_metrics and "val/accuracy" not in trainer.callback_metrics


def test_bad_settings_are_refused_at_construction():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_new_tokens"):
            AnswerAccuracy(max_new_tokens=bad)
    with pytest.raises(ValueError, match="name"):
        AnswerAccuracy(name="val/accuracy")


# ---------------------------------------------------------------------------- checkpoints
def test_a_checkpoint_records_the_settings_and_an_old_one_still_loads(module, tmp_path):
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0,
                            callbacks=[AnswerAccuracy(max_new_tokens=7, answer_trigger=["####"])])
    trainer.fit(tiny_module(), datamodule=tiny_arithmetic(4, 4))
    path = tmp_path / "new.ckpt"
    trainer.save_checkpoint(path)
    assert recorded_answer_settings(str(path)) == {"max_new_tokens": 7, "answer_trigger": ["####"], "name": "accuracy"}
    # A checkpoint of the module as it was, with the eval_* hyper-parameters, loads (Lightning
    # drops the arguments __init__ no longer takes) and still names its answer rule.
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["callbacks"]
    checkpoint["hyper_parameters"].update(eval_accuracy=True, eval_max_new_tokens=9, eval_answer_trigger="answer:")
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    loaded = FineTuneModule.load_from_checkpoint(str(old), map_location="cpu")
    assert not any(key.startswith("eval_") for key in loaded.hparams)
    assert recorded_answer_trigger(str(old)) == "answer:"
    assert recorded_answer_settings(checkpoint)["max_new_tokens"] == 9
    checkpoint["hyper_parameters"]["eval_accuracy"] = False
    assert recorded_answer_settings(checkpoint) is None


# ---------------------------------------------------------------------------- the module's arguments
def test_the_module_has_no_evaluation_arguments():
    parameters = inspect.signature(FineTuneModule.__init__).parameters
    assert not [name for name in parameters if name.startswith("eval_")]
    assert not any(hasattr(FineTuneModule, name) for name in ("answer_hits", "answer_accuracy", "accuracy_metrics"))


@pytest.mark.parametrize("argument", [dict(eval_accuracy=False), dict(eval_max_new_tokens=3),
                                      dict(eval_answer_trigger=["answer:"])])
def test_an_old_argument_in_python_names_the_callback(argument):
    with pytest.raises(TypeError) as error:
        FineTuneModule(model="tiny-gpt2", **argument)
    message = str(error.value)
    assert f"no longer takes {next(iter(argument))}" in message
    assert "ift.callbacks.AnswerAccuracy" in message and "trainer" in message and "callbacks" in message


def test_an_old_config_key_names_the_callback(tmp_path, capsys):
    from ift.cli import main

    # configs/arithmetic/sft.yaml as it was written before: the evaluation settings under model:.
    text = (ROOT / "configs" / "arithmetic" / "sft.yaml").read_text()
    assert text.count("\nmodel:\n") == 1
    config = tmp_path / "old.yaml"
    config.write_text(text.replace("\nmodel:\n", "\nmodel:\n  eval_accuracy: true\n  eval_max_new_tokens: 5\n"))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "eval_accuracy" in err and "ift.callbacks.AnswerAccuracy" in err and "- class_path:" in err
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs" / "arithmetic" / "sft.yaml"), "--model.eval_max_new_tokens", "5",
              "--trainer.default_root_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "no longer takes eval_max_new_tokens" in err and "its max_new_tokens" in err
