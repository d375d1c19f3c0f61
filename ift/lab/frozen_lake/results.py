"""What ``ift frozen-lake`` reports from its runs: ``results.json``'s rows, the table, the picture.

A run (:func:`ift.lab.frozen_lake.command.run_one`) is a dict with its ``objective``,
``seed``, ``metrics`` and ``initial_metrics`` (named as in
:mod:`ift.tasks.frozen_lake.metrics`), final ``action_probs`` and learning ``curve``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import MAP_SEPARATOR
from ift.lab.frozen_lake.plot import plot_policies
from ift.lab.frozen_lake.readings import READINGS, REGION_LABELS
from ift.tasks.frozen_lake.metric_variants import PI_STAR_TIES, REGIONS

#: The metrics of ``results.json``, each ``{"mean", "std"}`` over seeds: the monitor's, then the
#: MSE of every reading (:mod:`ift.lab.frozen_lake.readings`) and the explored states' MSE to
#: the one-hot π*.
RESULT_METRICS = ("mse_to_optimal", "mse_reachable", "success_rate", "episode_length", "explored_states",
                  "explored_mse", "moved_states", "mean_total_variation") + tuple(
    reading.mse_key for reading in READINGS) + ("explored_mse_one_hot",)


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (0 for a single value), as ``{"mean", "std"}``.

    The same estimator as :func:`ift.lab.stats.mean_std`, but with NumPy's arithmetic: that one
    sums exactly (``statistics``), which differs from this in the last bit on some metrics,
    and ``results.json`` keeps the numbers it has always had.
    """
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
            results[name] = {key: mean_std([run["metrics"][key] for run in mine]) for key in RESULT_METRICS}
    first = [run for run in runs if run["objective"] == objectives[0]]
    if first:
        initial = [dict(run["initial_metrics"], moved_states=0.0, mean_total_variation=0.0) for run in first]
        results[UNTRAINED] = {key: mean_std([m[key] for m in initial]) for key in RESULT_METRICS}
    return results


def mean_curve(runs: List[Dict[str, Any]]) -> List[Tuple[float, float]]:
    """The seeds' learning curves averaged on the union of their steps (linear interpolation)."""
    steps = sorted({step for run in runs for step, _ in run["curve"]})
    values = [np.interp(steps, [s for s, _ in run["curve"]], [v for _, v in run["curve"]]) for run in runs]
    return list(zip(steps, np.mean(values, axis=0).tolist()))


def format_table(results: Dict[str, Dict[str, Dict[str, float]]], seeds: int) -> str:
    """The mean ± std table of :func:`aggregate`'s results, one row per objective."""
    columns = [("mse_to_optimal", "MSE to π*", 4), ("mse_reachable", "MSE reachable", 4), ("success_rate", "success", 2),
               ("episode_length", "ep. length", 1), ("explored_states", "explored", 1),
               ("explored_mse", "explored MSE", 4), ("moved_states", "moved", 1)]
    header = f"{'objective':<19}" + "".join(f"{title:>19}" for _, title, _ in columns)
    lines = [header, "-" * len(header)]
    for name, metrics in results.items():
        if name == UNTRAINED:
            lines.append("-" * len(header))
        cells = "".join(f"{metrics[key]['mean']:>{11}.{digits}f} ± {metrics[key]['std']:<{5}.{digits}f}"
                        for key, _, digits in columns)
        lines.append(f"{name:<19}{cells}")
    lines.append(f"(mean ± std over {seeds} seed{'s' if seeds != 1 else ''})")
    return "\n".join(lines)


def format_readings_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """The MSE to π* of :func:`aggregate`'s results under every reading: one column per π*
    (uniform over ties, one-hot) and set of states, * marking the states the paper's words describe."""
    width = 15
    groups = " " * 19 + "".join(f"{'π* ' + ties.replace('_', '-') + ' over':<{width * len(REGIONS)}}"
                                for ties in PI_STAR_TIES)
    header = f"{'MSE to π*':<19}" + "".join(
        f"{REGION_LABELS[r.region] + ('*' if r.paper_words else ''):>{width}}" for r in READINGS)
    lines = [groups, header, "-" * len(header)]
    for name, metrics in results.items():
        if name == UNTRAINED:
            lines.append("-" * len(header))
        lines.append(f"{name:<19}" + "".join(
            f"{metrics[r.mse_key]['mean']:.4f}±{metrics[r.mse_key]['std']:.4f}".rjust(width) for r in READINGS))
    lines.append("(π* uniform: spread over tied optimal moves; one-hot: the demonstrator's one move. *: every state, "
                 "the paper's \"transition matrices\")")
    return "\n".join(lines)


def plot_runs(task: FrozenLakeTask, runs: List[Dict[str, Any]], objectives: Sequence[str], path: str,
              policy: str = "") -> str:
    """Save the picture of the comparison at ``path``: each objective's policy (lowest seed) on
    the map beside π*, shaded by how often its sampled episodes visit each state, and each
    objective's mean learning curve over seeds; returns ``path``."""
    policies, curves = {}, {}
    for name in objectives:
        mine = sorted((run for run in runs if run["objective"] == name), key=lambda run: run["seed"])
        if not mine:
            continue
        first = mine[0]
        policies[f"{name} (seed {first['seed']})"] = {s: np.asarray(p) for s, p in first["action_probs"].items()}
        curves[name] = mean_curve(mine)
    seeds = len({run["seed"] for run in runs})
    return plot_policies(task, policies, curves=curves, path=path, max_columns=5,
                         curves_title=f"MSE to π* (mean over {seeds} seeds)",
                         title=f"Frozen Lake {MAP_SEPARATOR.join(task.rows)}, {policy} policy: "
                               f"each objective's seed-{min((r['seed'] for r in runs), default=0)} policy")
