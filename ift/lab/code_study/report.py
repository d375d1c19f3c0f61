"""The tables and curves of the SFT-vs-RL code study, from its results file.

The results file is what ``benchmarks/code_sft_rl_study.py`` writes: the settings, the
hardware line and ``runs`` (one result per job, keyed ``<finding>/<seed>[/<arm>]``).
Every table gives mean ± sample std over the seeds that finished; every comparison is a
paired difference over seeds (same seed: same initialisation, data order and problems).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ift.lab.stats import mean_std

Runs = Dict[str, Dict[str, Any]]


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "—"
    mean, std = mean_std(list(values))
    return f"{mean:.3f} ± {std:.3f}"


def paired(first: Sequence[float], second: Sequence[float]) -> str:
    """``mean ± std of first - second (seeds where first is higher / seeds)``."""
    diffs = [a - b for a, b in zip(first, second)]
    if not diffs:
        return "—"
    mean, std = mean_std(diffs)
    return f"{mean:+.3f} ± {std:.3f} ({sum(d > 0 for d in diffs)}/{len(diffs)} higher)"


def _of(runs: Runs, finding: str) -> List[Dict[str, Any]]:
    return [run for key, run in sorted(runs.items()) if key.split("/")[0] == finding]


def mix_table(runs: Runs) -> Tuple[List[str], Dict[str, List[Dict[str, Any]]]]:
    """Finding 1: rows per arm, in the order the arms first appear; ``arm -> runs by seed``."""
    by_arm: Dict[str, List[Dict[str, Any]]] = {}
    for run in sorted(_of(runs, "mix"), key=lambda r: r["seed"]):
        by_arm.setdefault(run["arm"], []).append(run)
    order = sorted(by_arm, key=lambda arm: (arm == "synthetic", int(arm.split("+")[1]) if "+" in arm else 0))
    lines = [f"{'arm':<16}{'train problems':>15}{'held-out pass@1':>18}{'target pass@1':>18}{'seeds':>7}{'s / run':>9}"]
    for arm in order:
        cells = by_arm[arm]
        lines.append(f"{arm:<16}{cells[0]['train_problems']:>15}{_cell([c['held_out'] for c in cells]):>18}"
                     f"{_cell([c['target'] for c in cells]):>18}{len(cells):>7}"
                     f"{sum(c['seconds'] for c in cells) / len(cells):>9.0f}")
    if "atomic" in by_arm:
        lines.append("paired differences of the held-out pass rate against atomic only:")
        base = {c["seed"]: c["held_out"] for c in by_arm["atomic"]}
        for arm in order:
            if arm != "atomic":
                seeds = [c["seed"] for c in by_arm[arm] if c["seed"] in base]
                lines.append(f"  {arm} - atomic: " + paired([c["held_out"] for c in by_arm[arm] if c["seed"] in base],
                                                            [base[s] for s in seeds]))
    return lines, by_arm


def _value(run: Dict[str, Any], arm: str, measure: str) -> float:
    return run["warmup"][measure] if arm == "warm-up" else run["arms"][arm][measure]


def after_sft_table(runs: Runs) -> List[str]:
    """Finding 2: the warm-up and its three continuations: greedy pass@1, and sampled pass@k
    (at temperature 1, the unbiased estimator) where the settings sample."""
    results = sorted(_of(runs, "after_sft"), key=lambda r: r["seed"])
    if not results:
        return []
    arms = ["warm-up", *results[0]["arms"]]
    ks = sorted({k for r in results for split in r["warmup"]["pass_at_k"].values() for k in split})
    measures = [m for m in ("held_out", "target", "train") if m in results[0]["warmup"]]
    header = f"{'arm':<10}" + "".join(f"{m.replace('_', '-'):>16}" for m in measures)
    header += "".join(f"{'held-out ' + k + ' T=1':>20}{'target ' + k + ' T=1':>20}" for k in ks)
    header += f"{'opt. steps':>11}{'samples':>9}{'tokens sampled':>16}{'s':>6}"
    lines = [header]
    for arm in arms:
        cells = [r["warmup"] if arm == "warm-up" else r["arms"][arm] for r in results]
        row = f"{arm:<10}" + "".join(f"{_cell([c[m] for c in cells]):>16}" for m in measures)
        for k in ks:
            for split in ("held_out", "target"):
                row += f"{_cell([c['pass_at_k'][split][k] for c in cells if c['pass_at_k']]):>20}"
        row += (f"{cells[0]['optimizer_steps']:>11}{round(sum(c.get('samples_drawn', 0) for c in cells) / len(cells)):>9}"
                f"{round(sum(c.get('tokens_sampled', 0) for c in cells) / len(cells)):>16}"
                f"{sum(c['seconds'] for c in cells) / len(cells):>6.0f}")
        lines.append(row)
    lines.append("paired differences (held-out; target):")
    for first, second in (("sft+grpo", "sft+sft"), ("sft+ppo", "sft+sft"), ("sft+grpo", "warm-up"),
                          ("sft+ppo", "warm-up"), ("sft+sft", "warm-up")):
        if first in arms and second in arms:
            parts = [paired([_value(r, first, m) for r in results], [_value(r, second, m) for r in results])
                     for m in ("held_out", "target")]
            lines.append(f"  {first} - {second}: {parts[0]}; {parts[1]}")
    return lines


def scratch_table(runs: Runs) -> List[str]:
    """Finding 3: RL and SFT from the base at equal samples: final pass rates and the gap."""
    results = sorted(_of(runs, "scratch"), key=lambda r: r["seed"])
    if not results:
        return []
    lines = [f"{'arm':<8}{'train':>16}{'held-out':>16}{'gap (train - held-out)':>26}{'max gap':>16}"
             f"{'samples':>9}{'opt. steps':>11}{'tokens sampled':>16}{'s':>6}"]
    bases = [r["base"] for r in results]
    lines.append(f"{'base':<8}{_cell([b['train'] for b in bases]):>16}{_cell([b['held_out'] for b in bases]):>16}"
                 f"{_cell([b['train'] - b['held_out'] for b in bases]):>26}")
    for arm in results[0]["arms"]:
        cells = [r["arms"][arm] for r in results]
        max_gaps = [max(p["train"] - p["held_out"] for p in c["curve"]) for c in cells]
        lines.append(f"{arm:<8}{_cell([c['train'] for c in cells]):>16}{_cell([c['held_out'] for c in cells]):>16}"
                     f"{_cell([c['gap'] for c in cells]):>26}{_cell(max_gaps):>16}{cells[0]['training_samples']:>9}"
                     f"{cells[0]['optimizer_steps']:>11}{round(sum(c['tokens_sampled'] for c in cells) / len(cells)):>16}"
                     f"{sum(c['seconds'] for c in cells) / len(cells):>6.0f}")
    if {"sft", "grpo"} <= set(results[0]["arms"]):
        lines.append("paired differences:")
        for measure in ("gap", "held_out", "train"):
            lines.append(f"  {measure}, sft - grpo: " + paired([r["arms"]["sft"][measure] for r in results],
                                                               [r["arms"]["grpo"][measure] for r in results]))
    return lines


def report(saved: Dict[str, Any]) -> str:
    """Every table of a results file, with its settings and hardware line."""
    runs = saved["runs"]
    settings = saved["settings"]
    seeds = sorted({run["seed"] for run in runs.values()})
    parts = [f"code study, model {settings['model']}, seeds {seeds}; {saved.get('hardware', '?')}, "
             f"{saved.get('workers', '?')} workers"]
    mix_lines, _ = mix_table(runs)
    if len(mix_lines) > 1:
        parts += ["", f"Finding 1: SFT on each training mix for {settings['sft_steps']} steps (greedy pass@1)", *mix_lines]
    after = after_sft_table(runs)
    if after:
        parts += ["", f"Finding 2: warm-up ({settings['warmup_steps']} SFT steps on atomic + {settings['warmup_synthetic']} "
                      f"synthetic), then {settings['second_stage_steps']} steps of each second stage on the same prompts",
                  *after]
    scratch = scratch_table(runs)
    if scratch:
        parts += ["", f"Finding 3: from the base ({settings['rl_base']}), GRPO for {settings['scratch_rl_steps']} "
                      f"rollouts vs SFT at equal samples, on {settings['scratch_synthetic']} synthetic prompts", *scratch]
    return "\n".join(parts)


def mean_curve(cells: Sequence[Dict[str, Any]], measure: str) -> Tuple[List[float], List[float], List[float]]:
    """x (training samples), mean and std of ``measure`` over seeds, at the points every seed has."""
    points = min(len(c["curve"]) for c in cells)
    xs = [cells[0]["curve"][i]["samples"] for i in range(points)]
    stats = [mean_std([c["curve"][i][measure] for c in cells]) for i in range(points)]
    return xs, [m for m, _ in stats], [s for _, s in stats]


def plot_curves(saved: Dict[str, Any], path: str) -> Optional[str]:
    """Finding 3's train and held-out pass rates against training samples, finding 2's training
    reward per rollout, finding 1's held-out pass rate per training mix; None when none ran."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = saved["runs"]
    scratch = sorted(_of(runs, "scratch"), key=lambda r: r["seed"])
    _, by_arm = mix_table(runs)
    if not scratch and not by_arm and not _of(runs, "after_sft"):
        return None
    after = sorted(_of(runs, "after_sft"), key=lambda r: r["seed"])
    figure = Figure(figsize=(16, 4))
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    for arm, color in (("sft+grpo", "#c62828"), ("sft+ppo", "#2e7d32")):
        curves = [r["arms"][arm]["rollout_scores"] for r in after if "rollout_scores" in r["arms"].get(arm, {})]
        if curves:
            length = min(map(len, curves))
            stats = [mean_std([curve[i] for curve in curves]) for i in range(length)]
            xs = list(range(1, length + 1))
            middle.plot(xs, [m for m, _ in stats], color=color, label=arm)
            middle.fill_between(xs, [m - d for m, d in stats], [m + d for m, d in stats], color=color, alpha=0.15)
    if after:
        middle.set_xlabel("rollout (one optimizer step each)")
        middle.set_ylabel("mean training reward (share of tests passed)")
        middle.set_title(f"Finding 2: RL after the warm-up, {len(after)} seeds (mean ± std)")
        middle.legend(fontsize=8)
    if scratch:
        for arm, color in zip(scratch[0]["arms"], ("#c62828", "#1f4e79")):
            cells = [r["arms"][arm] for r in scratch]
            for measure, style in (("train", "-"), ("held_out", "--")):
                xs, mean, std = mean_curve(cells, measure)
                left.errorbar(xs, mean, yerr=std, color=color, linestyle=style, marker="o", capsize=3,
                              label=f"{arm}: {measure.replace('_', '-')}")
        left.set_xlabel("training samples")
        left.set_ylabel("greedy pass@1")
        left.set_title(f"Finding 3: from the base ({saved['settings']['rl_base']}), {len(scratch)} seeds")
        left.legend(fontsize=8)
    if by_arm:
        arms = list(mix_table(runs)[0][1:1 + len(by_arm)])
        names = [line.split()[0] for line in arms]
        for offset, (measure, color) in enumerate((("held_out", "#1f4e79"), ("target", "#f5a623"))):
            stats = [mean_std([c[measure] for c in by_arm[name]]) for name in names]
            right.bar([i + 0.4 * offset for i in range(len(names))], [m for m, _ in stats], width=0.4,
                      yerr=[s for _, s in stats], color=color, capsize=3, label=measure.replace("_", "-"))
        right.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=20, fontsize=8)
        right.set_ylabel("greedy pass@1")
        right.set_title("Finding 1: SFT on each training mix")
        right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


__all__ = ["after_sft_table", "mean_curve", "mix_table", "paired", "plot_curves", "report", "scratch_table"]
