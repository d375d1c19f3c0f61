"""Every config of configs/reward/ runs one step through ``ift fit`` (fast_dev_run), with its
shipped data (made absolute: the tests run in a temporary folder), on the CPU. The PPO config
scores with a reward model that the reward-model config trained and exported just before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from eco_helpers import ROOT
from ift.cli import main

CONFIGS = ROOT / "configs" / "reward"
CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"]
TESTED = {"reward_model.yaml", "codepmp_pretrain.yaml", "ppo_with_reward_model.yaml"}


def absolute_data(config: Path) -> list:
    """``--data.init_args.<split>_data`` overrides naming the config's data files absolutely."""
    init = yaml.safe_load(config.read_text())["data"]["init_args"]
    args = []
    for key in ("train_data", "val_data"):
        if init.get(key):
            path = ROOT / init[key]
            assert path.is_file(), path
            args += [f"--data.init_args.{key}", str(path)]
    return args


def fit(config: Path, tmp_path: Path, *extra: str):
    cli = main(["fit", "--config", str(config), *CPU, "--trainer.fast_dev_run", "true",
                "--trainer.default_root_dir", str(tmp_path / "run"), *absolute_data(config), *extra])
    assert cli.trainer.state.finished
    return cli


def test_every_reward_config_is_tested():
    assert {path.name for path in CONFIGS.glob("*.yaml")} == TESTED


def test_reward_model_config_trains_and_exports_a_scorer(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from ift.rewards import RewardModelScore

    cli = fit(CONFIGS / "reward_model.yaml", tmp_path)
    objective = cli.model.objective
    assert type(objective).__name__ == "RewardModeling" and objective.lm_weight == 0.0
    metrics = cli.trainer.callback_metrics
    assert {"train/pairwise_accuracy", "train/reward_margin", "val/pairwise_accuracy"} <= set(metrics)
    folder = Path("runs/reward_model/final")  # the config's relative dirpath, under the test's folder
    assert AutoModelForSequenceClassification.from_pretrained(str(folder)).config.num_labels == 1
    scores = RewardModelScore(str(folder), device="cpu")(["1+2*3="], ["2*3=6,1+6=7 answer: 7"], [{}])
    assert len(scores) == 1 and torch.isfinite(torch.tensor(scores)).all()


def test_codepmp_config_adds_the_language_modelling_loss(tmp_path):
    config = CONFIGS / "codepmp_pretrain.yaml"
    assert yaml.safe_load(config.read_text())["model"]["objective"]["init_args"]["lm_weight"] == 1.0
    cli = fit(config, tmp_path)
    metrics = cli.trainer.callback_metrics
    assert cli.model.objective.lm_weight == 1.0
    assert {"train/bt_loss", "train/lm_loss"} <= set(metrics)
    assert abs(metrics["train/loss"] - metrics["train/bt_loss"] - metrics["train/lm_loss"]) < 1e-4
    assert Path("runs/codepmp/final/config.json").is_file()


def test_ppo_config_scores_with_an_exported_reward_model(tmp_path):
    fit(CONFIGS / "reward_model.yaml", tmp_path / "rm")
    folder = tmp_path / "runs" / "reward_model" / "final"  # relative dirpath: under the working folder
    assert (folder / "config.json").is_file()
    cli = fit(CONFIGS / "ppo_with_reward_model.yaml", tmp_path / "ppo",
              "--model.objective.init_args.reward.init_args.model_name_or_path", str(folder),
              "--model.objective.init_args.max_new_tokens", "8", "--trainer.callbacks.init_args.max_new_tokens", "8")
    reward = cli.model.objective.reward
    assert type(reward).__name__ == "RewardModelScore" and reward.model_name_or_path == str(folder)
    assert "train/score" in cli.trainer.callback_metrics
