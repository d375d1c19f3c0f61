"""The end-of-run summary names the metrics and the files this run wrote, at their real paths."""

from __future__ import annotations

import os

import pytest
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from factories import quiet_trainer, tiny_arithmetic, tiny_module
from ift.cli.summary import final_metrics, summarize_run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def fit_once(tmp_path):
    logger = CSVLogger(str(tmp_path), name="logs")
    trainer = quiet_trainer(tmp_path, [ModelCheckpoint(save_last=True)], logger=logger, max_steps=2,
                            limit_val_batches=1, enable_checkpointing=True)
    trainer.fit(tiny_module(), datamodule=tiny_arithmetic(8, 4))
    return trainer, summarize_run(trainer, "fit", seconds=3.0, run_folder=logger.log_dir)


def test_the_summary_names_metrics_and_files_of_this_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer, text = fit_once(tmp_path)
    assert text.startswith("ift fit finished: 2 optimizer steps")
    metrics_line = next(line for line in text.splitlines() if line.startswith("  final metrics: "))
    names = [item.rsplit(" ", 1)[0] for item in metrics_line[len("  final metrics: "):].split(", ")]
    assert "train/loss" in names and "val/loss" in names and not any(n.endswith(("_step", "_epoch")) for n in names)
    checkpoints = [line.split(None, 1)[1] for line in text.splitlines() if line.strip().startswith("checkpoint:")]
    assert checkpoints and all(os.path.isfile(path) for path in checkpoints)
    metrics = [line.split(None, 1)[1] for line in text.splitlines() if line.strip().startswith("metrics:")]
    assert metrics == [os.path.join("logs", "version_0", "metrics.csv")]


def test_a_second_run_in_the_same_folder_names_its_own_version(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit_once(tmp_path)
    _, text = fit_once(tmp_path)
    assert os.path.join("logs", "version_1", "metrics.csv") in text
    assert os.path.join("logs", "version_0") not in text


def test_final_metrics_keep_epoch_values_and_drop_step_copies():
    import torch

    rows = final_metrics({"train/loss_step": torch.tensor(9.0), "train/loss_epoch": torch.tensor(1.0),
                          "val/accuracy": 0.5, "table": torch.zeros(3)})
    assert rows == [("train/loss", 1.0), ("val/accuracy", 0.5)]


def test_ift_fit_and_validate_end_with_the_summary_of_their_own_run(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from ift.cli import main

    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parent.parent / "configs" / "arithmetic" / "sft.yaml"
    args = ["--config", str(config), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--data.init_args.num_train", "64", "--data.init_args.num_val", "4",
            "--trainer.check_val_every_n_epoch", "1"]
    main(["fit", *args])
    main(["fit", *args])  # a second run in the same folder: version_1
    err = capsys.readouterr().err
    second = err[err.rindex("ift fit finished"):]
    assert second.startswith("ift fit finished: 1 optimizer step, 1 epoch")  # 64 examples, batches of 64
    assert "val/accuracy" in second
    for kind, name in (("config:", "config.yaml"), ("metrics:", "metrics.csv")):
        line = next(line for line in second.splitlines() if line.strip().startswith(kind))
        path = line.split(None, 1)[1]
        assert os.path.basename(path) == name and "version_1" in path and os.path.isfile(path), line
    checkpoint = next(line for line in second.splitlines() if line.strip().startswith("checkpoint:")).split(None, 1)[1]
    assert "version_1" in checkpoint and os.path.isfile(checkpoint)
    main(["validate", *args, "--ckpt_path", checkpoint])
    assert "ift validate finished" in capsys.readouterr().err
