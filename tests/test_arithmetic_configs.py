"""The shipped SFT and IFT arithmetic configs are the task and budget that
tests/test_learning_arithmetic.py measures, so the accuracy their headers promise is the
one the slow test checks on every seed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
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
