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
from typing import Any, Dict, List, Literal, NamedTuple, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from ift.lab.workers import imap_in_processes
from ift.lab.frozen_lake.claims import format_claims, judge_claims
from ift.tasks.frozen_lake.data import rejected_trajectory
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.lab.frozen_lake.map_check import rejected_summary
from ift.tasks.frozen_lake.maps import MAP_SEPARATOR, MapError
from ift.tasks.frozen_lake.metrics import EXPLORED_THRESHOLD
from ift.tasks.frozen_lake.paths import has_one_optimal_and_one_suboptimal_path, simple_paths_to_goal
from ift.lab.frozen_lake.readings import READINGS, reading_metrics
from ift.lab.frozen_lake.results import aggregate, format_readings_table, format_table, plot_runs
from ift.lab.frozen_lake.run_log import FrozenLakeError, RunLog, from_log, run_key
from ift.lab.frozen_lake.setups import DEFAULT_SETUP, SETUPS, get_setup
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
    setup_objectives,
)


# --------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------
class Job(NamedTuple):
    """One run: a policy, objective and seed of one set-up (map None: the set-up's; steps
    None: the policy's budget; lr None: the config's learning rate, else this one instead,
    for benchmarks/frozen_lake_lr_sweep.py)."""

    policy: str
    objective: str
    seed: int
    map: Optional[str]
    steps: Optional[int]
    eval_every: int
    setup: str = DEFAULT_SETUP
    lr: Optional[float] = None


def run_one(job: Sequence[Any]) -> Dict[str, Any]:
    """Train one (set-up, policy, objective, seed) and return its metrics (every reading's
    MSE among them), its policy before and after, and its learning curve."""
    job = Job(*job)
    start = time.perf_counter()
    config = run_config(job.objective, job.map, job.steps, job.seed, job.eval_every, policy=job.policy,
                        setup=job.setup)
    # The one difference from `ift fit --config` of the same run, which changes no number: a
    # stopped run writes no interrupted.ckpt (into the working directory, every worker the
    # same file). The command keeps finished runs; a stopped one is trained again.
    config["model"]["checkpoint_on_interrupt"] = False
    if job.lr is not None:
        config["model"]["optimizer"]["init_args"]["lr"] = float(job.lr)
    cli = build_cli(config)
    trainer = cli.trainer
    trainer.fit(cli.model, datamodule=cli.datamodule)
    monitor = frozen_lake_monitor(trainer)
    task = monitor.task
    demonstrated, rejected = task.optimal_trajectory(require_unique=False), setup_rejected(task, job.setup)
    metrics = dict(monitor.results, **reading_metrics(task, monitor.action_probs, demonstrated, rejected))
    initial = dict(monitor.initial_results,
                   **reading_metrics(task, monitor.initial_action_probs, demonstrated, rejected))
    return {
        "setup": job.setup,
        "lr": float(config["model"]["optimizer"]["init_args"]["lr"]),
        "policy": job.policy,
        "objective": job.objective,
        "seed": job.seed,
        "metrics": metrics,
        "initial_metrics": initial,
        "action_probs": _plain(monitor.action_probs),
        "initial_action_probs": _plain(monitor.initial_action_probs),
        "curve": [[int(step), float(mse)] for step, mse in monitor.curve],
        "optimizer_steps": int(trainer.global_step),
        "seconds": time.perf_counter() - start,
    }


def _plain(action_probs: Dict[int, Any]) -> Dict[int, List[float]]:
    return {int(s): [float(x) for x in p] for s, p in action_probs.items()}


def setup_rejected(task: FrozenLakeTask, setup: str) -> Optional[str]:
    """The rejected path ``setup``'s DPO and ORPO train on, on this map (None: the map has none)."""
    try:
        return rejected_trajectory(task, get_setup(setup).rejected)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------
# The command (registered in ift.cli.commands; its options are FrozenLakeArguments' fields)
# --------------------------------------------------------------------------------------
PolicyChoice = Optional[Literal[("both",) + POLICIES]]  # type: ignore[valid-type]
SetupChoice = Literal[("both",) + tuple(SETUPS)]  # type: ignore[valid-type]


