"""The shipped SFT and IFT arithmetic configs are the task and budget that
tests/test_learning_arithmetic.py measures, so the accuracy their headers promise is the
one the slow test checks on every seed. The SFT -> critic-free configs (grpo.yaml and its
variants) are one recipe with only the RL objective changed, and both of their stages run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from ift.lab.arithmetic_learning import LearningSettings

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "arithmetic"
SETTINGS = LearningSettings()


@pytest.mark.parametrize("name, objective", [("sft", "SFT"), ("ift", "IFT")])
def test_the_config_is_the_measured_task_and_budget(name, objective):
    text = (CONFIGS / f"{name}.yaml").read_text()
    config = yaml.safe_load(text)
    data = config["data"]["init_args"]
    assert (data["max_operand"], data["num_train"], data["num_val"], data["batch_size"], data["operators"]) == (
        SETTINGS.max_operand, SETTINGS.num_train, SETTINGS.num_val, SETTINGS.batch_size, "+")
    assert config["model"]["optimizer"]["init_args"]["lr"] == SETTINGS.lr
    assert config["model"]["max_grad_norm"] is None  # ift.lab.arithmetic_learning trains SFT and IFT unclipped
    assert config["model"]["objective"]["class_path"] == objective
    if objective == "IFT":
        assert config["model"]["objective"]["init_args"] == {"lam": SETTINGS.lam, "gamma": SETTINGS.gamma}
    # The last validation runs at the end of the budget (an epoch boundary).
    batches = -(-data["num_train"] // data["batch_size"])
    assert SETTINGS.eval_steps[-1] % batches == 0
    epochs = SETTINGS.eval_steps[-1] // batches
    # An epoch budget, not max_steps: Lightning 2.6 resumes an end-of-epoch checkpoint under
    # max_steps without training a step.
    assert config["trainer"]["max_epochs"] == epochs and "max_steps" not in config["trainer"]
    assert epochs % config["trainer"]["check_val_every_n_epoch"] == 0
    assert re.search(r"What to expect: .*val/accuracy", text, re.S), "the header states the expected accuracy"


# ---------------------------------------------------------------------------- SFT -> the critic-free objectives
#: config -> the objective of its RL stage (each one an SFT warm-up, then that objective).
CRITIC_FREE = {"grpo": "GRPO", "dr_grpo": "DrGRPO", "dapo": "DAPO", "gspo": "GSPO", "cispo": "CISPO",
               "rloo": "RLOO", "reinforce_pp": "ReinforcePlusPlus"}


def longest_worked_solution(max_operand: int, operators: str) -> int:
    """Characters (= tokens of the character tokenizer) of the longest two-operand worked solution."""
    from ift.tasks.arithmetic.generator import evaluate_with_steps

    return max(len(f"{','.join(steps)} answer: {value}")
               for a in range(max_operand + 1) for b in range(max_operand + 1) for op in operators
               for value, steps in [evaluate_with_steps([a, b], [op])])


@pytest.mark.parametrize("name, objective", CRITIC_FREE.items())
def test_critic_free_configs_are_one_recipe_with_the_named_objective(name, objective):
    """Every variant is grpo.yaml with only its RL objective (and that objective's own options)
    changed, so their measured accuracies compare; the reward reads answers as val/accuracy does."""
    text = (CONFIGS / f"{name}.yaml").read_text()
    config = yaml.safe_load(text)
    reference = yaml.safe_load((CONFIGS / "grpo.yaml").read_text())
    assert f"ift fit --config configs/arithmetic/{name}.yaml" in text
    assert re.search(r"What to expect[^:]*: .*val/accuracy", text, re.S), "the header states the expected accuracy"
    assert {key: config[key] for key in ("data", "trainer", "seed_everything")} == {
        key: reference[key] for key in ("data", "trainer", "seed_everything")}
    assert config["model"]["optimizer"] == reference["model"]["optimizer"]
    stages = config["model"]["objective"]["init_args"]["stages"]
    reference_stages = reference["model"]["objective"]["init_args"]["stages"]
    assert [stage["objective"]["class_path"] for stage in stages] == ["SFT", objective]
    assert stages[0] == reference_stages[0]
    assert {k: v for k, v in stages[1].items() if k not in ("objective", "name")} == {
        k: v for k, v in reference_stages[1].items() if k not in ("objective", "name")}
    assert config["trainer"]["max_epochs"] == sum(stage["epochs"] for stage in stages)
    rl = stages[1]["objective"]["init_args"]
    shared = ("reward", "num_generations", "epochs", "mini_batch_size", "temperature")
    assert {key: rl[key] for key in shared} == {key: reference_stages[1]["objective"]["init_args"][key] for key in shared}
    (accuracy,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("AnswerAccuracy")]
    assert rl["reward"]["init_args"]["trigger"] == accuracy["init_args"]["answer_trigger"] == ["answer:"]
    # Responses have room for the longest worked solution and its EOS, in training and in val/accuracy.
    data = config["data"]["init_args"]
    assert data["worked_solution"] and data["num_train"] % data["batch_size"] == 0
    longest = longest_worked_solution(data["max_operand"], data["operators"]) + 1
    assert min(rl["max_new_tokens"], accuracy["init_args"]["max_new_tokens"]) >= longest
    assert data["batch_size"] * rl["num_generations"] % rl["mini_batch_size"] == 0


@pytest.mark.parametrize("name, objective", CRITIC_FREE.items())
def test_critic_free_config_runs_both_stages(name, objective, tmp_path):
    """The shipped recipe made small (1 SFT epoch, then 1 epoch of the objective, on 8
    problems): the RL stage samples, scores and updates. (tests/test_cli.py's fast_dev_run of
    every arithmetic config reaches only the SFT stage.)"""
    from ift.cli import main

    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    stages = config["model"]["objective"]["init_args"]["stages"]
    stages[0]["epochs"] = stages[1]["epochs"] = 1
    config["trainer"].update(max_epochs=2, enable_progress_bar=False)
    config["data"]["init_args"].update(num_train=8, num_val=4, batch_size=8, eval_batch_size=4)
    small = tmp_path / f"{name}.yaml"
    small.write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(small), "--trainer.default_root_dir", str(tmp_path / "run")])
    trainer, recipe = cli.trainer, cli.model.objective
    assert trainer.state.finished and trainer.current_epoch == 2
    assert type(recipe).__name__ == "Sequential" and type(recipe.current).__name__ == objective
    assert recipe.current.num_generations == stages[1]["objective"]["init_args"]["num_generations"]
    logged = trainer.callback_metrics
    expected = ["train/score", "train/policy_loss", "train/zero_variance_groups", "val/accuracy"]
    expected += ["train/kl_ref"] if recipe.current.beta > 0 else []
    expected += ["train/groups_dropped", "train/overlong_penalty"] if objective == "DAPO" else []
    for key in expected:
        assert key in logged and torch.isfinite(logged[key]), key
    assert logged["train/updates"] >= 1


def test_the_vllm_config_is_the_grpo_config_with_a_vllm_sampler():
    vllm = yaml.safe_load((CONFIGS / "grpo_vllm.yaml").read_text())
    grpo = yaml.safe_load((CONFIGS / "grpo.yaml").read_text())
    sampler = vllm["model"]["objective"]["init_args"]["stages"][1]["objective"]["init_args"].pop("sampler")
    assert sampler["class_path"] == "ift.core.vllm_sampler.VLLMSampler"
    assert vllm == grpo  # nothing else differs
    assert "ift fit --config configs/arithmetic/grpo_vllm.yaml" in (CONFIGS / "grpo_vllm.yaml").read_text()
