"""``ift frozen-lake``: the IFT paper's Frozen Lake sanity check (§5.3) for every objective.

Trains a tiny causal transformer on one Frozen Lake map with SFT, IFT, DPO, ORPO, PPO and
the SFT -> PPO recipe (and IFT with lam = 0, gamma = 0, which must reproduce SFT exactly),
over several seeds, and writes:

* ``OUT/results.json``: ``{objective: {metric: {"mean", "std"}}}`` for ``mse_to_optimal``,
  ``success_rate``, ``explored_states``, ``episode_length`` and ``mean_total_variation``,
  plus an ``untrained`` row (the same seeds' policies before training);
* ``OUT/details.json``: the settings, every seed's numbers, policies and learning curves;
* ``OUT/frozen_lake.png``: each objective's policy (seed 0) on the map beside π*, and the
  mean learning curves (MSE to π* against the optimizer step);
* a mean ± std table on the terminal.

Each single run is exactly ``ift fit --config configs/frozen_lake/<objective>.yaml`` (the
files are :func:`run_config` written out; a test checks that they agree and that both
paths give the same numbers). Runs are independent processes' work: seeds run in
parallel over ``--workers`` processes, one CPU thread each, so results do not depend on
how many workers there are.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ift.core.workers import imap_in_processes
from ift.data.frozen_lake import DEFAULT_MAP, MAP_SEPARATOR, VOCAB, ACTIONS, FrozenLakeTask, MapError

# --------------------------------------------------------------------------------------
# The runs: one LightningCLI-style config per objective (the YAML files are these dicts).
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


def _objective_config(name: str, task: FrozenLakeTask, steps: int) -> Dict[str, Any]:
    reward = {"class_path": "ift.rewards.frozen_lake.FrozenLakeReward"}
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
            "callbacks": [{"class_path": "ift.callbacks.frozen_lake.FrozenLakeMonitor", "init_args": monitor_args}],
        },
        "model": {
            "model": dict(POLICY_MODEL),
            "tokenizer": TOKENIZER,
            "output_tokens": ACTIONS,
            "objective": _objective_config(name, task, steps),
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": LEARNING_RATE, "weight_decay": 0.0, "fused": True}},
            "max_grad_norm": 1.0,
            "eval_accuracy": False,
        },
        "data": {"class_path": "ift.data.FrozenLakeDataModule", "init_args": data_args},
    }


CONFIG_HEADER = """\
# Frozen Lake sanity check, {name}: one run of `ift frozen-lake` (seed 0, default map).
#   ift fit --config configs/frozen_lake/{file}
# Generated by ift.frozen_lake_cli.write_configs(); tests check that it matches run_config().
# Metrics are logged as frozen_lake/* and written by the FrozenLakeMonitor callback.
"""


def write_configs(directory: str, steps: int = DEFAULT_STEPS, eval_every: int = DEFAULT_EVAL_EVERY) -> List[str]:
    """Write ``configs/frozen_lake/<objective>.yaml`` (seed 0, default map); returns the paths."""
    import yaml

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
# Building and running one config (the objects LightningCLI would build from it)
# --------------------------------------------------------------------------------------
def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def instantiate(value: Any) -> Any:
    """Build ``{"class_path": ..., "init_args": {...}}`` values, recursively (as jsonargparse does)."""
    if isinstance(value, dict):
        if "class_path" in value:
            args = {key: instantiate(item) for key, item in value.get("init_args", {}).items()}
            return _import(value["class_path"])(**args)
        return {key: instantiate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [instantiate(item) for item in value]
    return value


def build_run(config: Dict[str, Any]):
    """``(module, datamodule, trainer, monitor)`` from a :func:`run_config` dict, seeded first
    exactly like ``ift fit`` (``seed_everything(seed, workers=True)`` before any object)."""
    import pytorch_lightning as pl

    from ift.callbacks.frozen_lake import FrozenLakeMonitor
    from ift.modules import FineTuneModule

    pl.seed_everything(config["seed_everything"], workers=True, verbose=False)
    data = instantiate(config["data"])
    model_args = dict(config["model"])
    optimizer = model_args.pop("optimizer")
    model_args = {key: (value if key == "model" else instantiate(value)) for key, value in model_args.items()}
    module = FineTuneModule(optimizer=functools.partial(_import(optimizer["class_path"]), **optimizer["init_args"]),
                            **model_args)
    trainer_args = dict(config["trainer"])
    callbacks = instantiate(trainer_args.pop("callbacks", []))
    trainer = pl.Trainer(callbacks=callbacks, **trainer_args)
    monitor = next(c for c in callbacks if isinstance(c, FrozenLakeMonitor))
    return module, data, trainer, monitor


def run_one(job: Tuple[str, int, Optional[str], int, int]) -> Dict[str, Any]:
    """Train one (objective, seed) and return its metrics, final policy and learning curve."""
    name, seed, map_spec, steps, eval_every = job
    start = time.perf_counter()
    module, data, trainer, monitor = build_run(run_config(name, map_spec, steps, seed, eval_every))
    trainer.fit(module, datamodule=data)
    return {
        "objective": name,
        "seed": seed,
        "metrics": dict(monitor.results),
        "initial_metrics": dict(monitor.initial_results),
        "action_probs": {int(s): [float(x) for x in p] for s, p in monitor.action_probs.items()},
        "curve": [[int(step), float(mse)] for step, mse in monitor.curve],
        "optimizer_steps": int(trainer.global_step),
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------------------
# Aggregation, table, picture
# --------------------------------------------------------------------------------------
#: results.json metric name -> the monitor's metric name.
RESULT_METRICS = {
    "mse_to_optimal": "mse_to_optimal",
    "success_rate": "success",
    "explored_states": "explored_states",
    "episode_length": "episode_length",
    "mean_total_variation": "mean_total_variation",
}


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}


#: The row of the policy before any training (the initialisation every objective starts from).
UNTRAINED = "untrained"


def aggregate(runs: List[Dict[str, Any]], objectives: Sequence[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{objective: {metric: {"mean", "std"}}}`` over seeds, plus the :data:`UNTRAINED` row:
    the same seeds' policies before training (every objective of a seed starts from the same
    weights; they are read from the first objective's runs).

    Runs are taken in seed order: workers finish in any order, and a float sum over seeds in
    another order can differ in its last bit (IFT with lam = 0, gamma = 0 must equal SFT exactly).
    """
    runs = sorted(runs, key=lambda run: run["seed"])
    results = {}
    for name in objectives:
        mine = [run for run in runs if run["objective"] == name]
        if mine:
            results[name] = {key: mean_std([run["metrics"][source] for run in mine]) for key, source in RESULT_METRICS.items()}
    first = [run for run in runs if run["objective"] == objectives[0]]
    if first:
        initial = [dict(run["initial_metrics"], explored_states=0.0, mean_total_variation=0.0) for run in first]
        results[UNTRAINED] = {key: mean_std([m[source] for m in initial]) for key, source in RESULT_METRICS.items()}
    return results