@dataclasses.dataclass
class FrozenLakeArguments:
    """The IFT paper's Frozen Lake sanity check: train every objective on one map over
    several seeds, compare each policy with the optimal policy π*, in the paper-literal
    set-up, this project's, or both.

    Attributes:
        setup: paper-literal (the paper's words taken literally: its network and four objectives,
            a map with one optimal and one sub-optimal path, the sub-optimal success rejected),
            ours (this project's map and rejected walk, both policies, the RL arms) or both.
        policy: mlp (the paper's two-layer network over grid states), transformer (a tiny GPT-2
            over action strings) or both; null: each set-up's own (paper-literal: mlp; ours: both).
        map: a named map, rows joined by ',' (e.g. SFFF,FFHF,FFHG,FFFF), '4x4', '8x8' or
            'random:SIZE:SEED', for every set-up run; null: each set-up's own (paper-literal:
            ring4x4; ours: check4x4).
        seeds: seeds per objective (0..N-1).
        objectives: comma-separated subset of the objectives; null: each set-up's own
            (paper-literal: SFT, IFT, IFT-lam0-gamma0, DPO, ORPO; ours: all).
        steps: optimizer steps of every run, the same budget for each objective; null: each
            policy's own (STEPS).
        eval_every: optimizer steps between two points of the learning curves.
        out: output folder (checked before any training); each set-up writes OUT/<setup>/<policy>/.
            Each finished run is appended to OUT/runs.jsonl.partial at once; a command stopped
            before the end (Ctrl-C, SIGTERM, an error) keeps it, and the same command run again
            trains only the other runs.
        workers: parallel processes (null: min(2, CPUs)); each uses one CPU thread.
        fresh: train every run again, instead of continuing the runs a stopped command left in
            OUT/runs.jsonl.partial.
    """

    setup: SetupChoice = "both"
    policy: PolicyChoice = None
    map: Optional[str] = None
    seeds: int = DEFAULT_SEEDS
    objectives: Optional[str] = None
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
        if self.setup not in ("both",) + tuple(SETUPS):
            raise ValueError(f"--setup {self.setup}: choose from both, {', '.join(SETUPS)}")
        if self.policy is not None and self.policy not in ("both",) + POLICIES:
            raise ValueError(f"--policy {self.policy}: choose from both, {', '.join(POLICIES)}")
        if self.objectives is not None:
            names = [name.strip() for name in self.objectives.split(",") if name.strip()]
            unknown = [name for name in names if name not in OBJECTIVES]
            if unknown or not names:
                raise ValueError(f"unknown objective(s) {unknown}; choose from {', '.join(OBJECTIVES)}")

    @property
    def setups(self) -> List[str]:
        """The set-ups ``setup`` names, in the order they run."""
        return list(SETUPS) if self.setup == "both" else [self.setup]

    def objective_names(self, setup: str) -> List[str]:
        """The objectives of ``setup``: ``objectives`` as a list, or the set-up's own."""
        if self.objectives is None:
            return setup_objectives(setup)
        return [name.strip() for name in self.objectives.split(",") if name.strip()]

    def policies(self, setup: str) -> List[str]:
        """The policies of ``setup``: those ``policy`` names, or the set-up's own."""
        if self.policy is None:
            return list(get_setup(setup).policies)
        return list(POLICIES) if self.policy == "both" else [self.policy]


FrozenLakeArguments.__doc__ = FrozenLakeArguments.__doc__.replace(
    "(STEPS)", "(" + ", ".join(f"{policy} {steps}" for policy, steps in DEFAULT_STEPS.items()) + ")")


@dataclasses.dataclass
class SetupPlan:
    """What one set-up of a command runs: its map, policies and the objectives the map allows."""

    setup: str
    task: FrozenLakeTask
    map_spec: Optional[str]
    policies: List[str]
    objectives: List[str]
    notes: List[str]


def usable_objectives(task: FrozenLakeTask, names: Sequence[str], setup: str = DEFAULT_SETUP
                      ) -> Tuple[List[str], List[str]]:
    """The objectives whose data this map can give in ``setup``, and a note for each one it cannot."""
    kept, notes = [], []
    for name in names:
        if OBJECTIVE_DATA[name] == "preference":
            try:
                rejected_trajectory(task, get_setup(setup).rejected)
            except ValueError as error:
                notes.append(f"{name} skipped: {error}")
                continue
        kept.append(name)
    return kept, notes


