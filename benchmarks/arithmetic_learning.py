"""SFT vs IFT on held-out addition, over seeds, at several training budgets.

    python benchmarks/arithmetic_learning.py                    # 5 seeds, 770 and 1100 steps
    python benchmarks/arithmetic_learning.py --seeds 3 --steps 400,800 --out runs/arith.json

Every (objective, seed) is one run of ``ift.experiments.arithmetic_learning.learn`` in a
worker process with one CPU thread, so the numbers do not depend on ``--workers``. Prints
mean ± sample std over seeds, and every seed's numbers (the spread is the evidence).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ift.core.hardware import describe_hardware  # noqa: E402
from ift.experiments.arithmetic_learning import OBJECTIVES, LearningSettings, run  # noqa: E402
from ift.core.stats import mean_std  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--steps", default="770,1100", help="comma-separated optimizer-step budgets to measure at")
    parser.add_argument("--lr", type=float, default=LearningSettings.lr, help="AdamW learning rate")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--out", default=None, help="write every run's numbers to this JSON file")
    args = parser.parse_args()
    settings = LearningSettings(eval_steps=tuple(int(s) for s in args.steps.split(",")), lr=args.lr)
    start = time.perf_counter()
    runs = run(settings, list(range(args.seeds)), OBJECTIVES, args.workers)
    elapsed = time.perf_counter() - start

    columns = ["untrained"] + [f"{step} steps" for step in settings.eval_steps]
    print(f"\nheld-out accuracy, mean ± std over seeds 0-{args.seeds - 1}; {describe_hardware()}, "
          f"{args.workers} workers, {elapsed:.0f} s")
    print(f"{'objective':<10}" + "".join(f"{c:>18}" for c in columns))
    for name in OBJECTIVES:
        mine = [r for r in runs if r["objective"] == name]
        cells = [mean_std([r["before"] for r in mine])] + [mean_std([r["after"][s] for r in mine]) for s in settings.eval_steps]
        print(f"{name:<10}" + "".join(f"{m:>11.3f} ± {s:.3f}" for m, s in cells))
    print("\nper seed:")
    for r in runs:
        print(f"  {r['objective']:<4} seed {r['seed']}: " + ", ".join(f"{s}: {a:.3f}" for s, a in r["after"].items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"settings": vars(settings) | {"eval_steps": list(settings.eval_steps)},
                                              "runs": runs}, indent=1, default=str))


if __name__ == "__main__":
    main()
