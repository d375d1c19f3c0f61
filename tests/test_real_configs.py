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
GRPO_GSM8K = ROOT / "configs" / "math" / "grpo_gsm8k.yaml"
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
    for path in (ULTRACHAT, GSM8K, GRPO_GSM8K):  # documented: memory and time
        text = path.read_text()
        assert "memory:" in text and "time:" in text


def test_grpo_gsm8k_differs_from_reft_gsm8k_only_in_the_rl_stage():
    """grpo_gsm8k.yaml's header says so: the same model, warm-up, data and evaluation."""
    grpo, reft = yaml.safe_load(GRPO_GSM8K.read_text()), yaml.safe_load(GSM8K.read_text())
    grpo_stages, reft_stages = (c["model"]["objective"]["init_args"]["stages"] for c in (grpo, reft))
    assert [s["objective"]["class_path"] for s in grpo_stages] == ["SFT", "GRPO"]
    assert grpo_stages[0] == reft_stages[0]
    for key in ("data", "seed_everything"):
        assert grpo[key] == reft[key], key
    assert {k: v for k, v in grpo["model"].items() if k != "objective"} == {
        k: v for k, v in reft["model"].items() if k != "objective"}
    assert {k: v for k, v in grpo["trainer"].items() if k != "max_epochs"} == {
        k: v for k, v in reft["trainer"].items() if k != "max_epochs"}
    assert grpo["trainer"]["max_epochs"] == sum(stage["epochs"] for stage in grpo_stages)
    rl = grpo_stages[1]["objective"]["init_args"]
    assert rl["reward"] == reft_stages[1]["objective"]["init_args"]["reward"]
    assert (rl["beta"], grpo_stages[1]["lr"], rl["epochs"], rl["mini_batch_size"]) == (0.04, 1.0e-6, 1, None)


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


def run_gsm8k_config_on_local_files(config, tmp_path):
    """``ift fit`` of a shipped GSM8K config on the CPU with a tiny local model and 4 + 2
    local GSM8K-format problems (one batch per epoch); returns the CLI."""
    model = save_tiny_model(tmp_path / "model")
    files = {"train": write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(4)),
             "test": write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(2))}
    kwargs = json.dumps({"data_files": files, "cache_dir": str(tmp_path / "hf")})
    return main(["fit", "--config", str(config), *CPU, "--trainer.default_root_dir", str(tmp_path / "run"),
                 "--trainer.limit_val_batches", "1", "--trainer.callbacks.init_args.max_new_tokens", "8",
                 "--model.model", model,
                 "--data.init_args.train_data", "json", "--data.init_args.val_data", "json",
                 "--data.init_args.dataset_kwargs", kwargs,
                 "--data.init_args.batch_size", "4", "--data.init_args.eval_batch_size", "2"])


def test_reft_gsm8k_config_runs_sft_then_ppo_with_a_local_tiny_model(tmp_path):
    pytest.importorskip("ift.objectives.recipes")
    objectives = pytest.importorskip("ift.objectives")
    if not hasattr(objectives, "PPO") or not hasattr(objectives, "Sequential"):
        pytest.skip("PPO / Sequential are not available yet")
    # 4 problems in one batch: one batch per epoch, so the 2 + 3 epochs of the stages are
    # 2 SFT steps then 3 PPO iterations, exactly as the shipped stages say.
    cli = run_gsm8k_config_on_local_files(GSM8K, tmp_path)
    trainer, module = cli.trainer, cli.model
    assert trainer.state.finished and trainer.current_epoch == 5
    recipe = module.objective
    assert type(recipe).__name__ == "Sequential" and recipe.stage_index == 1
    assert type(recipe.current).__name__ == "PPO"
    assert "train/score" in trainer.callback_metrics and "val/accuracy" in trainer.callback_metrics
    export_dirs = sorted(p.name for p in Path(tmp_path / "run").glob("**/export/*"))
    assert export_dirs == ["final", "switch-1-before-ppo"]


