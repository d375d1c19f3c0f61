"""What a skipped (nan/inf) optimizer step leaves in the logs: no loss at all for that step,
never the previous step's finite loss."""

from __future__ import annotations

import csv
import math

import pytest
from pytorch_lightning.loggers import CSVLogger

from ift.modules.nonfinite import NonFiniteLossWarning
from ift.rewards import AnswerMatchReward
from factories import ppo_settings, quiet_trainer, tiny_arithmetic, tiny_module
from test_fault_handling import FaultySFT, NanPPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def logged_losses(tmp_path, objective, steps: int):
    """``{step: train/loss_step as written in metrics.csv (None when empty)}``."""
    logger = CSVLogger(str(tmp_path), name="logs", version=0)
    trainer = quiet_trainer(tmp_path, logger=logger, log_every_n_steps=1, max_steps=steps, limit_val_batches=0)
    with pytest.warns(NonFiniteLossWarning):
        trainer.fit(tiny_module(objective), datamodule=tiny_arithmetic(32, 4))
    losses = {}
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            if "train/loss_step" in row and row.get("step") not in (None, ""):
                value = row["train/loss_step"]
                if value != "" or int(row["step"]) not in losses:
                    losses[int(row["step"])] = None if value == "" else float(value)
    return losses


def test_a_skipped_step_logs_no_loss_not_the_previous_one(tmp_path):
    losses = logged_losses(tmp_path, FaultySFT(nan_calls=(2,)), steps=5)
    # Steps 0, 1, 3, 4 trained and logged a finite loss; step 2 (the nan) logged none.
    finite = {step: value for step, value in losses.items() if value is not None and math.isfinite(value)}
    assert losses.get(2) is None or math.isnan(losses[2]), losses
    assert len(finite) >= 3, losses
    assert losses.get(2) != losses.get(1)


def test_a_ppo_batch_whose_every_update_was_skipped_logs_no_loss(tmp_path):
    logger = CSVLogger(str(tmp_path), name="logs", version=0)
    # 2 mini-batch updates per batch: the second batch's two updates (2, 3) are both nan.
    module = tiny_module(NanPPO(nan_updates=(2, 3), reward=AnswerMatchReward(), **ppo_settings()))
    trainer = quiet_trainer(tmp_path, logger=logger, log_every_n_steps=1, max_epochs=1, limit_train_batches=3,
                            limit_val_batches=0)
    with pytest.warns(NonFiniteLossWarning):
        trainer.fit(module, datamodule=tiny_arithmetic(16, 4))
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/ppo_updates_step", "") != ""]
    assert [float(row["train/ppo_updates_step"]) for row in rows] == [2.0, 0.0, 2.0]
    assert rows[1]["train/loss_step"] == "" and rows[0]["train/loss_step"] != "" and rows[2]["train/loss_step"] != ""
