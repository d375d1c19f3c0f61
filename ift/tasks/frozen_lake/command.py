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

Each single run is exactly ``ift fit --config configs/frozen_lake/<objective>.yaml``: the
files are :func:`ift.tasks.frozen_lake.runs.run_config` written out, and each run is built
from its config by LightningCLI, as ``ift fit`` builds it (tests check that the files
agree with the configs and that both paths give the same numbers). Runs are independent
processes' work: seeds run in parallel over ``--workers`` processes, one CPU thread each,
so results do not depend on how many workers there are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from ift.core.workers import imap_in_processes
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import DEFAULT_MAP, MAP_SEPARATOR, MapError
from ift.tasks.frozen_lake.metrics import EXPLORED_THRESHOLD
from ift.tasks.frozen_lake.results import aggregate, format_table, plot_runs
from ift.tasks.frozen_lake.runs import (
    DEFAULT_EVAL_EVERY,
    DEFAULT_SEEDS,
    DEFAULT_STEPS,
    OBJECTIVE_DATA,
    OBJECTIVES,
    build_cli,
    frozen_lake_monitor,
    run_config,
)


# --------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------
def run_one(job: Tuple[str, int, Optional[str], int, int]) -> Dict[str, Any]:
    """Train one (objective, seed) and return its metrics, final policy and learning curve."""
    name, seed, map_spec, steps, eval_every = job
    start = time.perf_counter()
    cli = build_cli(run_config(name, map_spec, steps, seed, eval_every))
    trainer = cli.trainer
    trainer.fit(cli.model, datamodule=cli.datamodule)
    monitor = frozen_lake_monitor(trainer)
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
# The command
# --------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The arguments of ``ift frozen-lake`` (see ``--help``); objectives as a list of names."""
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
        "explored_threshold": EXPLORED_THRESHOLD,
        "seconds": elapsed,
        "workers": workers,
        "configs": {name: run_config(name, map_spec, args.steps, 0, args.eval_every) for name in objectives},
        "runs": sorted(runs, key=lambda run: (objectives.index(run["objective"]), run["seed"])),
        "notes": notes,
    }
    _write_json(os.path.join(args.out, "details.json"), details)
    picture = plot_runs(task, runs, objectives, os.path.join(args.out, "frozen_lake.png"))
    print()
    print(format_table(results, args.seeds))
    print(f"\nexplored = states whose action distribution moved more than {EXPLORED_THRESHOLD} in total "
          f"variation (TV) from the initial policy, of {len(task.reachable_states())} reachable states; "
          f"moved = mean TV from the initial policy over those states")
    print(f"wrote {os.path.join(args.out, 'results.json')}, {os.path.join(args.out, 'details.json')} and {picture} "
          f"in {elapsed:.0f} s")
    return results


def _write_json(path: str, payload: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def _run_jobs(jobs: List[Tuple[str, int, Optional[str], int, int]], workers: int) -> List[Dict[str, Any]]:
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
