"""CodePMP at small scale: reward models fine-tuned on arithmetic pairs, with and without
pre-training on code preference pairs made in the sandbox (ift.lab.codepmp).

    python benchmarks/codepmp.py                      # 3 seeds, sizes 32/128/512, the table and the curve
    python benchmarks/codepmp.py --seeds 5 --out runs/codepmp.json --plot runs/codepmp.png
    python benchmarks/codepmp.py --quick              # a minute: tiny sizes, checks the pipeline

Prints held-out pairwise accuracy and best-of-N accuracy, mean ± sample std over seeds, for
each start (pre-trained on code pairs / the base model without it) and fine-tuning set size, beside the
best-of-N baselines (one sample at random, the oracle), and every seed's numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ift.lab.hardware import describe_hardware  # noqa: E402
from ift.lab.stats import mean_std  # noqa: E402
from ift.lab.workers import quiet_worker  # noqa: E402
from ift.lab.codepmp import CodePMPSettings, run  # noqa: E402

QUICK = dict(code_policy_steps=250, pair_problems=24, samples_per_source=2, pretrain_steps=20,
             finetune_sizes=(8, 32), finetune_steps=15, val_pairs=24, arithmetic_policy_steps=40, best_of=4)


def table(result, seeds) -> str:
    """The markdown table: one line per (start, size), mean ± std over seeds."""
    rows = result["rows"]
    keys = sorted({(row["finetune_pairs"], row["start"]) for row in rows})
    lines = ["| fine-tuning pairs | start | pairwise accuracy | best-of-N accuracy |", "|---:|---|---|---|"]
    for size, start in keys:
        mine = [row for row in rows if row["finetune_pairs"] == size and row["start"] == start]
        (pm, ps), (bm, bs) = mean_std([r["pairwise_accuracy"] for r in mine]), mean_std([r["best_of_n"] for r in mine])
        lines.append(f"| {size} | {start} | {pm:.3f} ± {ps:.3f} | {bm:.3f} ± {bs:.3f} |")
    base = result["baselines"]
    lines.append(f"\nbest-of-N baselines: one sample at random {base['random_pick']:.3f}, oracle {base['oracle']:.3f}")
    return "\n".join(lines)


def plot(result, path: str) -> None:
    """Pairwise and best-of-N accuracy against fine-tuning pairs, one line per start, error bars = std."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(figure)
    for axis, metric, title in zip(figure.subplots(1, 2), ("pairwise_accuracy", "best_of_n"),
                                   ("held-out pairwise accuracy", "best-of-N accuracy")):
        for start, style in (("code-pretrained", "o-"), ("base", "s--")):
            sizes = sorted({r["finetune_pairs"] for r in result["rows"] if r["start"] == start and r["finetune_pairs"]})
            stats = [mean_std([r[metric] for r in result["rows"] if r["start"] == start and r["finetune_pairs"] == s])
                     for s in sizes]
            axis.errorbar(sizes, [m for m, _ in stats], yerr=[s for _, s in stats], fmt=style, capsize=3, label=start)
        if metric == "best_of_n":
            axis.axhline(result["baselines"]["random_pick"], color="grey", linestyle=":", label="one sample at random")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("arithmetic fine-tuning pairs")
        axis.set_title(title)
        axis.legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of the reward models")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each), one seed each")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline, measures nothing")
    parser.add_argument("--out", default=None, help="write every row to this JSON file")
    parser.add_argument("--plot", default=None, help="draw the curves to this PNG file")
    args = parser.parse_args()
    quiet_worker()  # the shared stage runs here: one thread, no per-fit notices
    settings = CodePMPSettings(**(QUICK if args.quick else {}))
    result = run(settings, list(range(args.seeds)), args.workers)
    summary = result["code_pairs"]
    print(f"\nCodePMP at small scale ({settings.model}); seeds 0-{args.seeds - 1}; {describe_hardware()}, "
          f"{args.workers} workers, {result['seconds']:.0f} s ({result['shared_seconds']:.0f} s for the code pairs "
          f"and the best-of-{settings.best_of} candidates)")
    print(f"code pairs: {summary['pairs']} from {summary['problems']} problems, {summary['samples']} programs; "
          f"dropped {dict(summary['dropped'])}")
    print(table(result, args.seeds))
    print("\nper seed:")
    for row in result["rows"]:
        print(f"  seed {row['seed']} {row['start']:<15} {row['finetune_pairs']:>4} pairs: pairwise "
              f"{row['pairwise_accuracy']:.3f}, best-of-N {row['best_of_n']:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result | {"settings": vars(settings)}, indent=1, default=str))
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
