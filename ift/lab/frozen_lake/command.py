"""``ift frozen-lake``: the IFT paper's Frozen Lake sanity check (§5.3) for every objective.

Trains both policies — the paper's two-layer network over grid states (``mlp``) and a tiny
character transformer over action strings (``transformer``) — on one Frozen Lake map with
SFT, IFT, DPO, ORPO, PPO, GRPO and the SFT -> PPO recipe (and IFT with lam = 0, gamma = 0, which
must reproduce SFT exactly, and DPO with a tuned beta, labelled as such), over several
seeds, and writes for each policy:

* ``OUT/<policy>/results.json``: ``{objective: {metric: {"mean", "std"}}}`` (metrics of
  :mod:`ift.tasks.frozen_lake.metrics`), plus an ``untrained`` row (the same seeds' policies
  before training);
* ``OUT/<policy>/details.json``: the settings, every seed's numbers, policies, learning curves
  and the claims with their evidence;
* ``OUT/<policy>/frozen_lake.png``: each objective's policy (seed 0) on the map beside π*, the
  states its sampled episodes visit, and the mean learning curves;
* a mean ± std table and the claims table (the paper's claims, then this project's checks)
  on the terminal;
* ``OUT/runs.jsonl``: every run's record, one per line, appended as each run finishes
  (``runs.jsonl.partial`` until all are done: :mod:`ift.lab.frozen_lake.run_log`).

``--out`` is checked before any training: a file in its place or a folder that cannot be
written stops the command at once. Ctrl-C or SIGTERM stops the workers within seconds and
says how many runs finished and where they are; the same command run again trains only
the others (``--fresh`` trains them all again).

Each single run is exactly ``ift fit --config configs/frozen_lake/<policy>/<objective>.yaml``:
the files are :func:`ift.lab.frozen_lake.runs.run_config` written out, and each run is
built from its config by LightningCLI, as ``ift fit`` builds it (but a stopped run writes no
``interrupted.ckpt``: the command trains it again). Runs are independent
processes' work: seeds run in parallel over ``--workers`` processes, one CPU thread each,
so results do not depend on how many workers there are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from ift.lab.workers import imap_in_processes
from ift.lab.frozen_lake.claims import format_claims, judge_claims
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.lab.frozen_lake.map_check import rejected_summary
from ift.tasks.frozen_lake.maps import DEFAULT_MAP, MAP_SEPARATOR, MapError
from ift.tasks.frozen_lake.metrics import EXPLORED_THRESHOLD
from ift.lab.frozen_lake.results import aggregate, format_table, plot_runs
from ift.lab.frozen_lake.run_log import FrozenLakeError, RunLog, from_log, run_key
from ift.tasks.frozen_lake.policies import POLICIES
from ift.lab.frozen_lake.runs import (
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
Job = Tuple[str, str, int, Optional[str], Optional[int], int]


def run_one(job: Job) -> Dict[str, Any]:
    """Train one (policy, objective, seed) and return its metrics, final policy and learning curve."""
    policy, name, seed, map_spec, steps, eval_every = job
    start = time.perf_counter()
    config = run_config(name, map_spec, steps, seed, eval_every, policy=policy)
    # The one difference from `ift fit --config` of the same run, which changes no number: a
    # stopped run writes no interrupted.ckpt (into the working directory, every worker the
    # same file). The command keeps finished runs; a stopped one is trained again.
    config["model"]["checkpoint_on_interrupt"] = False
    cli = build_cli(config)
    trainer = cli.trainer
    trainer.fit(cli.model, datamodule=cli.datamodule)
    monitor = frozen_lake_monitor(trainer)
    return {
        "policy": policy,
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
# The command (registered in ift.cli.commands; its options are FrozenLakeArguments' fields)
# --------------------------------------------------------------------------------------
PolicyChoice = Literal[("both",) + POLICIES]  # type: ignore[valid-type]


@dataclasses.dataclass
class FrozenLakeArguments:
    """The IFT paper's Frozen Lake sanity check: train every objective on one map over
    several seeds, compare each policy with the optimal policy π*.

    Attributes:
        policy: mlp (the paper's two-layer network over grid states), transformer (a tiny GPT-2
            over action strings) or both.
        map: a named map, rows joined by ',' (e.g. SFFF,FFHF,FFHG,FFFF), '4x4', '8x8' or
            'random:SIZE:SEED'; null: the default map.
        seeds: seeds per objective (0..N-1).
        objectives: comma-separated subset of the objectives.
        steps: optimizer steps of every run, the same budget for each objective; null: each
            policy's own (STEPS).
        eval_every: optimizer steps between two points of the learning curves.
        out: output folder (checked before any training). Each finished run is appended to
            OUT/runs.jsonl.partial at once; a command stopped before the end (Ctrl-C, SIGTERM, an
            error) keeps it, and the same command run again trains only the other runs.
        workers: parallel processes (null: min(2, CPUs)); each uses one CPU thread.
        fresh: train every run again, instead of continuing the runs a stopped command left in
            OUT/runs.jsonl.partial.
    """

    policy: PolicyChoice = "both"
    map: Optional[str] = None
    seeds: int = DEFAULT_SEEDS
    objectives: str = ",".join(OBJECTIVES)
    steps: Optional[int] = None
    eval_every: int = DEFAULT_EVAL_EVERY
    out: str = "runs/frozen_lake"
    workers: Optional[int] = None
    fresh: bool = False

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError("--seeds must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise ValueError("--steps must be at least 1")
        if self.eval_every < 0:
            raise ValueError("--eval_every must be >= 0")
        if self.policy not in ("both",) + POLICIES:
            raise ValueError(f"--policy {self.policy}: choose from both, {', '.join(POLICIES)}")
        unknown = [name for name in self.objective_names if name not in OBJECTIVES]
        if unknown or not self.objective_names:
            raise ValueError(f"unknown objective(s) {unknown}; choose from {', '.join(OBJECTIVES)}")

    @property
    def objective_names(self) -> List[str]:
        """``objectives`` as a list of names."""
        return [name.strip() for name in self.objectives.split(",") if name.strip()]

    @property
    def policies(self) -> List[str]:
        """The policies ``policy`` names."""
        return list(POLICIES) if self.policy == "both" else [self.policy]


FrozenLakeArguments.__doc__ = FrozenLakeArguments.__doc__.replace(
    "(STEPS)", "(" + ", ".join(f"{policy} {steps}" for policy, steps in DEFAULT_STEPS.items()) + ")")


def usable_objectives(task: FrozenLakeTask, names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """The objectives whose data this map can give, and a note for each one it cannot."""
    kept, notes = [], []
    for name in names:
        if OBJECTIVE_DATA[name] == "preference":
            try:
                task.rejected_trajectory()
            except ValueError as error:
                notes.append(f"{name} skipped: {error}")
                continue
        kept.append(name)
    return kept, notes


def run(args: FrozenLakeArguments) -> Dict[str, Dict[str, Any]]:
    """Run ``ift frozen-lake`` with these arguments; returns ``{policy: results.json's content}``."""
    try:
        task = FrozenLakeTask(args.map if args.map is not None else DEFAULT_MAP)
    except MapError as error:
        raise SystemExit(f"ift frozen-lake: error: {error}")
    map_spec = None if args.map is None else ",".join(task.rows)
    objectives, notes = usable_objectives(task, args.objective_names)
    describe_map(task, objectives, notes)
    if not objectives:
        raise SystemExit("ift frozen-lake: error: no objective can run on this map")

    check_out(args.out, args.policies)
    jobs: List[Job] = [(policy, name, seed, map_spec, args.steps, args.eval_every)
                       for policy in args.policies for name in objectives for seed in range(args.seeds)]
    # Most expensive first, so the workers finish together: PPO's sampling (a run costs about
    # 13 s of CPU with the transformer, 10 s with the state MLP), then GRPO (as dear as PPO with
    # the transformer, 3 s with the state MLP: 75 rollouts, not 300), then SFT -> PPO (half of
    # it PPO), then the supervised runs (2-3 s, the transformer's the dearer).
    cost = {"PPO": 4, "GRPO": 3, "SFT-PPO": 2}
    jobs.sort(key=lambda job: (-cost.get(job[1], 0), job[0] != "transformer"))
    log = RunLog(args.out, fresh=args.fresh, settings={
        "policies": args.policies, "objectives": objectives, "seeds": args.seeds, "map": map_spec,
        "steps": args.steps, "eval_every": args.eval_every}).open()
    kept: List[Dict[str, Any]] = []
    done: List[Dict[str, Any]] = []
    try:
        kept += [from_log(record) for record in log.resumed]
        everything = _train_and_report(task, args, objectives, notes, map_spec, jobs, kept, done, log)
        log.commit()  # last: a run stopped while reporting keeps its runs too
    except BaseException:
        where = log.abort()
        print(f"ift frozen-lake: stopped after {len(kept) + len(done)} of {len(jobs)} runs"
              + (f"; the finished runs are in {where}; run the same command again to train only the other "
                 f"{len(jobs) - len(kept) - len(done)} (--fresh trains them all again)" if where else
                 "; no run had finished, nothing was kept"), file=sys.stderr, flush=True)
        raise
    return everything


def _train_and_report(task: FrozenLakeTask, args: FrozenLakeArguments, objectives: Sequence[str],
                      notes: Sequence[str], map_spec: Optional[str], jobs: List[Job], kept: List[Dict[str, Any]],
                      done: List[Dict[str, Any]], log: RunLog) -> Dict[str, Dict[str, Any]]:
    """Train the jobs that ``kept`` (a stopped command's runs) lacks, appending each to ``done``
    and ``log`` as it finishes; then write and print each policy's results."""
    finished = {run_key(run) for run in kept}
    todo = [job for job in jobs if job[:3] not in finished]
    if kept:
        print(f"continuing {log.partial_path}: {len(kept)} of {len(jobs)} runs were finished by a stopped command; "
              f"training the other {len(todo)} (--fresh trains them all again)")
    workers = args.workers or min(2, os.cpu_count() or 1)
    workers = max(1, min(workers, max(1, len(todo))))
    print(f"training {' and '.join(args.policies)} x {len(objectives)} objectives x {args.seeds} seeds on "
          f"{workers} process{'es' if workers > 1 else ''}")
    started = time.perf_counter()
    _run_jobs(todo, workers, log, done)
    runs = kept + done
    elapsed = time.perf_counter() - started
    everything = {}
    for policy in args.policies:
        mine = [run for run in runs if run["policy"] == policy]
        everything[policy] = report_policy(task, policy, mine, objectives, args, map_spec, notes, elapsed)
    print(f"\n{len(runs)} runs in {elapsed:.0f} s"
          + (f" ({len(kept)} of them from the stopped command)" if kept else ""))
    return everything


def check_out(out: str, policies: Sequence[str]) -> None:
    """Stop before any training unless ``out`` and its policy folders are folders that can be
    written (FrozenLakeError naming the path and the fix)."""
    for path in [out] + [os.path.join(out, policy) for policy in policies]:
        if os.path.exists(path) and not os.path.isdir(path):
            raise FrozenLakeError(f"--out {out}: {path} is a file, not a folder; give an --out folder that can be "
                                  f"written (or move the file away)")
        try:
            os.makedirs(path, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as error:
            raise FrozenLakeError(f"--out {out}: {path} cannot be written ({error.strerror or error}); give an --out "
                                  f"folder that can be written") from None


def describe_map(task: FrozenLakeTask, objectives: Sequence[str], notes: Sequence[str]) -> None:
    """Print the map's optimal path, its rejected path and which rejected moves are optimal."""
    paths = task.num_shortest_paths()
    print(f"Frozen Lake {MAP_SEPARATOR.join(task.rows)}: optimal trajectory {task.optimal_trajectory(require_unique=False)}"
          + (f" (one of {paths} shortest paths; π* spreads over all of them)" if paths > 1 else ""))
    if any(OBJECTIVE_DATA[n] == "preference" for n in objectives):
        print(rejected_summary(task, task.rejected_trajectory()))
    for note in notes:
        print(note)


def report_policy(task: FrozenLakeTask, policy: str, runs: List[Dict[str, Any]], objectives: Sequence[str],
                  args: FrozenLakeArguments, map_spec: Optional[str], notes: Sequence[str],
                  elapsed: float) -> Dict[str, Any]:
    """Write one policy's results, details and picture; print its table and claims."""
    out = os.path.join(args.out, policy)
    os.makedirs(out, exist_ok=True)
    results = aggregate(runs, objectives)
    _write_json(os.path.join(out, "results.json"), results)
    claims = judge_claims(runs)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[policy]
    details = {
        "policy": policy,
        "map": MAP_SEPARATOR.join(task.rows),
        "optimal_trajectory": task.optimal_trajectory(require_unique=False),
        "shortest_paths": task.num_shortest_paths(),
        "seeds": args.seeds,
        "steps": steps,
        "moved_threshold": EXPLORED_THRESHOLD,
        "seconds_all_policies": elapsed,
        "configs": {name: run_config(name, map_spec, steps, 0, args.eval_every, policy=policy) for name in objectives},
        "runs": sorted(runs, key=lambda run: (objectives.index(run["objective"]), run["seed"])),
        "claims": [vars(claim) for claim in claims],
        "notes": list(notes),
    }
    _write_json(os.path.join(out, "details.json"), details)
    picture = plot_runs(task, runs, objectives, os.path.join(out, "frozen_lake.png"), policy=policy)
    print(f"\n=== {policy} policy ({steps} optimizer steps per run) ===")
    print(format_table(results, args.seeds))
    print()
    print(format_claims(claims, policy))
    print(f"wrote {os.path.join(out, 'results.json')}, {os.path.join(out, 'details.json')} and {picture}")
    return results


def _write_json(path: str, payload: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def _run_jobs(jobs: List[Job], workers: int, log: RunLog, runs: List[Dict[str, Any]]) -> None:
    """Run ``jobs``, appending each finished run to ``runs`` and ``log`` (so a stop keeps it)."""
    bar = tqdm(total=len(jobs), desc="frozen-lake", unit="run", file=sys.stderr, dynamic_ncols=True)
    try:
        # closing(): a stop between two results still stops the workers, at once.
        with contextlib.closing(imap_in_processes(run_one, jobs, workers)) as results:
            for run in results:
                log.write_run(run)
                runs.append(run)
                _advance(bar, run)
    finally:
        bar.close()


def _advance(bar, run: Dict[str, Any]) -> None:
    bar.set_postfix_str(f"{run['policy']} {run['objective']} seed {run['seed']}: "
                        f"MSE {run['metrics']['mse_to_optimal']:.4f}")
    bar.update(1)

