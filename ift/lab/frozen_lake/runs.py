"""The runs of ``ift frozen-lake``: one ``ift fit`` config per objective, and how one is built.

Every run is a LightningCLI config (a dict with ``seed_everything``, ``trainer``, ``model``
and ``data``) of one set-up (:mod:`ift.lab.frozen_lake.setups`), policy and objective;
:func:`write_configs` writes the seed-0 ones to ``configs/frozen_lake/<setup>/<policy>/``, so
``ift fit --config configs/frozen_lake/<setup>/<policy>/<objective>.yaml`` is exactly one run of
the command, and :func:`build_cli` builds a run's objects with LightningCLI itself, the way
``ift fit`` does.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import LightningCLI

from ift.modules import FineTuneModule
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import DEFAULT_MAP
from ift.lab.frozen_lake.monitor import FrozenLakeMonitor
from ift.lab.frozen_lake.setups import DEFAULT_SETUP, SETUPS, get_setup
from ift.tasks.frozen_lake.policies import DEFAULT_POLICY, REPRESENTATIONS, check_policy, model_settings

# --------------------------------------------------------------------------------------
# The runs: one LightningCLI config per (policy, objective); the YAML files are these dicts.
# --------------------------------------------------------------------------------------
#: Every objective of the check, in table order. The paper's hyper-parameters throughout;
#: the one tuned setting (DPO with β 0.5) is a separately labelled row.
OBJECTIVES = ("SFT", "IFT", "IFT-lam0-gamma0", "DPO", "DPO-beta0.5-tuned", "ORPO", "PPO", "GRPO", "SFT-PPO")
#: The YAML file of each objective in ``configs/frozen_lake/<setup>/<policy>/``.
CONFIG_FILES = {
    "SFT": "sft.yaml",
    "IFT": "ift.yaml",
    "IFT-lam0-gamma0": "ift_lam0_gamma0.yaml",
    "DPO": "dpo.yaml",
    "DPO-beta0.5-tuned": "dpo_beta0.5_tuned.yaml",
    "ORPO": "orpo.yaml",
    "PPO": "ppo.yaml",
    "GRPO": "grpo.yaml",
    "SFT-PPO": "sft_then_ppo.yaml",
}
#: What each objective sees (FrozenLakeDataModule's ``objective_data``).
OBJECTIVE_DATA = {
    "SFT": "optimal", "IFT": "optimal", "IFT-lam0-gamma0": "optimal", "DPO": "preference",
    "DPO-beta0.5-tuned": "preference", "ORPO": "preference", "PPO": "prompts", "GRPO": "prompts",
    "SFT-PPO": "optimal",
}

#: Optimizer steps of every run of a policy (the same budget for every objective): long
#: enough that the learning curves are flat at the end (see docs/frozen_lake.md).
DEFAULT_STEPS = {"mlp": 300, "transformer": 300}
DEFAULT_SEEDS = 5
DEFAULT_EVAL_EVERY = 10
#: The optimizer of every objective: the paper's RMSprop ("similar hyper-parameters as in the
#: NLP setting") for the paper's network, at a learning rate for this toy scale at which the
#: curves are flat within the budget; AdamW for the transformer extension (RMSprop at 1e-3
#: leaves its PPO runs without a single success on the default map).
OPTIMIZERS: Dict[str, Dict[str, Any]] = {
    "mlp": {"class_path": "torch.optim.RMSprop", "init_args": {"lr": 1e-2}},
    "transformer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3, "weight_decay": 0.0, "fused": True}},
}
#: PPO's optimizer (the paper has no PPO on Frozen Lake), and GRPO's: AdamW for both policies.
#: With a sparse reward most PPO steps have no gradient at all, and RMSprop's first steps after
#: such a run are up to 10x its learning rate (its squared-gradient average starts from 0): the
#: state MLP is thrown far from its first success, then its steps shrink to nothing. AdamW's bias
#: correction keeps every step near the learning rate.
PPO_OPTIMIZERS: Dict[str, Dict[str, Any]] = {
    "mlp": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2, "weight_decay": 0.0, "fused": True}},
    "transformer": OPTIMIZERS["transformer"],
}
#: Objectives whose runs are (or end in) PPO.
PPO_OBJECTIVES = ("PPO", "SFT-PPO")
#: Objectives that run on the reward (PPO's optimizer for each): PPO's, and GRPO.
REWARD_OBJECTIVES = PPO_OBJECTIVES + ("GRPO",)
#: Share of the budget spent in SFT before PPO takes over in the SFT -> PPO recipe.
SFT_PPO_SPLIT = 0.5

#: The paper's settings: IFT λ 0.2 and decay 0.95, DPO β 0.1, ORPO β 0.25.
IFT_ARGS = {"lam": 0.2, "gamma": 0.95}
DPO_ARGS = {"beta": 0.1}
TUNED_DPO_ARGS = {"beta": 0.5}
ORPO_ARGS = {"beta": 0.25}
#: PPO on the environment's reward (1 on reaching G, else 0). One prompt per batch,
#: ``samples_per_prompt`` rollouts of it; ``ppo_epochs`` optimizer steps per rollout.
PPO_ARGS: Dict[str, Any] = {
    "kl_coef": 0.0, "samples_per_prompt": 32, "mini_batch_size": 8, "ppo_epochs": 1,
    "temperature": 1.0, "vf_coef": 0.0,
}
#: Per policy. Both keep raw advantages (reward 0 or 1, no baseline): once every sample
#: succeeds (after SFT), whitened λ-returns are negative on a path's first moves and PPO
#: unlearns the path (SFT -> PPO then fails with the transformer).
PPO_POLICY_ARGS: Dict[str, Dict[str, Any]] = {
    # 128 samples per iteration. The state MLP learns from a success in one step: one epoch, so
    # that its budget samples 300 x 128 = 38,400 episodes, enough to find G on maps where a
    # random walk reaches it once in ten thousand. The transformer needs four passes over a
    # rollout to learn from its rare successes (one pass at its learning rate leaves 15 of 18
    # untuned-map runs unsolved): 75 x 128 = 9,600 episodes.
    "mlp": {"whiten_advantages": False, "entropy_coef": 0.0, "samples_per_prompt": 128, "mini_batch_size": 128,
            "ppo_epochs": 1},
    "transformer": {"whiten_advantages": False, "entropy_coef": 0.0, "samples_per_prompt": 128,
                    "mini_batch_size": 128, "ppo_epochs": 4},
}


#: GRPO (DeepSeekMath's group-normalised advantages and clipped ratio, arXiv 2402.03300) on the
#: environment's reward alone, like PPO. The map is the only prompt, so a rollout is one group:
#: G = 128 episodes of it, 4 updates on the whole group per rollout (``epochs``), the settings of
#: PPO's transformer runs, for both policies. Within the 300-step budget that is 75 rollouts and
#: 9,600 episodes (the MLP's PPO samples 38,400 for the untuned maps; the default map needs far
#: fewer, and one update per rollout would triple the MLP's run time). ``beta`` 0: no reference
#: and no KL term. The paper's check has none, PPO runs here without one (``kl_coef`` 0), and the
#: reference would be the untrained, near-uniform policy that the runs are meant to leave.
#: The optimizer is PPO's (AdamW, see PPO_OPTIMIZERS): with a group of equal rewards the update
#: has no gradient, as with PPO's sparse reward.
GRPO_ARGS: Dict[str, Any] = {
    "num_generations": 128, "mini_batch_size": 128, "epochs": 4, "beta": 0.0, "temperature": 1.0,
}


def ppo_max_new_tokens(task: FrozenLakeTask) -> int:
    """Longest response PPO samples: ``2 * (nrow + ncol)`` moves, room for a detour."""
    return 2 * (task.nrow + task.ncol)


def objective_config(name: str, task: FrozenLakeTask, steps: int, policy: str = DEFAULT_POLICY) -> Dict[str, Any]:
    """The ``model.objective`` value (``class_path`` + ``init_args``) of objective ``name``."""
    reward = {"class_path": "ift.tasks.frozen_lake.FrozenLakeReward"}
    ppo = {"class_path": "ift.objectives.PPO",
           "init_args": {"reward": reward, **PPO_ARGS, **PPO_POLICY_ARGS[policy],
                         "max_new_tokens": ppo_max_new_tokens(task)}}
    simple = {
        "SFT": {"class_path": "ift.objectives.SFT"},
        "IFT": {"class_path": "ift.objectives.IFT", "init_args": dict(IFT_ARGS)},
        "IFT-lam0-gamma0": {"class_path": "ift.objectives.IFT", "init_args": {"lam": 0.0, "gamma": 0.0}},
        "DPO": {"class_path": "ift.objectives.DPO", "init_args": dict(DPO_ARGS)},
        "DPO-beta0.5-tuned": {"class_path": "ift.objectives.DPO", "init_args": dict(TUNED_DPO_ARGS)},
        "ORPO": {"class_path": "ift.objectives.ORPO", "init_args": dict(ORPO_ARGS)},
        "PPO": ppo,
        "GRPO": {"class_path": "ift.objectives.GRPO",
                 "init_args": {"reward": reward, **GRPO_ARGS,
                               "max_new_tokens": ppo_max_new_tokens(task)}},
    }
    if name in simple:
        return simple[name]
    if name == "SFT-PPO":
        sft_steps = max(1, int(round(steps * SFT_PPO_SPLIT)))
        return {"class_path": "ift.objectives.Sequential", "init_args": {"stages": [
            {"objective": {"class_path": "ift.objectives.SFT"}, "steps": sft_steps},
            {"objective": ppo},
        ]}}
    raise ValueError(f"unknown Frozen Lake objective {name!r}; choose from {', '.join(OBJECTIVES)}")


def run_config(name: str, map: Optional[str] = None, steps: Optional[int] = None, seed: int = 0,
               eval_every: int = DEFAULT_EVAL_EVERY, output_dir: Optional[str] = None,
               policy: str = DEFAULT_POLICY, setup: str = DEFAULT_SETUP) -> Dict[str, Any]:
    """The ``ift fit`` config (as a dict) of one Frozen Lake run of objective ``name`` with
    ``policy`` (``mlp`` or ``transformer``) in ``setup`` (``ours`` or ``paper-literal``);
    ``map`` defaults to the set-up's, ``steps`` to the policy's budget."""
    check_policy(policy)
    chosen = get_setup(setup)
    steps = DEFAULT_STEPS[policy] if steps is None else steps
    task = FrozenLakeTask(map if map is not None else chosen.map)
    several = task.num_shortest_paths() > 1
    monitor_args: Dict[str, Any] = {"every_n_steps": eval_every}
    if output_dir is not None:
        monitor_args["output_dir"] = output_dir
    data_args: Dict[str, Any] = {
        "objective_data": OBJECTIVE_DATA[name], "representation": REPRESENTATIONS[policy],
        "num_copies": 256, "batch_size": 1, "seed": seed,
    }
    if task.rows != DEFAULT_MAP:
        data_args["map"] = ",".join(task.rows)
    if OBJECTIVE_DATA[name] == "preference" and chosen.rejected != "auto":
        data_args["rejected"] = chosen.rejected
    if several:
        data_args["allow_several_optimal"] = True
    model = model_settings(policy, task)
    model_args: Dict[str, Any] = {"model": model["model"], "tokenizer": model["tokenizer"]}
    if model["output_tokens"]:
        model_args["output_tokens"] = model["output_tokens"]
        model_args["output_eos"] = model["output_eos"]
    model_args.update({
        "objective": objective_config(name, task, steps, policy),
        "optimizer": copy.deepcopy((PPO_OPTIMIZERS if name in REWARD_OBJECTIVES else OPTIMIZERS)[policy]),
        "max_grad_norm": 1.0,
    })
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
            "callbacks": [{"class_path": "ift.lab.frozen_lake.FrozenLakeMonitor", "init_args": monitor_args}],
        },
        "model": model_args,
        "data": {"class_path": "ift.tasks.frozen_lake.FrozenLakeDataModule", "init_args": data_args},
    }


CONFIG_HEADER = """\
# Frozen Lake sanity check, set-up {setup}, {name}, {policy} policy: one run of
# `ift frozen-lake --setup {setup}` (seed 0, the set-up's map {map}).
#   ift fit --config {path}
# Generated by ift.lab.frozen_lake.runs.write_configs(); tests check that it matches run_config().
# Metrics are logged as frozen_lake/* and written by the FrozenLakeMonitor callback.
"""


def setup_objectives(setup: str) -> List[str]:
    """The objectives ``setup`` runs by default, in table order."""
    chosen = get_setup(setup).objectives
    return list(OBJECTIVES) if chosen is None else [name for name in OBJECTIVES if name in chosen]


def config_path(setup: str, policy: str, name: str, directory: str = "configs/frozen_lake") -> str:
    """Where the YAML of one run lives: ``<directory>/<setup folder>/<policy>/<objective file>``."""
    return os.path.join(directory, get_setup(setup).folder, policy, CONFIG_FILES[name])


def shipped_configs() -> List[Tuple[str, str, str]]:
    """``(setup, policy, objective)`` of every YAML file :func:`write_configs` writes."""
    return [(setup, policy, name) for setup, chosen in SETUPS.items() for policy in chosen.policies
            for name in setup_objectives(setup)]


def write_configs(directory: str, eval_every: int = DEFAULT_EVAL_EVERY) -> List[str]:
    """Write ``<directory>/<setup>/<policy>/<objective>.yaml`` (seed 0, the set-up's map, default
    budget) for every set-up's policies and objectives; returns the paths."""
    paths = []
    for setup, policy, name in shipped_configs():
        path = config_path(setup, policy, name, directory)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        relative = config_path(setup, policy, name)
        config = run_config(name, None, None, 0, eval_every, policy=policy, setup=setup,
                            output_dir=fit_output_dir(setup, policy, name))
        with open(path, "w") as handle:
            handle.write(CONFIG_HEADER.format(name=name, path=relative, policy=policy, setup=setup,
                                              map=get_setup(setup).map))
            yaml.safe_dump(config, handle, sort_keys=False, default_flow_style=False, allow_unicode=True)
        paths.append(path)
    return paths


def fit_output_dir(setup: str, policy: str, name: str) -> str:
    """The ``output_dir`` of a shipped config's monitor: ``runs/frozen_lake_fit/<setup>/<policy>/<objective>``."""
    return f"runs/frozen_lake_fit/{get_setup(setup).folder}/{policy}/{CONFIG_FILES[name][:-5]}"


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
