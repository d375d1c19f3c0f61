"""The real-model configs run as shipped, with only the model and the dataset swapped for
local tiny ones (a model saved with ``save_pretrained``, data read through the same
``datasets.load_dataset`` path, same splits and columns) and the accelerator set to CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from eco_helpers import ROOT, chat_rows, save_tiny_model, write_jsonl, write_parquet
from ift.cli import main

ULTRACHAT = ROOT / "configs" / "chat" / "ift_ultrachat.yaml"
GSM8K = ROOT / "configs" / "math" / "reft_gsm8k.yaml"
CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"]


def test_configs_name_real_models_and_datasets():
    chat = yaml.safe_load(ULTRACHAT.read_text())
    assert chat["model"]["model"].startswith("Qwen/") and chat["trainer"]["precision"] == "bf16-mixed"
    assert chat["model"]["objective"] == {"class_path": "IFT", "init_args": {"lam": 0.2, "gamma": 0.95}}
    assert chat["data"]["init_args"]["train_data"] == "HuggingFaceH4/ultrachat_200k"
    math_config = yaml.safe_load(GSM8K.read_text())
    stages = math_config["model"]["objective"]["init_args"]["stages"]
    assert [s["objective"]["class_path"] for s in stages] == ["SFT", "PPO"]
    assert math_config["data"]["init_args"]["train_data"] == "openai/gsm8k"
    for path in (ULTRACHAT, GSM8K):  # documented: memory and time
        text = path.read_text()
        assert "memory:" in text and "time:" in text


def test_ift_ultrachat_config_runs_with_a_local_tiny_model(tmp_path):
    model = save_tiny_model(tmp_path / "model")  # the character tokenizer carries a chat template
    rows = chat_rows(6)
    files = {"train_sft": write_parquet(tmp_path / "train.parquet", rows),
             "test_sft": write_parquet(tmp_path / "test.parquet", rows[:2])}
    kwargs = json.dumps({"data_files": files, "cache_dir": str(tmp_path / "hf")})
    cli = main(["fit", "--config", str(ULTRACHAT), *CPU, "--trainer.fast_dev_run", "true",
                "--trainer.default_root_dir", str(tmp_path / "run"),
                "--model.model", model,
                "--data.init_args.train_data", "parquet", "--data.init_args.val_data", "parquet",
                "--data.init_args.dataset_kwargs", kwargs])
    trainer, module = cli.trainer, cli.model
    assert trainer.state.finished and trainer.global_step == 1
    assert trainer.precision == "bf16-mixed"  # the shipped precision, on the CPU
    assert type(module.objective).__name__ == "IFT" and module.objective.lam == 0.2
    assert type(trainer.optimizers[0]).__name__ == "RMSprop"
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert type(scheduler).__name__ == "WarmupCosineLR" and scheduler.total_steps >= 1
    assert module.tokenizer.chat_template and torch.isfinite(trainer.callback_metrics["train/loss"])
    exports = list((tmp_path / "run").glob("**/export/final"))
    assert len(exports) == 1
    AutoModelForCausalLM.from_pretrained(str(exports[0]))


def gsm8k_rows(count):
    rows = []
    for i in range(count):
        a, b = i + 3, 2 * i + 1
        rows.append({"question": f"Tom has {a} apples and gets {b}. How many?",
                     "answer": f"He has {a}+{b}=<<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"})
    return rows


def test_reft_gsm8k_config_runs_sft_then_ppo_with_a_local_tiny_model(tmp_path):
    pytest.importorskip("ift.objectives.recipes")
    objectives = pytest.importorskip("ift.objectives")
    if not hasattr(objectives, "PPO") or not hasattr(objectives, "Sequential"):
        pytest.skip("PPO / Sequential are not available yet")
    model = save_tiny_model(tmp_path / "model")
    files = {"train": write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(4)),
             "test": write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(2))}
    kwargs = json.dumps({"data_files": files, "cache_dir": str(tmp_path / "hf")})
    # 4 problems in one batch: one batch per epoch, so the 2 + 3 epochs of the stages are
    # 2 SFT steps then 3 PPO iterations, exactly as the shipped stages say.
    cli = main(["fit", "--config", str(GSM8K), *CPU, "--trainer.default_root_dir", str(tmp_path / "run"),
                "--trainer.limit_val_batches", "1", "--model.eval_max_new_tokens", "8",
                "--model.model", model,
                "--data.init_args.train_data", "json", "--data.init_args.val_data", "json",
                "--data.init_args.dataset_kwargs", kwargs,
                "--data.init_args.batch_size", "4", "--data.init_args.eval_batch_size", "2"])
    trainer, module = cli.trainer, cli.model
    assert trainer.state.finished and trainer.current_epoch == 5
    recipe = module.objective
    assert type(recipe).__name__ == "Sequential" and recipe.stage_index == 1
    assert type(recipe.current).__name__ == "PPO"
    assert "train/score" in trainer.callback_metrics and "val/accuracy" in trainer.callback_metrics
    export_dirs = sorted(p.name for p in Path(tmp_path / "run").glob("**/export/*"))
    assert export_dirs == ["final", "switch-1-before-ppo"]


def test_warmup_cosine_schedule_learns_its_length_from_the_trainer():
    from ift.optim import WarmupCosineLR

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosineLR(optimizer, warmup_ratio=0.1)
    schedule.set_total_steps(100)  # what FineTuneModule.configure_optimizers does
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01
    fixed = WarmupCosineLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), total_steps=10)
    fixed.set_total_steps(1000)
    assert fixed.total_steps == 10  # an explicit length wins
