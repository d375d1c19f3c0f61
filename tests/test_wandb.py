"""W&B logging offline with nothing but ``WANDB_MODE=offline`` set: the run folder holds the
resolved config and the samples table; runs sharing a folder each keep their own config
(W&B and no logger); pictures are logged when the file exists."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from eco_helpers import ROOT
from factories import quiet_trainer
from ift.cli import main

wandb = pytest.importorskip("wandb")

WANDB_CONFIG = ROOT / "configs" / "logger" / "wandb.yaml"
IFT_CONFIG = ROOT / "configs" / "arithmetic" / "ift.yaml"
SMALL = ["--data.init_args.num_train", "32", "--data.init_args.num_val", "4", "--data.init_args.num_test", "4",
         "--data.init_args.batch_size", "8", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
         "--trainer.enable_progress_bar", "false"]


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    """Only WANDB_MODE=offline; every other W&B variable unset; work inside tmp_path."""
    for name in list(os.environ):
        if name.startswith("WANDB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    # W&B's service process resolves relative paths against the folder it started in: start
    # a fresh one here (a real run is one process in one folder).
    wandb.teardown()
    yield tmp_path
    wandb.finish()
    wandb.teardown()


def fit(*extra):
    cli = main(["fit", "--config", str(IFT_CONFIG), *SMALL, *[str(e) for e in extra]])
    wandb.finish()
    return cli


def record_holding(path, needles, timeout_s: float = 60.0) -> bytes:
    """The run record once it holds every one of ``needles`` (or at ``timeout_s``): W&B's own
    service process writes it, and under load it may still be flushing when ``finish()`` returns
    (seen once in CI: the file held only its header)."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = path.read_bytes() if path.exists() else b""
        if all(needle in record for needle in needles) or time.monotonic() > deadline:
            return record
        time.sleep(0.5)


def test_wandb_yaml_is_a_logger_fragment():
    fragment = yaml.safe_load(WANDB_CONFIG.read_text())
    assert set(fragment) == {"trainer"} and set(fragment["trainer"]) == {"logger"}
    assert fragment["trainer"]["logger"]["class_path"] == "pytorch_lightning.loggers.WandbLogger"


def test_offline_run_folder_holds_config_and_samples_table(offline_wandb):
    cli = fit("--config", WANDB_CONFIG, "--trainer.max_steps", 4,
              "--model.objective.init_args.lam", 0.3,
              "--trainer.callbacks+=ift.callbacks.SampleLogger", "--trainer.callbacks.every_n_steps", 2,
              "--trainer.callbacks.num_samples", 3, "--trainer.callbacks.max_new_tokens", 4)
    runs = list((offline_wandb / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    run = runs[0]
    run_id = run.name.rsplit("-", 1)[-1]
    # The resolved config: in the W&B run's files, in the run's own folder, and in the run record.
    saved = yaml.safe_load((run / "files" / "lightning_config.yaml").read_text())
    assert saved["model"]["objective"]["init_args"]["lam"] == 0.3
    assert (offline_wandb / "runs" / "ift" / run_id / "config.yaml").is_file()
    record = record_holding(run / f"run-{run_id}.wandb", [b"model.objective.init_args.lam", b"seed_everything"])
    assert b"model.objective.init_args.lam" in record and b"seed_everything" in record
    # The samples table: one file per logging (steps 2 and 4, and fit end is the same step 4).
    tables = sorted((run / "files" / "media" / "table").glob("samples_*.table.json"))
    assert len(tables) == 2
    latest = max((json.loads(t.read_text()) for t in tables), key=lambda t: len(t["data"]))
    assert latest["columns"] == ["step", "prompt", "response", "reference"]
    assert len(latest["data"]) == 6 and {row[0] for row in latest["data"]} == {2, 4}
    assert cli.trainer.global_step == 4


def test_two_runs_in_one_folder_keep_their_own_config(offline_wandb, tmp_path):
    # W&B: runs/<project>/<run id>/config.yaml, one per run.
    for lam in (0.1, 0.4):
        fit("--config", WANDB_CONFIG, "--trainer.max_steps", 1, "--model.objective.init_args.lam", lam)
    configs = sorted((tmp_path / "runs" / "ift").glob("*/config.yaml"))
    assert len(configs) == 2
    assert sorted(yaml.safe_load(c.read_text())["model"]["objective"]["init_args"]["lam"] for c in configs) == [0.1, 0.4]
    # No logger: <default_root_dir>/ift_runs/version_N/config.yaml (CSV's log_dir is versioned by Lightning).
    for lam in (0.1, 0.4):
        fit("--trainer.max_steps", 1, "--model.objective.init_args.lam", lam, "--trainer.default_root_dir",
            tmp_path / "nolog", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false")
    found = sorted((tmp_path / "nolog" / "ift_runs").glob("version_*/config.yaml"))
    assert [p.parent.name for p in found] == ["version_0", "version_1"]
    assert [yaml.safe_load(p.read_text())["model"]["objective"]["init_args"]["lam"] for p in found] == [0.1, 0.4]


def test_picture_is_logged_when_the_file_exists(offline_wandb, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    from ift.callbacks import log_image_file

    picture = tmp_path / "frozen_lake.png"
    plt.figure(figsize=(1, 1))
    plt.plot([0, 1], [1, 0])
    plt.savefig(picture)
    plt.close("all")
    logger = WandbLogger(project="ift", save_dir=str(tmp_path / "runs"))
    assert log_image_file([logger], str(picture), key="frozen_lake", step=0)
    assert not log_image_file([logger], str(tmp_path / "missing.png"))
    run_files = Path(logger.experiment.dir)
    wandb.finish()
    assert list((run_files / "media" / "images").glob("frozen_lake_*.png"))
    csv = CSVLogger(str(tmp_path / "csv"))
    assert log_image_file([csv], str(picture), key="frozen_lake", copy_to=csv.log_dir)
    assert (Path(csv.log_dir) / "frozen_lake.png").is_file()


def test_sample_logger_writes_markdown_for_csv_logger(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    from ift.callbacks import SampleLogger
    from ift.tasks.arithmetic import ArithmeticDataModule
    from ift.modules import FineTuneModule

    samples = SampleLogger(every_n_steps=1, num_samples=2, max_new_tokens=3, split="val")
    trainer = quiet_trainer(max_steps=2, logger=CSVLogger(str(tmp_path)), callbacks=[samples], limit_val_batches=0)
    data = ArithmeticDataModule(num_train=16, num_val=4, num_test=4, batch_size=8)
    trainer.fit(FineTuneModule(model="tiny-gpt2"), datamodule=data)
    text = (tmp_path / "lightning_logs" / "version_0" / "samples.md").read_text()
    assert text.count("### step") == 2 and "| step | prompt | response | reference |" in text
    assert len(samples.rows) == 4 and samples.rows[0][1] == data.datasets["val"][0]["prompt"]