def mean_curve(runs: List[Dict[str, Any]]) -> List[Tuple[float, float]]:
    """The seeds' learning curves averaged on the union of their steps (linear interpolation)."""
    steps = sorted({step for run in runs for step, _ in run["curve"]})
    values = [np.interp(steps, [s for s, _ in run["curve"]], [v for _, v in run["curve"]]) for run in runs]
    return list(zip(steps, np.mean(values, axis=0).tolist()))


def format_table(results: Dict[str, Dict[str, Dict[str, float]]], seeds: int) -> str:
    columns = [("mse_to_optimal", "MSE to π*", 4), ("success_rate", "success", 2),
               ("explored_states", "explored", 1), ("mean_total_variation", "moved (TV)", 3),
               ("episode_length", "ep. length", 1)]
    header = f"{'objective':<17}" + "".join(f"{title:>19}" for _, title, _ in columns)
    lines = [header, "-" * len(header)]
    for name, metrics in results.items():
        if name == UNTRAINED:
            lines.append("-" * len(header))
        cells = "".join(f"{metrics[key]['mean']:>{11}.{digits}f} ± {metrics[key]['std']:<{5}.{digits}f}"
                        for key, _, digits in columns)
        lines.append(f"{name:<17}{cells}")
    lines.append(f"(mean ± std over {seeds} seed{'s' if seeds != 1 else ''})")
    return "\n".join(lines)


def plot(task: FrozenLakeTask, runs: List[Dict[str, Any]], objectives: Sequence[str], path: str) -> str:
    from ift.data.frozen_lake_plot import plot_policies

    policies, curves = {}, {}
    for name in objectives:
        mine = sorted((run for run in runs if run["objective"] == name), key=lambda run: run["seed"])
        if not mine:
            continue
        first = mine[0]
        policies[f"{name} (seed {first['seed']})"] = {s: np.asarray(p) for s, p in first["action_probs"].items()}
        curves[name] = mean_curve(mine)
    return plot_policies(task, policies, curves=curves, path=path, max_columns=5,
                         title=f"Frozen Lake {MAP_SEPARATOR.join(task.rows)}: policies and mean MSE to π* over seeds")


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ift frozen-lake",
        description="The IFT paper's Frozen Lake sanity check: train every objective on one map over "
                    "several seeds, compare each policy with the optimal policy π*.",
    )
    parser.add_argument("--map", default=None,
                        help="rows joined by ',' (e.g. SFFF,FFHF,FFHG,FFFF, the default), '4x4', '8x8' or "
                             "'random:SIZE:SEED'")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per objective (0..N-1; default %(default)s)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="optimizer steps of every run, the same budget for each objective (default %(default)s)")
    parser.add_argument("--eval-every", type=int, default=DEFAULT_EVAL_EVERY,
                        help="optimizer steps between two points of the learning curves (default %(default)s)")
    parser.add_argument("--out", default="runs/frozen_lake", help="output folder (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes (default: min(2, CPUs)); each uses one CPU thread")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.eval_every < 0:
        parser.error("--eval-every must be >= 0")
    names = [name.strip() for name in args.objectives.split(",") if name.strip()]
    unknown = [name for name in names if name not in OBJECTIVES]
    if unknown or not names:
        parser.error(f"unknown objective(s) {unknown}; choose from {', '.join(OBJECTIVES)}")
    args.objectives = names
    return args