def test_grpo_gsm8k_config_runs_sft_then_grpo_with_a_local_tiny_model(tmp_path):
    # 4 problems in one batch: the 2 + 1 epochs of the stages are 2 SFT steps, then one GRPO
    # rollout of 4 x 8 responses (up to 300 tokens), as shipped.
    cli = run_gsm8k_config_on_local_files(GRPO_GSM8K, tmp_path)
    trainer, module = cli.trainer, cli.model
    assert trainer.state.finished and trainer.current_epoch == 3
    recipe = module.objective
    assert type(recipe).__name__ == "Sequential" and type(recipe.current).__name__ == "GRPO"
    assert recipe.current.rewards[0].triggers == ("####",)
    for key in ("train/score", "train/kl_ref", "train/zero_variance_groups", "val/accuracy"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    export_dirs = sorted(p.name for p in Path(tmp_path / "run").glob("**/export/*"))
    assert export_dirs == ["final", "switch-1-before-grpo"]


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


# ---------------------------------------------------------------------------- the same configs on SmolLM2 (slow)
CHAT_LOCAL = ROOT / "configs" / "chat" / "smollm2_local.yaml"
MATH_LOCAL = ROOT / "configs" / "math" / "smollm2_local.yaml"
MATH_LOCAL_GRPO = ROOT / "configs" / "math" / "smollm2_local_grpo.yaml"


def local_data_files(overlay: Path, tmp_path: Path) -> str:
    """The overlay's ``dataset_kwargs`` with its data files (relative to the repository root,
    where the overlay says to run it) made absolute: the tests run in a temporary folder."""
    kwargs = yaml.safe_load(overlay.read_text())["data"]["init_args"]["dataset_kwargs"]
    files = {split: str(ROOT / path) for split, path in kwargs["data_files"].items()}
    assert all(Path(path).is_file() for path in files.values()), files
    return json.dumps({**kwargs, "data_files": files, "cache_dir": str(tmp_path / "hf")})


def smollm2_available() -> bool:
    from ift.core.gguf_source import PRETRAINED_PRESETS
    import importlib.util

    return (importlib.util.find_spec("gguf") is not None
            and importlib.util.find_spec(PRETRAINED_PRESETS["smollm2-135m-instruct"].package) is not None)


needs_smollm2 = pytest.mark.skipif(not smollm2_available(), reason="SmolLM2's file and the gguf reader: make install")


@pytest.mark.slow
@needs_smollm2
def test_ift_ultrachat_config_runs_on_smollm2_with_local_data_of_the_same_format(tmp_path):
    cli = main(["fit", "--config", str(ULTRACHAT), "--config", str(CHAT_LOCAL), "--trainer.enable_progress_bar", "false",
                "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                "--trainer.default_root_dir", str(tmp_path / "run"),
                "--data.init_args.dataset_kwargs", local_data_files(CHAT_LOCAL, tmp_path)])
    trainer, module = cli.trainer, cli.model
    assert trainer.state.finished and trainer.global_step == 2
    assert type(module.policy).__name__ == "LlamaForCausalLM" and module.policy.config.num_hidden_layers == 30
    assert type(module.objective).__name__ == "IFT" and (module.objective.lam, module.objective.gamma) == (0.2, 0.95)
    assert module.policy.is_activation_checkpointing  # the shipped setting, on the real model
    assert "<|im_start|>assistant" in module.tokenizer.chat_template
    assert torch.isfinite(trainer.callback_metrics["train/loss"]) and torch.isfinite(trainer.callback_metrics["val/loss"])
    exports = list((tmp_path / "run").glob("**/export/final"))
    assert len(exports) == 1 and (exports[0] / "config.json").is_file()


def fit_math_recipe_on_smollm2(config, overlay, tmp_path, rl_objective: str, rl_metrics):
    """``ift fit`` of a shipped GSM8K recipe (SFT -> ``rl_objective``) with its SmolLM2 overlay,
    one batch of the 8 local problems per stage (the stages still switch by epoch): what is
    checked is that the shipped recipe runs on the real model, not what it learns. Returns the
    recipe's RL objective after the checks every such recipe shares."""
    cli = main(["fit", "--config", str(config), "--config", str(overlay), "--trainer.enable_progress_bar", "false",
                "--trainer.limit_train_batches", "1",
                "--trainer.default_root_dir", str(tmp_path / "run"),
                "--data.init_args.dataset_kwargs", local_data_files(overlay, tmp_path)])
    trainer, module = cli.trainer, cli.model
    assert trainer.state.finished and trainer.current_epoch == 2
    recipe = module.objective
    assert type(recipe).__name__ == "Sequential" and type(recipe.current).__name__ == rl_objective
    assert type(module.policy).__name__ == "LlamaForCausalLM"
    for key in ("train/score", *rl_metrics, "val/accuracy"):
        assert torch.isfinite(trainer.callback_metrics[key]), key
    export_dirs = sorted(p.name for p in Path(tmp_path / "run").glob("**/export/*"))
    assert export_dirs == ["final", f"switch-1-before-{rl_objective.lower()}"]
    return recipe.current


@pytest.mark.slow
@needs_smollm2
def test_reft_gsm8k_config_runs_sft_then_ppo_on_smollm2_with_local_data_of_the_same_format(tmp_path):
    ppo = fit_math_recipe_on_smollm2(GSM8K, MATH_LOCAL, tmp_path, "PPO", ["train/kl"])
    assert ppo.vf_coef == 5.0 and ppo.kl_coef == 0.05


@pytest.mark.slow
@needs_smollm2
def test_grpo_gsm8k_config_runs_sft_then_grpo_on_smollm2_with_local_data_of_the_same_format(tmp_path):
    grpo = fit_math_recipe_on_smollm2(GRPO_GSM8K, MATH_LOCAL_GRPO, tmp_path, "GRPO", ["train/kl_ref"])
    assert grpo.beta == 0.04 and grpo.num_generations == 4
