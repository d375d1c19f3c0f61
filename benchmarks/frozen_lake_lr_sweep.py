"""Where along the learning-rate axis do the paper's Frozen Lake orderings change?

    python benchmarks/frozen_lake_lr_sweep.py            # 4 lrs x 4 objectives x 5 seeds x 3 (set-up, policy)
    python benchmarks/frozen_lake_lr_sweep.py --lrs 1e-2 --objectives SFT,DPO --seeds 2 --steps 20 \\
        --pairs paper-literal:mlp --out /tmp/sweep_smoke   # a smoke test, seconds

The IFT paper (arXiv 2405.11870 §5.3) trains its Frozen Lake policy with "similar
hyper-parameters as in NLP setting", whose learning rate is 5e-7. ``ift frozen-lake`` uses
1e-2 for the paper's MLP (RMSprop) and 1e-3 for the transformer (AdamW), because at 5e-7
nothing moves within the 300-step budget. This sweep trains SFT, IFT, DPO and ORPO at the
learning rates 5e-7, 1e-4, 1e-3 and 1e-2 in three (set-up, policy) pairs — paper-literal/mlp,
ours/mlp, ours/transformer — and reports, for every learning rate:

* each objective's final MSE to π* (mean ± sample std over seeds) under the headline reading
  (``mse_to_optimal``: π* uniform over tied optimal moves, whole map) and under the one-hot,
  whole-map reading (``mse_one_hot_map``), beside the untrained policies' (the same seeds);
* the change from the untrained policy (final − untrained, paired per seed), so that a move
  too small for four decimals still shows;
* the verdicts of the paper's three MSE orderings (IFT below SFT, IFT below ORPO, DPO below
  IFT) with :func:`ift.lab.frozen_lake.claims.below` (the paired per-seed difference more
  than 2 standard errors below 0), under both readings.

Each run is exactly ``ift frozen-lake``'s run of that set-up, policy, objective and seed
(:func:`ift.lab.frozen_lake.command.run_one`: the ``ift fit`` config of the run) with only
the optimizer's learning rate replaced: the optimizer stays each policy's own (RMSprop for
the MLP, AdamW for the transformer), so is everything else. Runs go over ``--workers``
processes with one CPU thread each (:func:`ift.lab.workers.imap_in_processes`), so a run's
numbers do not depend on the number of workers.

The default grid is 240 runs of 300 steps; on 2 cores (AMD EPYC, 2 workers) it takes about
6 minutes (5 min 34 s measured, the runs' own times adding up to 633 s). It writes

* ``OUT/runs.jsonl``: one line per finished run, appended as it finishes: a stopped sweep
  keeps its work, and the same command run again trains only the runs the file lacks
  (``--fresh`` starts over);
* ``OUT/sweep.json``: the settings, the command, the seconds, every run of the grid (set-up,
  policy, objective, seed, lr, steps, metrics, initial metrics, curve, seconds) and the verdicts;
* the picture (``docs/frozen_lake_lr_sweep.png`` with the default ``--out``, else
  ``OUT/frozen_lake_lr_sweep.png``; ``--plot`` chooses): per (set-up, policy) the final MSE
  to π* against the learning rate, and the mean learning curves at each learning rate;
* markdown tables on the terminal, ready to paste into docs (OUT defaults to
  ``runs/frozen_lake_lr_sweep``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ift.lab.frozen_lake.claims import below, paired  # noqa: E402
from ift.lab.frozen_lake.command import Job, run_one  # noqa: E402
from ift.lab.frozen_lake.runs import DEFAULT_STEPS, OBJECTIVES  # noqa: E402
from ift.lab.frozen_lake.setups import SETUPS  # noqa: E402
from ift.lab.workers import imap_in_processes  # noqa: E402
from ift.tasks.frozen_lake.policies import POLICIES  # noqa: E402

DEFAULT_OUT = "runs/frozen_lake_lr_sweep"
DEFAULT_PLOT = "docs/frozen_lake_lr_sweep.png"
DEFAULT_LRS = "5e-7,1e-4,1e-3,1e-2"
DEFAULT_OBJECTIVES = "SFT,IFT,DPO,ORPO"
DEFAULT_PAIRS = "paper-literal:mlp,ours:mlp,ours:transformer"
EVAL_EVERY = 10
#: The two readings of "MSE to π*" the tables and verdicts use: (run metric, label).
READINGS = (("mse_to_optimal", "MSE to π* (headline: π* uniform over ties, whole map)"),
            ("mse_one_hot_map", "MSE to π* (π* one-hot, whole map)"))
#: The paper's three MSE orderings: (first, second) reads "first's MSE below second's".
ORDERINGS = (("IFT", "SFT"), ("IFT", "ORPO"), ("DPO", "IFT"))
#: The fields of a run's record kept in the run log and sweep.json (the policies' action
#: probabilities are left out: the metrics already summarise them, and the files stay small).
RECORD_FIELDS = ("setup", "policy", "objective", "seed", "lr", "steps", "eval_every", "metrics",
                 "initial_metrics", "curve", "optimizer_steps", "seconds")

Key = Tuple[str, str, str, int, float, int]


# --------------------------------------------------------------------------------------
# Running the grid
# --------------------------------------------------------------------------------------
def run_key(run: Dict[str, Any]) -> Key:
    """What one run is: ``(setup, policy, objective, seed, lr, steps)``."""
    return run["setup"], run["policy"], run["objective"], int(run["seed"]), float(run["lr"]), int(run["steps"])


def job_key(job: Job) -> Key:
    """The :func:`run_key` of the run ``job`` trains."""
    return job.setup, job.policy, job.objective, job.seed, float(job.lr), int(job.steps)


def train(job: Job) -> Dict[str, Any]:
    """Train one run (in a worker) and return its record: :func:`run_one`'s, with the budget
    and without the policies' action probabilities."""
    run = run_one(job)
    run["steps"], run["eval_every"] = int(job.steps), int(job.eval_every)
    return {name: run[name] for name in RECORD_FIELDS}