def usable_objectives(task: FrozenLakeTask, names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """The objectives whose data this map can give, and a note for each one it cannot."""
    kept, notes = [], []
    for name in names:
        if OBJECTIVE_DATA[name] == "preference":
            try:
                rejected = task.suboptimal_trajectory()
            except ValueError as error:
                notes.append(f"{name} skipped: {error}")
                continue
            chosen = task.optimal_trajectory(require_unique=False)
            if len(rejected) <= len(chosen):
                notes.append(f"{name}: note: the rejected trajectory {rejected} is as short as the chosen {chosen} "
                             f"(this map has several shortest paths), so the pair contrasts two optimal paths")
        kept.append(name)
    return kept, notes


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of ``ift frozen-lake`` (returns None, so the console script exits 0)."""
    run(argv)


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run ``ift frozen-lake`` with these arguments; returns what it writes to ``results.json``."""
    args = parse_args(argv)
    try:
        task = FrozenLakeTask(args.map if args.map is not None else DEFAULT_MAP)
    except MapError as error:
        raise SystemExit(f"ift frozen-lake: error: {error}")
    map_spec = None if args.map is None else ",".join(task.rows)
    objectives, notes = usable_objectives(task, args.objectives)
    paths = task.num_shortest_paths()
    print(f"Frozen Lake {MAP_SEPARATOR.join(task.rows)}: optimal trajectory {task.optimal_trajectory(require_unique=False)}"
          + (f" (one of {paths} shortest paths; π* spreads over all of them)" if paths > 1 else "")
          + (f", sub-optimal {task.suboptimal_trajectory()}" if any(OBJECTIVE_DATA[n] == "preference" for n in objectives) else ""))
    for note in notes:
        print(note)
    if not objectives:
        raise SystemExit("ift frozen-lake: error: no objective can run on this map")

    jobs = [(name, seed, map_spec, args.steps, args.eval_every) for name in objectives for seed in range(args.seeds)]
    # Most expensive first (PPO samples), so the workers finish together.
    cost = {"PPO": 3, "SFT-PPO": 2, "DPO": 1}
    jobs.sort(key=lambda job: -cost.get(job[0], 0))
    workers = args.workers or min(2, os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))
    print(f"training {len(objectives)} objectives x {args.seeds} seeds, {args.steps} optimizer steps each, "
          f"on {workers} process{'es' if workers > 1 else ''}")
    started = time.perf_counter()
    runs = _run_jobs(jobs, workers)
    elapsed = time.perf_counter() - started

    results = aggregate(runs, objectives)
    os.makedirs(args.out, exist_ok=True)
    _write_json(os.path.join(args.out, "results.json"), results)
    details = {
        "map": MAP_SEPARATOR.join(task.rows),
        "optimal_trajectory": task.optimal_trajectory(require_unique=False),
        "shortest_paths": paths,
        "seeds": args.seeds,
        "steps": args.steps,
        "explored_threshold": _explored_threshold(),
        "seconds": elapsed,
        "workers": workers,
        "configs": {name: run_config(name, map_spec, args.steps, 0, args.eval_every) for name in objectives},
        "runs": sorted(runs, key=lambda run: (objectives.index(run["objective"]), run["seed"])),
        "notes": notes,
    }
    _write_json(os.path.join(args.out, "details.json"), details)
    picture = plot(task, runs, objectives, os.path.join(args.out, "frozen_lake.png"))
    print()
    print(format_table(results, args.seeds))
    print(f"\nexplored = states whose action distribution moved more than {_explored_threshold()} in total "
          f"variation (TV) from the initial policy, of {len(task.reachable_states())} reachable states; "
          f"moved = mean TV from the initial policy over those states")
    print(f"wrote {os.path.join(args.out, 'results.json')}, {os.path.join(args.out, 'details.json')} and {picture} "
          f"in {elapsed:.0f} s")
    return results


def _explored_threshold() -> float:
    from ift.callbacks.frozen_lake import EXPLORED_THRESHOLD

    return EXPLORED_THRESHOLD


def _write_json(path: str, payload: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def _run_jobs(jobs: List[Tuple[str, int, Optional[str], int, int]], workers: int) -> List[Dict[str, Any]]:
    from tqdm.auto import tqdm

    runs: List[Dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="frozen-lake", unit="run", file=sys.stderr, dynamic_ncols=True)
    try:
        for run in imap_in_processes(run_one, jobs, workers):
            runs.append(run)
            _advance(bar, run)
    finally:
        bar.close()
    return runs


def _advance(bar, run: Dict[str, Any]) -> None:
    bar.set_postfix_str(f"{run['objective']} seed {run['seed']}: MSE {run['metrics']['mse_to_optimal']:.4f}")
    bar.update(1)


if __name__ == "__main__":  # pragma: no cover
    main()
