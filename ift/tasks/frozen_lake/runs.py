"""The runs of ``ift frozen-lake``: one ``ift fit`` config per objective, and how one is built.

Every run is a LightningCLI config (a dict with ``seed_everything``, ``trainer``, ``model``
and ``data``); :func:`write_configs` writes the seed-0 ones to ``configs/frozen_lake/``, so
``ift fit --config configs/frozen_lake/<objective>.yaml`` is exactly one run of the
command, and :func:`build_cli` builds a run's objects with LightningCLI itself, the way
``ift fit`` does.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import LightningCLI

from ift.modules import FineTuneModule
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import ACTIONS, DEFAULT_MAP, VOCAB
from ift.tasks.frozen_lake.monitor import FrozenLakeMonitor

# --------------------------------------------------------------------------------------
# The runs: one LightningCLI config per objective (the YAML files are these dicts).
# --------------------------------------------------------------------------------------
#: Every objective of the check, in table order.
OBJECTIVES = ("SFT", "IFT", "IFT-lam0-gamma0", "DPO", "ORPO", "PPO", "SFT-PPO")
#: The YAML file of each objective in ``configs/frozen_lake/``.
CONFIG_FILES = {
    "SFT": "sft.yaml",
    "IFT": "ift.yaml",
    "IFT-lam0-gamma0": "ift_lam0_gamma0.yaml",
    "DPO": "dpo.yaml",
    "ORPO": "orpo.yaml",
    "PPO": "ppo.yaml",
    "SFT-PPO": "sft_then_ppo.yaml",
}
#: What each objective sees (FrozenLakeDataModule's ``objective_data``).
OBJECTIVE_DATA = {
    "SFT": "optimal", "IFT": "optimal", "IFT-lam0-gamma0": "optimal", "DPO": "preference",
    "ORPO": "preference", "PPO": "prompts", "SFT-PPO": "optimal",
}

#: Optimizer steps of every run (the same training budget for every objective).
DEFAULT_STEPS = 150
DEFAULT_SEEDS = 5
DEFAULT_EVAL_EVERY = 10
LEARNING_RATE = 1e-3
#: Share of the budget spent in SFT before PPO takes over in the SFT -> PPO recipe.
SFT_PPO_SPLIT = 0.5

#: The policy: a dropout-free 2-layer GPT-2 over Frozen Lake's characters.
POLICY_MODEL: Dict[str, Any] = {
    "model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 160,
    "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "tie_word_embeddings": True,
    "activation_function": "gelu",
}
TOKENIZER = "char:" + VOCAB

IFT_ARGS = {"lam": 0.2, "gamma": 0.95}
DPO_ARGS = {"beta": 0.5}
ORPO_ARGS = {"beta": 0.25}
#: PPO on the environment's reward (1 on reaching G, else 0). One prompt per batch,
#: ``samples_per_prompt`` rollouts of it; ``ppo_epochs`` optimizer steps per rollout.
PPO_ARGS: Dict[str, Any] = {
    "kl_coef": 0.0, "samples_per_prompt": 32, "mini_batch_size": 8, "ppo_epochs": 1,
    "whiten_advantages": False, "temperature": 1.0, "vf_coef": 0.0, "entropy_coef": 0.0,
}


def ppo_max_new_tokens(task: FrozenLakeTask) -> int:
    """Longest response PPO samples: ``nrow + ncol`` moves (8 on a 4x4 map, whose shortest
    path has 5)."""
    return task.nrow + task.ncol


def objective_config(name: str, task: FrozenLakeTask, steps: int) -> Dict[str, Any]:
    """The ``model.objective`` value (``class_path`` + ``init_args``) of objective ``name``."""
    reward = {"class_path": "ift.tasks.frozen_lake.FrozenLakeReward"}
    ppo = {"class_path": "ift.objectives.PPO",
           "init_args": {"reward": reward, **PPO_ARGS, "max_new_tokens": ppo_max_new_tokens(task)}}
    if name == "SFT":
        return {"class_path": "ift.objectives.SFT"}
    if name == "IFT":
        return {"class_path": "ift.objectives.IFT", "init_args": dict(IFT_ARGS)}
    if name == "IFT-lam0-gamma0":
        return {"class_path": "ift.objectives.IFT", "init_args": {"lam": 0.0, "gamma": 0.0}}
    if name == "DPO":
        return {"class_path": "ift.objectives.DPO", "init_args": dict(DPO_ARGS)}
    if name == "ORPO":
        return {"class_path": "ift.objectives.ORPO", "init_args": dict(ORPO_ARGS)}
    if name == "PPO":
        return ppo
    if name == "SFT-PPO":
        sft_steps = max(1, int(round(steps * SFT_PPO_SPLIT)))
        return {"class_path": "ift.objectives.Sequential", "init_args": {"stages": [
            {"objective": {"class_path": "ift.objectives.SFT"}, "steps": sft_steps},
            {"objective": ppo},
        ]}}
    raise ValueError(f"unknown Frozen Lake objective {name!r}; choose from {', '.join(OBJECTIVES)}")


def run_config(name: str, map: Optional[str] = None, steps: int = DEFAULT_STEPS, seed: int = 0,
               eval_every: int = DEFAULT_EVAL_EVERY, output_dir: Optional[str] = None) -> Dict[str, Any]:
    """The ``ift fit`` config (as a dict) of one Frozen Lake run of objective ``name``."""
    task = FrozenLakeTask(map if map is not None else DEFAULT_MAP)
    several = task.num_shortest_paths() > 1
    monitor_args: Dict[str, Any] = {"every_n_steps": eval_every}
    if output_dir is not None:
        monitor_args["output_dir"] = output_dir
    data_args: Dict[str, Any] = {
        "objective_data": OBJECTIVE_DATA[name], "num_copies": 256, "batch_size": 1, "seed": seed,
    }
    if map is not None:
        data_args["map"] = ",".join(task.rows)
    if several:
        data_args["allow_several_optimal"] = True
    return {
        "seed_everything": seed,
        "trainer": {
            "max_steps": steps,
            "accelerator": "cpu",
            "devices": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "enable_progress_bar": False,
            "num_sanity_val_steps": 0,
            "callbacks": [{"class_path": "ift.tasks.frozen_lake.FrozenLakeMonitor", "init_args": monitor_args}],
        },
        "model": {
            "model": dict(POLICY_MODEL),
            "tokenizer": TOKENIZER,
            "output_tokens": ACTIONS,
            "objective": objective_config(name, task, steps),
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": LEARNING_RATE, "weight_decay": 0.0, "fused": True}},
            "max_grad_norm": 1.0,
            "eval_accuracy": False,
        },
        "data": {"class_path": "ift.tasks.frozen_lake.FrozenLakeDataModule", "init_args": data_args},
    }


CONFIG_HEADER = """\
# Frozen Lake sanity check, {name}: one run of `ift frozen-lake` (seed 0, default map).
#   ift fit --config configs/frozen_lake/{file}
# Generated by ift.tasks.frozen_lake.runs.write_configs(); tests check that it matches run_config().
# Metrics are logged as frozen_lake/* and written by the FrozenLakeMonitor callback.
"""


def write_configs(directory: str, steps: int = DEFAULT_STEPS, eval_every: int = DEFAULT_EVAL_EVERY) -> List[str]:
    """Write ``configs/frozen_lake/<objective>.yaml`` (seed 0, default map); returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name in OBJECTIVES:
        file = CONFIG_FILES[name]
        config = run_config(name, None, steps, 0, eval_every, output_dir=f"runs/frozen_lake_fit/{file[:-5]}")
        path = os.path.join(directory, file)
        with open(path, "w") as handle:
            handle.write(CONFIG_HEADER.format(name=name, file=file))
            yaml.safe_dump(config, handle, sort_keys=False, default_flow_style=False, allow_unicode=True)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------
# Building one run (the objects ``ift fit --config`` builds from the same config)
# --------------------------------------------------------------------------------------
def build_cli(config: Dict[str, Any]) -> LightningCLI:
    """The module, data module and Trainer of ``config``, built by LightningCLI as ``ift fit``
    builds them (seeded first with ``seed_everything(seed, workers=True)``), but not run.

    Same arguments as ``ift fit``'s CLI (``ift.cli.IFTCLI``, which adds nothing to
    LightningCLI), except that no config file is saved: the command records the configs itself.
    """
    return LightningCLI(
        FineTuneModule,
        pl.LightningDataModule,
        subclass_mode_data=True,
        args=copy.deepcopy(config),  # jsonargparse may normalise the dict it is given
        run=False,
        save_config_callback=None,
    )


def frozen_lake_monitor(trainer: pl.Trainer) -> FrozenLakeMonitor:
    """The run's :class:`FrozenLakeMonitor` among the Trainer's callbacks."""
    monitors = [callback for callback in trainer.callbacks if isinstance(callback, FrozenLakeMonitor)]
    if len(monitors) != 1:
        raise ValueError(f"a Frozen Lake run needs exactly one FrozenLakeMonitor callback, found {len(monitors)}")
    return monitors[0]