def build_jobs(pairs: Sequence[Tuple[str, str]], objectives: Sequence[str], seeds: int, lrs: Sequence[float],
               steps: Optional[int], eval_every: int) -> List[Job]:
    """Every run of the grid; the transformer's first (its runs are the dearer), so that the
    two workers finish together."""
    jobs = [Job(policy, objective, seed, None, DEFAULT_STEPS[policy] if steps is None else steps, eval_every,
                setup, lr)
            for setup, policy in pairs for lr in lrs for objective in objectives for seed in range(seeds)]
    return sorted(jobs, key=lambda job: job.policy != "transformer")


def load_log(path: str) -> List[Dict[str, Any]]:
    """The runs of an earlier sweep's log (a line cut short by a stop is skipped)."""
    runs = []
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                with contextlib.suppress(json.JSONDecodeError):
                    runs.append(json.loads(line))
    return runs


def run_grid(jobs: Sequence[Job], log_path: str, workers: int, fresh: bool) -> Tuple[List[Dict[str, Any]], int, float]:
    """Train the jobs the log lacks, appending each run to the log as it finishes.

    Returns the runs of ``jobs`` (from the log and new), how many came from the log, and the
    wall seconds of the training."""
    if fresh and os.path.exists(log_path):
        os.remove(log_path)
    wanted = {job_key(job) for job in jobs}
    kept = {run_key(run): run for run in load_log(log_path) if run_key(run) in wanted}
    todo = [job for job in jobs if job_key(job) not in kept]
    print(f"{len(jobs)} runs in the grid: {len(kept)} already in {log_path}, training {len(todo)} on "
          f"{max(1, min(workers, len(todo)))} worker process(es)", flush=True)
    done: List[Dict[str, Any]] = []
    started = time.perf_counter()
    if todo:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        with open(log_path, "a") as log, contextlib.closing(imap_in_processes(train, todo, workers)) as results:
            try:
                for run in results:
                    # One line per run, flushed at once: a stopped sweep keeps every finished run.
                    log.write(json.dumps(run) + "\n")
                    log.flush()
                    done.append(run)
                    print(f"[{len(done)}/{len(todo)}] {run['setup']} {run['policy']} {run['objective']} "
                          f"lr {run['lr']:g} seed {run['seed']}: MSE {run['metrics']['mse_to_optimal']:.4f} "
                          f"({run['seconds']:.1f} s)", flush=True)
            except BaseException:
                print(f"stopped after {len(done)} of {len(todo)} runs; they are in {log_path}: run the same "
                      f"command again to train only the others", file=sys.stderr)
                raise
    return list(kept.values()) + done, len(kept), time.perf_counter() - started


# --------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------
def select(runs: Sequence[Dict[str, Any]], setup: str, policy: str, lr: float,
           objective: Optional[str] = None) -> List[Dict[str, Any]]:
    """The runs of one (set-up, policy, lr), and of one objective if given, by seed."""
    return sorted((run for run in runs if run["setup"] == setup and run["policy"] == policy
                   and math.isclose(run["lr"], lr, rel_tol=1e-12)
                   and (objective is None or run["objective"] == objective)), key=lambda run: run["seed"])


