"""The ReFT claim at equal data: SFT alone vs SFT warm-up + PPO vs SFT warm-up + more SFT.

    python benchmarks/reft_arms.py                          # 5 seeds, the defaults of ReftSettings
    python benchmarks/reft_arms.py --seeds 3 --warmup-steps 400 --ppo-iterations 24 --out runs/reft.json
    python benchmarks/reft_arms.py --task code --seeds 3    # the code task (CODE_SETTINGS)

Arithmetic: the built-in task with worked solutions (``17+25=42 answer: 42``); the reward
and held-out accuracy use ReFT's answer rule (a number after the trigger ``answer:``).
Code: the built-in code task, the sandboxed test-pass reward, held-out pass rate (every
test passes). See ``ift.lab.reft_arms`` for the arms. Prints held-out accuracy mean ± sample std over
seeds, each arm's compute, the paired differences between arms, and every seed's numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ift.lab.hardware import describe_hardware  # noqa: E402
from ift.lab.reft_arms import ARMS, CODE_SETTINGS, ReftSettings, run_seeds  # noqa: E402
from ift.lab.stats import mean_std  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("arithmetic", "code"), default="arithmetic",
                        help="which built-in task (its settings: ReftSettings() or CODE_SETTINGS)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--warmup-steps", type=int, default=None, help="SFT warm-up optimizer steps")
    parser.add_argument("--ppo-iterations", type=int, default=None, help="PPO iterations after it")
    parser.add_argument("--second-stage-lr", type=float, default=None,
                        help="learning rate of the PPO stage and of the extra SFT stage")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--out", default=None, help="write every seed's numbers to this JSON file")
    args = parser.parse_args()
    defaults = CODE_SETTINGS if args.task == "code" else ReftSettings()
    overrides = {"warmup_steps": args.warmup_steps, "ppo_iterations": args.ppo_iterations,
                 "second_stage_lr": args.second_stage_lr}
    settings = dataclasses.replace(defaults, **{k: v for k, v in overrides.items() if v is not None})
    start = time.perf_counter()
    runs = run_seeds(settings, list(range(args.seeds)), args.workers)
    elapsed = time.perf_counter() - start

    measure = "pass rate (all tests pass)" if settings.task == "code" else "accuracy (ReFT's answer rule)"
    print(f"\nReFT arms on {settings.task}, held-out {measure}, seeds 0-{args.seeds - 1}; "
          f"{describe_hardware()}, {args.workers} workers, {elapsed:.0f} s")
    print(f"warm-up: {settings.warmup_steps} SFT steps; then {settings.ppo_iterations} PPO iterations "
          f"({settings.ppo_iterations * settings.updates_per_iteration} optimizer steps)")
    header = f"{'arm':<10}{'accuracy':>18}{'optimizer steps':>17}{'sequences trained':>19}{'tokens sampled':>16}{'s after warm-up':>17}"
    print(header)
    mean, std = mean_std([r["warmup_accuracy"] for r in runs])
    print(f"{'warm-up':<10}{mean:>11.3f} ± {std:.3f}{settings.warmup_steps:>17}"
          f"{settings.warmup_steps * settings.batch_size:>19}{0:>16}{'':>17}")
    for arm in ARMS:
        cells = [r["arms"][arm] for r in runs]  # every arm ran: the benchmark asks for all of them
        mean, std = mean_std([c["accuracy"] for c in cells])
        print(f"{arm:<10}{mean:>11.3f} ± {std:.3f}{cells[0]['optimizer_steps']:>17}{cells[0]['sequences_trained']:>19}"
              f"{round(statistics.fmean(c['tokens_sampled'] for c in cells)):>16}"
              f"{statistics.fmean(c['seconds'] for c in cells):>17.0f}")
    print("\npaired differences over seeds (mean ± std; seeds where the first is higher):")
    for first, second in (("sft+ppo", "warm-up"), ("sft+ppo", "sft+sft"), ("sft+ppo", "sft"), ("sft+sft", "warm-up")):
        diffs = [_accuracy(r, first) - _accuracy(r, second) for r in runs]
        mean, std = mean_std(diffs)
        print(f"  {first} - {second}: {mean:+.3f} ± {std:.3f} ({sum(d > 0 for d in diffs)}/{len(diffs)})")
    print("\nper seed:")
    for r in runs:
        print(f"  seed {r['seed']}: warm-up {r['warmup_accuracy']:.3f}, "
              + ", ".join(f"{arm} {r['arms'][arm]['accuracy']:.3f}" for arm in ARMS)
              + f", PPO mean training score {r['arms']['sft+ppo']['mean_train_score']:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"settings": dataclasses.asdict(settings), "runs": runs}, indent=1))


def _accuracy(run, arm):
    return run["warmup_accuracy"] if arm == "warm-up" else run["arms"][arm]["accuracy"]


if __name__ == "__main__":
    main()
