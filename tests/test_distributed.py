"""Two-process DDP fits on CPU (gloo) through the ``ift`` command, as a user runs them:
``--trainer.strategy ddp --trainer.devices 2``. After each fit both ranks must hold the
same parameters (DDP averaged every update), those parameters must have moved, and the
logged validation metrics must be the same on both ranks (synced, not rank 0's shard)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import DISTRIBUTED_VARIABLES

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "arithmetic"

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def _short_config(name: str, tmp_path: Path) -> Path:
    """The shipped config, shrunk to a few steps, with the rank recorder attached."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    trainer = config["trainer"]
    trainer.update(max_epochs=2, check_val_every_n_epoch=1, log_every_n_steps=1, limit_val_batches=1,
                   enable_progress_bar=False, default_root_dir=str(tmp_path / "run"))
    trainer["callbacks"] = [
        {"class_path": "ddp_probe.RecordRankState", "init_args": {"out_dir": str(tmp_path / "ranks")}},
        {"class_path": "ift.callbacks.ExportPretrained", "init_args": {"dirpath": str(tmp_path / "export")}},
    ]
    data = config["data"]["init_args"]
    data.update(num_train=128, num_val=64, batch_size=16, eval_batch_size=32)
    objective = config["model"]["objective"]
    if objective["class_path"] == "PPO":
        objective["init_args"].update(mini_batch_size=32, samples_per_prompt=2, ppo_epochs=1)
        trainer.update(max_epochs=1, limit_train_batches=2)
    if objective["class_path"] == "Sequential":
        for stage in objective["init_args"]["stages"]:
            stage["epochs"] = 1
            if stage["objective"]["class_path"] == "PPO":
                stage["objective"]["init_args"].update(mini_batch_size=32, samples_per_prompt=2, ppo_epochs=1)
        trainer.update(limit_train_batches=2)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _fit_on_two_processes(name: str, tmp_path: Path) -> list:
    config = _short_config(name, tmp_path)
    # A fresh launch: no rank variables inherited from this process (with LOCAL_RANK set,
    # Lightning takes itself for an already launched rank and starts no second process).
    env = {name: value for name, value in os.environ.items() if name not in DISTRIBUTED_VARIABLES}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "ift.cli", "fit", "--config", str(config),
               "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name} under DDP failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    ranks = [torch.load(tmp_path / "ranks" / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    ranks.append(torch.load(tmp_path / "ranks" / "initial.pt", weights_only=False))
    return ranks


@pytest.mark.parametrize("name", ["sft.yaml", "ift.yaml", "ppo.yaml", "sft_then_ppo.yaml"])
def test_two_process_ddp_fit_keeps_ranks_in_agreement(name, tmp_path):
    rank0, rank1, initial = _fit_on_two_processes(name, tmp_path)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["global_step"] == rank1["global_step"] > 0
    assert rank0["batches"] == rank1["batches"] > 0  # every rank trained (PPO: rolled out) on its shard
    assert rank0["parameters"].keys() == rank1["parameters"].keys() == initial.keys()
    for key, value in rank0["parameters"].items():
        assert torch.equal(value, rank1["parameters"][key]), f"{name}: ranks disagree on {key}"
    moved = [key for key, value in rank0["parameters"].items() if not torch.equal(value, initial[key])]
    assert moved, f"{name}: no parameter changed"
    # Validation metrics are reduced over ranks: both ranks log the same value.
    assert rank0["val_metrics"] and rank0["val_metrics"] == rank1["val_metrics"]
    assert (tmp_path / "export" / "final" / "config.json").exists()