def plan_setups(args: FrozenLakeArguments) -> List[SetupPlan]:
    """Each set-up's map, policies and usable objectives; stops with a message on a bad map or a
    set-up with nothing to run."""
    plans = []
    for setup in args.setups:
        try:
            task = FrozenLakeTask(args.map if args.map is not None else get_setup(setup).map)
        except MapError as error:
            raise SystemExit(f"ift frozen-lake: error: {error}")
        objectives, notes = usable_objectives(task, args.objective_names(setup), setup)
        if not objectives:
            describe_setup(task, setup, objectives, notes)
            raise SystemExit(f"ift frozen-lake: error: no objective can run on this map in the {setup} set-up")
        map_spec = None if args.map is None else ",".join(task.rows)
        policies = args.policies(setup)
        # Said, not refused: the set-up's other choices still hold, with another policy.
        notes += [f"--policy {policy}: not one of the {setup} set-up's own policies "
                  f"({', '.join(get_setup(setup).policies)}); its rows are labelled with it"
                  for policy in policies if policy not in get_setup(setup).policies]
        plans.append(SetupPlan(setup, task, map_spec, policies, objectives, notes))
    return plans


def run(args: FrozenLakeArguments) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Run ``ift frozen-lake`` with these arguments; returns ``{setup: {policy: results.json's content}}``."""
    plans = plan_setups(args)
    for plan in plans:
        describe_setup(plan.task, plan.setup, plan.objectives, plan.notes)
    check_out(args.out, [os.path.join(get_setup(plan.setup).folder, policy) for plan in plans for policy in plan.policies])
    jobs: List[Job] = [Job(policy, name, seed, plan.map_spec, args.steps, args.eval_every, plan.setup)
                       for plan in plans for policy in plan.policies for name in plan.objectives
                       for seed in range(args.seeds)]
    # Most expensive first, so the workers finish together: PPO's sampling (a run costs about
    # 13 s of CPU with the transformer, 10 s with the state MLP), then GRPO (as dear as PPO with
    # the transformer, 3 s with the state MLP: 75 rollouts, not 300), then SFT -> PPO (half of
    # it PPO), then the supervised runs (2-3 s, the transformer's the dearer).
    cost = {"PPO": 4, "GRPO": 3, "SFT-PPO": 2}
    jobs.sort(key=lambda job: (-cost.get(job.objective, 0), job.policy != "transformer"))
    log = RunLog(args.out, fresh=args.fresh, settings={
        "setups": {plan.setup: {"policies": plan.policies, "objectives": plan.objectives, "map": plan.map_spec}
                   for plan in plans},
        "seeds": args.seeds, "steps": args.steps, "eval_every": args.eval_every}).open()
    kept: List[Dict[str, Any]] = []
    done: List[Dict[str, Any]] = []
    try:
        kept += [from_log(record) for record in log.resumed]
        everything = _train_and_report(plans, args, jobs, kept, done, log)
        log.commit()  # last: a run stopped while reporting keeps its runs too
    except BaseException:
        where = log.abort()
        print(f"ift frozen-lake: stopped after {len(kept) + len(done)} of {len(jobs)} runs"
              + (f"; the finished runs are in {where}; run the same command again to train only the other "
                 f"{len(jobs) - len(kept) - len(done)} (--fresh trains them all again)" if where else
                 "; no run had finished, nothing was kept"), file=sys.stderr, flush=True)
        raise
    return everything


def _train_and_report(plans: Sequence[SetupPlan], args: FrozenLakeArguments, jobs: List[Job],
                      kept: List[Dict[str, Any]], done: List[Dict[str, Any]], log: RunLog
                      ) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Train the jobs that ``kept`` (a stopped command's runs) lacks, appending each to ``done``
    and ``log`` as it finishes; then write and print each set-up's and policy's results."""
    finished = {run_key(run) for run in kept}
    todo = [job for job in jobs if (job.setup, job.policy, job.objective, job.seed) not in finished]
    if kept:
        print(f"continuing {log.partial_path}: {len(kept)} of {len(jobs)} runs were finished by a stopped command; "
              f"training the other {len(todo)} (--fresh trains them all again)")
    workers = args.workers or min(2, os.cpu_count() or 1)
    workers = max(1, min(workers, max(1, len(todo))))
    parts = [f"{plan.setup}: {' and '.join(plan.policies)} x {len(plan.objectives)} objectives" for plan in plans]
    print(f"training {len(jobs)} runs ({'; '.join(parts)}; {args.seeds} seeds) on "
          f"{workers} process{'es' if workers > 1 else ''}")
    started = time.perf_counter()
    _run_jobs(todo, workers, log, done)
    runs = kept + done
    elapsed = time.perf_counter() - started
    everything: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for plan in plans:
        print(f"\n##### set-up {plan.setup}: {get_setup(plan.setup).headline}"
              + (f" [here on the map --map gives, {MAP_SEPARATOR.join(plan.task.rows)}, instead of "
                 f"{get_setup(plan.setup).map}]" if plan.map_spec is not None else ""))
        everything[plan.setup] = {}
        for policy in plan.policies:
            mine = [run for run in runs if run["policy"] == policy and run["setup"] == plan.setup]
            everything[plan.setup][policy] = report_policy(plan, policy, mine, args, elapsed)
    for setup in SETUPS:
        if setup not in args.setups:
            print(f"\nThe {setup} set-up ({get_setup(setup).headline.split(':')[0]}): "
                  f"ift frozen-lake --setup {setup}")
    print(f"\n{len(runs)} runs in {elapsed:.0f} s"
          + (f" ({len(kept)} of them from the stopped command)" if kept else ""))
    return everything


def check_out(out: str, folders: Sequence[str]) -> None:
    """Stop before any training unless ``out`` and its ``folders`` (``<setup>/<policy>``) are
    folders that can be written (FrozenLakeError naming the path and the fix)."""
    for path in [out] + [os.path.join(out, folder) for folder in folders]:
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


def describe_setup(task: FrozenLakeTask, setup: str, objectives: Sequence[str], notes: Sequence[str]) -> None:
    """Print a set-up's map: its optimal path, its routes to G and its rejected path."""
    paths = task.num_shortest_paths()
    print(f"[{setup}] Frozen Lake {MAP_SEPARATOR.join(task.rows)}: optimal trajectory "
          f"{task.optimal_trajectory(require_unique=False)}"
          + (f" (one of {paths} shortest paths; π* spreads over all of them)" if paths > 1 else ""))
    print(f"[{setup}] {routes_summary(task)}")
    if any(OBJECTIVE_DATA[n] == "preference" for n in objectives):
        print(f"[{setup}] " + rejected_summary(task, rejected_trajectory(task, get_setup(setup).rejected)))
    for note in notes:
        print(f"[{setup}] {note}")


def routes_summary(task: FrozenLakeTask) -> str:
    """How many simple paths lead from S to G (the paper's map has one optimal and one sub-optimal)."""
    try:
        paths = simple_paths_to_goal(task)
    except ValueError as error:
        return str(error)
    if has_one_optimal_and_one_suboptimal_path(task):
        return f"routes to G: exactly one optimal ({paths[0]}) and one sub-optimal ({paths[1]}), as the paper's map"
    return f"routes to G: {len(paths)} simple paths (the paper's map has one optimal and one sub-optimal)"


def report_policy(plan: SetupPlan, policy: str, runs: List[Dict[str, Any]], args: FrozenLakeArguments,
                  elapsed: float) -> Dict[str, Any]:
    """Write one set-up's and policy's results, details and picture; print its table and claims."""
    task, objectives = plan.task, plan.objectives
    out = os.path.join(args.out, get_setup(plan.setup).folder, policy)
    os.makedirs(out, exist_ok=True)
    results = aggregate(runs, objectives)
    _write_json(os.path.join(out, "results.json"), results)
    claims = judge_claims(runs)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[policy]
    details = {
        "setup": plan.setup,
        "setup_headline": get_setup(plan.setup).headline,
        "policy": policy,
        "map": MAP_SEPARATOR.join(task.rows),
        "optimal_trajectory": task.optimal_trajectory(require_unique=False),
        "rejected_trajectory": setup_rejected(task, plan.setup),
        "shortest_paths": task.num_shortest_paths(),
        "seeds": args.seeds,
        "steps": steps,
        "moved_threshold": EXPLORED_THRESHOLD,
        "readings": {reading.name: {"metric": reading.mse_key, "label": reading.label,
                                    "paper_words": reading.paper_words} for reading in READINGS},
        "seconds_all_policies": elapsed,
        "configs": {name: run_config(name, plan.map_spec, steps, 0, args.eval_every, policy=policy, setup=plan.setup)
                    for name in objectives},
        "runs": sorted(runs, key=lambda run: (objectives.index(run["objective"]), run["seed"])),
        "claims": [dataclasses.asdict(claim) for claim in claims],
        "notes": list(plan.notes),
    }
    _write_json(os.path.join(out, "details.json"), details)
    picture = plot_runs(task, runs, objectives, os.path.join(out, "frozen_lake.png"), policy=policy)
    print(f"\n=== {plan.setup} set-up, {policy} policy ({steps} optimizer steps per run) ===")
    print(format_table(results, args.seeds))
    print()
    print(format_readings_table(results))
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
    bar.set_postfix_str(f"{run['setup']} {run['policy']} {run['objective']} seed {run['seed']}: "
                        f"MSE {run['metrics']['mse_to_optimal']:.4f}")
    bar.update(1)

