"""GRPO and PPO on a real model: SmolLM2-135M-Instruct on held-out arithmetic, six arms over seeds.

    python benchmarks/grpo_real_model.py --seeds 3 --out runs/grpo_real_model.json
    python benchmarks/grpo_real_model.py --seeds 3 --warmup-steps 12 --rl-steps 10 --workers 4
    python benchmarks/grpo_real_model.py --table-from runs/grpo_real_model.json   # a saved (partial) run

Arms (``ift.lab.real_model_rl``): the untrained instruct model; SFT (the warm-up); GRPO from
the instruct model; SFT warm-up -> GRPO; SFT warm-up -> PPO; SFT warm-up -> more SFT (every
second stage the same number of optimizer steps). Three-operand +/- problems with operands
in [0, 20], asked in the model's chat template; the answer reward and held-out greedy
accuracy use the liberal answer rule. Prints held-out accuracy mean ± sample std over seeds,
each arm's optimizer steps, tokens sampled and seconds, and the paired differences; ``--out``
is rewritten after every finished seed (``"partial": true`` until the last), so a crash keeps
what finished.
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
from ift.lab.real_model_rl import ARMS, RealModelRLSettings, iter_runs, with_untrained  # noqa: E402
from ift.lab.stats import mean_std  # noqa: E402

#: (arm, baseline) pairs whose per-seed differences the table reports.
PAIRS = (("sft", "untrained"), ("grpo", "untrained"), ("sft+grpo", "sft"), ("sft+ppo", "sft"), ("sft+sft", "sft"),
         ("sft+grpo", "sft+sft"), ("sft+ppo", "sft+sft"), ("sft+grpo", "sft+ppo"), ("sft+grpo", "grpo"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--seed-list", default=None, help="these seeds instead (comma-separated, e.g. 1,4)")
    parser.add_argument("--model", default=None, help="the starting policy (default: smollm2-135m-instruct)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="SFT warm-up optimizer steps")
    parser.add_argument("--rl-steps", type=int, default=None, help="optimizer steps of every second stage")
    parser.add_argument("--rl-lr", type=float, default=None, help="learning rate of GRPO and PPO")
    parser.add_argument("--num-val", type=int, default=None, help="held-out problems")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--out", default=None, help="write the results here (after every finished seed)")
    parser.add_argument("--table-from", nargs="+", default=None,
                        help="print the table of saved --out files (same settings; their seeds pooled)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the seeds (and the untrained measurement) already in --out, run the rest")
    args = parser.parse_args()
    if args.table_from:
        files = [json.loads(Path(path).read_text()) for path in args.table_from]
        if any(saved["settings"] != files[0]["settings"] for saved in files):
            sys.exit("--table-from: the files were run with different settings")
        pooled = {r["seed"]: r for saved in files for r in saved["runs"]}
        runs = with_untrained([pooled[seed] for seed in sorted(pooled)], files[0]["untrained"])
        _print_table(runs, RealModelRLSettings(**files[0]["settings"]), files[0]["hardware"], None, None)
        return
    overrides = {"model": args.model, "warmup_steps": args.warmup_steps, "rl_steps": args.rl_steps,
                 "rl_lr": args.rl_lr, "num_val": args.num_val}
    settings = dataclasses.replace(RealModelRLSettings(), **{k: v for k, v in overrides.items() if v is not None})
    seeds = [int(seed) for seed in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    hardware = describe_hardware()
    print(f"[{time.strftime('%H:%M:%S')}] {hardware}; {args.workers} workers; {settings}", flush=True)
    start = time.perf_counter()
    untrained, runs, before, commands = None, [], 0.0, []
    if args.resume and args.out and Path(args.out).exists():
        saved = json.loads(Path(args.out).read_text())
        if saved["settings"] != json.loads(json.dumps(dataclasses.asdict(settings))):
            sys.exit(f"--resume: {args.out} was run with other settings: {saved['settings']}")
        untrained, before = saved["untrained"], saved["elapsed_seconds"]
        commands = saved.get("commands") or [saved["command"]]
        runs = [r for r in saved["runs"] if r["seed"] in seeds]
        print(f"resuming {args.out}: seeds {[r['seed'] for r in runs]} kept", flush=True)
    commands.append(" ".join(sys.argv))
    todo = [seed for seed in seeds if seed not in {r["seed"] for r in runs}]
    for result in iter_runs(settings, todo, args.workers, untrained=untrained is None):
        if result["kind"] == "untrained":
            untrained = result
            print(f"[{time.strftime('%H:%M:%S')}] untrained {result['untrained']['accuracy']:.3f}", flush=True)
        else:
            runs.append(result)
            print(f"[{time.strftime('%H:%M:%S')}] seed {result['seed']} done in {result['seconds']:.0f} s: "
                  + ", ".join(f"{arm} {cell['accuracy']:.3f}" for arm, cell in result["arms"].items()), flush=True)
        _write(args.out, settings, hardware, args, commands, untrained, runs, before + time.perf_counter() - start,
               partial=len(runs) < len(seeds) or untrained is None)
    elapsed = before + time.perf_counter() - start
    _write(args.out, settings, hardware, args, commands, untrained, runs, elapsed, partial=False)
    runs = with_untrained(sorted(runs, key=lambda r: r["seed"]), untrained)
    _print_table(runs, settings, hardware, args.workers, elapsed)


def _write(out, settings, hardware, args, commands, untrained, runs, elapsed, partial):
    if not out:
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({
        "partial": partial, "commands": commands, "hardware": hardware, "workers": args.workers,
        "elapsed_seconds": elapsed, "settings": dataclasses.asdict(settings), "untrained": untrained,
        "runs": sorted(runs, key=lambda r: r["seed"]),
    }, indent=1))


def _print_table(runs, settings, hardware, workers, elapsed):
    seeds = [r["seed"] for r in runs]
    print(f"\nSmolLM2-135M-Instruct, held-out greedy accuracy on {settings.num_val} problems, seeds {seeds}; "
          f"{hardware}" + ("" if elapsed is None else f", {workers} workers, {elapsed:.0f} s"))
    print(f"warm-up {settings.warmup_steps} SFT steps (batch {settings.sft_batch_size}); second stages "
          f"{settings.rl_steps} optimizer steps ({settings.rl_prompts} prompts x {settings.num_generations} samples "
          f"per RL step)")
    print(f"{'arm':<10}{'accuracy':>17}{'opt. steps':>12}{'tokens sampled':>16}{'train s':>9}")
    for arm in ARMS:
        cells = [r["arms"][arm] for r in runs]
        mean, std = mean_std([c["accuracy"] for c in cells])
        print(f"{arm:<10}{mean:>10.3f} ± {std:.3f}{cells[0]['optimizer_steps']:>12}"
              f"{round(statistics.fmean(c['tokens_sampled'] for c in cells)):>16}"
              f"{statistics.fmean(c['seconds'] for c in cells):>9.0f}")
    print("\npaired differences over seeds (mean ± std; seeds where the first is higher / lower):")
    for first, second in PAIRS:
        diffs = [r["arms"][first]["accuracy"] - r["arms"][second]["accuracy"] for r in runs]
        mean, std = mean_std(diffs)
        print(f"  {first} - {second}: {mean:+.3f} ± {std:.3f} "
              f"({sum(d > 0 for d in diffs)}/{sum(d < 0 for d in diffs)} of {len(diffs)})")
    print("\nper seed:")
    for r in runs:
        print(f"  seed {r['seed']}: " + ", ".join(f"{arm} {r['arms'][arm]['accuracy']:.3f}" for arm in ARMS)
              + "; RL mean training score " + ", ".join(
                  f"{arm} {r['arms'][arm]['mean_train_score']:.3f}" for arm in ("grpo", "sft+grpo", "sft+ppo")))


if __name__ == "__main__":
    main()