def untrained(runs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One run per seed whose metrics are the policy before training (every objective and
    learning rate of a seed starts from the same weights: the first run of the seed's)."""
    first: Dict[int, Dict[str, Any]] = {}
    for run in runs:
        first.setdefault(int(run["seed"]), run)
    return [{"objective": "untrained", "seed": seed, "metrics": run["initial_metrics"]}
            for seed, run in sorted(first.items())]


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample std (nan for fewer than two values)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def mean_std_text(values: Sequence[float]) -> str:
    """``mean ± std`` at 4 decimals (the project's tables'), ``—`` with no value."""
    if not len(values):
        return "—"
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}"


def verdicts(runs: Sequence[Dict[str, Any]], pairs: Sequence[Tuple[str, str]], lrs: Sequence[float],
             objectives: Sequence[str]) -> List[Dict[str, Any]]:
    """Each ordering's verdict per (set-up, policy, lr) and reading, with its paired mean and SE."""
    found = []
    for setup, policy in pairs:
        for lr in lrs:
            mine = select(runs, setup, policy, lr)
            for first, second in ORDERINGS:
                if first not in objectives or second not in objectives:
                    continue
                for metric, _ in READINGS:
                    holds, evidence = below(mine, first, second, metric)
                    mean, se, seeds = paired(mine, first, second, metric)
                    found.append({"setup": setup, "policy": policy, "lr": lr, "ordering": f"{first} < {second}",
                                  "metric": metric, "holds": bool(holds), "mean": mean, "se": se, "seeds": seeds,
                                  "evidence": evidence})
    return found


def markdown_tables(runs: Sequence[Dict[str, Any]], pairs: Sequence[Tuple[str, str]], lrs: Sequence[float],
                    objectives: Sequence[str], seeds: int, steps_of: Dict[str, int]) -> str:
    """Per (set-up, policy): the final MSE (mean ± std over seeds) of each objective at each lr
    under both readings, with the untrained policies' row; then the change from untrained."""
    header = "| objective | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |"
    rule = "|---|" + "---|" * len(lrs)
    blocks = []
    for setup, policy in pairs:
        title = f"{setup} / {policy}, {seeds} seeds, {steps_of[policy]} steps"
        for metric, label in READINGS:
            lines = [f"**{title}: {label}, mean ± std over seeds**", "", header, rule]
            for objective in objectives:
                cells = [mean_std_text([r["metrics"][metric] for r in select(runs, setup, policy, lr, objective)])
                         for lr in lrs]
                lines.append(f"| {objective} | " + " | ".join(cells) + " |")
            cells = [mean_std_text([r["metrics"][metric] for r in untrained(select(runs, setup, policy, lr))])
                     for lr in lrs]
            lines.append("| untrained | " + " | ".join(cells) + " |")
            blocks.append("\n".join(lines))
        # Paired per seed, in scientific notation: at 5e-7 the move is far below 4 decimals.
        metric = READINGS[0][0]
        lines = [f"**{title}: final − untrained MSE to π* (headline), mean ± std over seeds "
                 f"(negative: closer to π* than before training)**", "", header, rule]
        for objective in objectives:
            cells = []
            for lr in lrs:
                diffs = [r["metrics"][metric] - r["initial_metrics"][metric]
                         for r in select(runs, setup, policy, lr, objective)]
                mean, std = mean_std(diffs) if diffs else (math.nan, math.nan)
                cells.append(f"{mean:+.2e} ± {std:.1e}" if diffs else "—")
            lines.append(f"| {objective} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def verdict_table(found: Sequence[Dict[str, Any]], pairs: Sequence[Tuple[str, str]], lrs: Sequence[float]) -> str:
    """One markdown table per reading: rows (set-up, policy, ordering), columns lr; a cell is
    ``holds``/``no`` and the paired mean difference ± its SE."""
    blocks = []
    for metric, label in READINGS:
        lines = [f"**The paper's orderings, {label}: holds when the paired per-seed difference first − second "
                 f"is more than 2 SE below 0 (cell: verdict, mean ± SE)**", "",
                 "| set-up / policy | ordering | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
                 "|---|---|" + "---|" * len(lrs)]
        orderings = list(dict.fromkeys(v["ordering"] for v in found))
        for setup, policy in pairs:
            for ordering in orderings:
                cells = []
                for lr in lrs:
                    hit = [v for v in found if v["setup"] == setup and v["policy"] == policy and v["metric"] == metric
                           and v["ordering"] == ordering and math.isclose(v["lr"], lr, rel_tol=1e-12)]
                    cells.append("—" if not hit or not hit[0]["seeds"] else
                                 f"{'holds' if hit[0]['holds'] else 'no'} ({hit[0]['mean']:+.2e} ± {hit[0]['se']:.1e})")
                lines.append(f"| {setup} / {policy} | {ordering} | " + " | ".join(cells) + " |")
        if len(lines) == 4:
            lines.append("| (no ordering: each needs both of its objectives in --objectives) | | " + "| " * len(lrs))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------------------
# The picture
# --------------------------------------------------------------------------------------
COLORS = {"SFT": "#1f77b4", "IFT": "#d62728", "DPO": "#2ca02c", "ORPO": "#9467bd"}
# Smallest learning rate dotted, largest solid: the eye follows the solid lines first.
LR_STYLES = (":", "-.", "--", "-")


def plot_sweep(runs: Sequence[Dict[str, Any]], pairs: Sequence[Tuple[str, str]], lrs: Sequence[float],
               objectives: Sequence[str], seeds: int, steps_of: Dict[str, int], path: str) -> str:
    """Save the picture at ``path`` and return it: one column per (set-up, policy); top, the final
    MSE to π* (headline reading) against the learning rate, one line per objective with std
    error bars and the untrained level dashed; bottom, the mean learning curves, colour the
    objective, line style the learning rate."""
    # The object API on an Agg canvas, as ift.lab.frozen_lake.plot: no pyplot, no global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    metric = READINGS[0][0]
    fig = Figure(figsize=(5.2 * len(pairs), 8.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(pairs), squeeze=False)
    ordered = sorted(lrs)
    styles = {lr: LR_STYLES[max(0, len(LR_STYLES) - len(ordered) + i) % len(LR_STYLES)] for i, lr in enumerate(ordered)}
    spread = 1.06  # objectives side by side around each learning rate, so the error bars do not overlap
    for column, (setup, policy) in enumerate(pairs):
        top, bottom = axes[0][column], axes[1][column]
        for k, objective in enumerate(objectives):
            shift = spread ** (k - (len(objectives) - 1) / 2)
            xs, means, stds = [], [], []
            for lr in ordered:
                values = [r["metrics"][metric] for r in select(runs, setup, policy, lr, objective)]
                if values:
                    mean, std = mean_std(values)
                    xs.append(lr * shift)
                    means.append(mean)
                    stds.append(0.0 if math.isnan(std) else std)
            top.errorbar(xs, means, yerr=stds, marker="o", ms=4, capsize=3, color=COLORS.get(objective),
                         label=objective)
            for lr in ordered:
                mine = select(runs, setup, policy, lr, objective)
                if mine:
                    curve = mean_curve(mine)
                    bottom.plot([s for s, _ in curve], [v for _, v in curve], linestyle=styles[lr], lw=1.4,
                                color=COLORS.get(objective))
        # Every lr and objective of a seed starts from the same weights: one untrained level.
        start_runs = untrained([r for lr in ordered for r in select(runs, setup, policy, lr)])
        if start_runs:
            start = float(np.mean([r["metrics"][metric] for r in start_runs]))
            # Only on top: below, every curve starts at this level, and "--" is a learning rate's style.
            top.axhline(start, color="black", linestyle="--", lw=1, alpha=0.6)
            top.text(0.02, start, " untrained", transform=top.get_yaxis_transform(), va="bottom", fontsize=8)
        top.set_xscale("log")
        # Ticks at the grid's learning rates only (log-axis defaults are unreadable on a short span).
        top.set_xticks(ordered, [f"{lr:g}" for lr in ordered])
        top.minorticks_off()
        top.set_xlim(ordered[0] / 2.5, ordered[-1] * 2.5)
        top.set_xlabel("learning rate")
        top.set_ylabel("final MSE to π* (uniform π*, whole map)")
        top.set_title(f"{setup} / {policy}: final MSE to π*\nmean ± std over {seeds} seeds, {steps_of[policy]} steps",
                      fontsize=10)
        top.grid(alpha=0.3, which="both")
        top.legend(fontsize=8, loc="best")
        bottom.set_xlabel("optimizer step")
        bottom.set_ylabel("MSE to π* (uniform π*, whole map)")
        bottom.set_title(f"{setup} / {policy}: mean learning curves ({seeds} seeds)\ncolour: objective, "
                         f"line style: learning rate", fontsize=10)
        bottom.grid(alpha=0.3)
        handles = [Line2D([], [], color="black", linestyle=styles[lr], label=f"lr {lr:g}") for lr in ordered]
        handles += [Line2D([], [], color=COLORS.get(o), label=o) for o in objectives]
        bottom.legend(handles=handles, fontsize=7, ncol=2, loc="best")
    fig.suptitle("Frozen Lake: the paper's objectives along the learning-rate axis\n"
                 "(MLP: RMSprop, transformer: AdamW; only the lr changes)", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path)
    return path


def mean_curve(runs: Sequence[Dict[str, Any]]) -> List[Tuple[int, float]]:
    """The seeds' learning curves averaged step by step (every run of a cell has the same steps)."""
    steps = [step for step, _ in runs[0]["curve"]]
    values = np.mean([[value for _, value in run["curve"]] for run in runs], axis=0)
    return list(zip(steps, values.tolist()))


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------
def parse_pairs(text: str) -> List[Tuple[str, str]]:
    """``setup:policy,...`` as a list of pairs (SystemExit on an unknown name)."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        setup, _, policy = item.partition(":")
        if setup not in SETUPS or policy not in POLICIES:
            raise SystemExit(f"--pairs {item!r}: give setup:policy with setup in {', '.join(SETUPS)} and policy in "
                             f"{', '.join(POLICIES)}")
        pairs.append((setup, policy))
    return pairs


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse the options, train the grid (minus the runs the log has), print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default=DEFAULT_LRS, help="comma-separated learning rates")
    parser.add_argument("--objectives", default=DEFAULT_OBJECTIVES, help="comma-separated objectives")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per cell (0..N-1)")
    parser.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma-separated setup:policy pairs")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the policy's, 300)")
    parser.add_argument("--eval_every", type=int, default=EVAL_EVERY, help="steps between two learning-curve points")
    parser.add_argument("--workers", type=int, default=2, help="processes, one CPU thread each")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder of runs.jsonl and sweep.json")
    parser.add_argument("--plot", default=None, help=f"picture path (default: {DEFAULT_PLOT} with the default "
                                                     f"--out, else OUT/frozen_lake_lr_sweep.png)")
    parser.add_argument("--fresh", action="store_true", help="train every run again (drop OUT/runs.jsonl)")
    args = parser.parse_args(argv)
    lrs = [float(x) for x in args.lrs.split(",") if x.strip()]
    objectives = [x.strip() for x in args.objectives.split(",") if x.strip()]
    unknown = [x for x in objectives if x not in OBJECTIVES]
    if unknown or not objectives or not lrs or args.seeds < 1 or (args.steps is not None and args.steps < 1):
        parser.error(f"need lrs, seeds >= 1, steps >= 1 and objectives from {', '.join(OBJECTIVES)} (unknown: {unknown})")
    pairs = parse_pairs(args.pairs)
    steps_of = {policy: DEFAULT_STEPS[policy] if args.steps is None else args.steps for _, policy in pairs}
    plot_path = args.plot or (DEFAULT_PLOT if os.path.normpath(args.out) == DEFAULT_OUT
                              else os.path.join(args.out, "frozen_lake_lr_sweep.png"))
    command = "python benchmarks/frozen_lake_lr_sweep.py" + "".join(" " + shlex.quote(a) for a in
                                                                   (sys.argv[1:] if argv is None else argv))

    jobs = build_jobs(pairs, objectives, args.seeds, lrs, args.steps, args.eval_every)
    runs, reused, seconds = run_grid(jobs, os.path.join(args.out, "runs.jsonl"), args.workers, args.fresh)
    found = verdicts(runs, pairs, lrs, objectives)
    picture = plot_sweep(runs, pairs, lrs, objectives, args.seeds, steps_of, plot_path)
    sweep = {"command": command, "settings": {"lrs": lrs, "objectives": objectives, "seeds": args.seeds,
                                              "pairs": [list(p) for p in pairs], "steps": steps_of,
                                              "eval_every": args.eval_every, "workers": args.workers},
             "seconds": seconds, "reused_runs": reused, "verdicts": found,
             "runs": sorted(runs, key=lambda r: (r["setup"], r["policy"], r["lr"], r["objective"], r["seed"]))}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sweep.json"), "w") as handle:
        json.dump(sweep, handle, indent=1)

    print()
    print(markdown_tables(runs, pairs, lrs, objectives, args.seeds, steps_of))
    print()
    print(verdict_table(found, pairs, lrs))
    print()
    run_seconds = sum(run["seconds"] for run in runs)
    print(f"{len(runs)} runs ({len(runs) - reused} trained now on {args.workers} workers in {seconds:.0f} s wall, "
          f"{reused} from {os.path.join(args.out, 'runs.jsonl')}); the runs' own times add up to {run_seconds:.0f} s")
    print(f"wrote {os.path.join(args.out, 'sweep.json')} and {picture}")
    print(f"command: {command}")


if __name__ == "__main__":
    main()
