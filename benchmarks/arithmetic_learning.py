"""SFT vs IFT (and SFT -> PPO) on held-out addition, over seeds, at several training budgets.

    python benchmarks/arithmetic_learning.py                    # tiny GPT-2, 5 seeds, 770 and 1100 steps
    python benchmarks/arithmetic_learning.py --seeds 3 --steps 400,800 --out runs/arith.json
    python benchmarks/arithmetic_learning.py --model smollm2-135m-instruct --chat --seeds 3 \
        --steps 100 --batch-size 16 --lr 1e-4 --objectives SFT,IFT,SFT->PPO --warmup-steps 60

Every (objective, seed) is one run of ``ift.lab.arithmetic_learning.learn`` in a
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

from ift.lab.hardware import describe_hardware  # noqa: E402
from ift.lab.arithmetic_learning import ALL_OBJECTIVES, OBJECTIVES, LearningSettings, run  # noqa: E402
from ift.lab.stats import mean_std  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--steps", default="770,1100", help="comma-separated optimizer-step budgets to measure at")
    parser.add_argument("--lr", type=float, default=LearningSettings.lr, help="AdamW learning rate")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--model", default=LearningSettings.model, help="model spec: a preset, folder or .gguf file")
    parser.add_argument("--chat", action="store_true", help="problems in the tokenizer's chat template")
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0: train every weight)")
    parser.add_argument("--batch-size", type=int, default=LearningSettings.batch_size, help="training batch")
    parser.add_argument("--num-train", type=int, default=LearningSettings.num_train, help="training problems")
    parser.add_argument("--num-val", type=int, default=LearningSettings.num_val, help="held-out problems")
    parser.add_argument("--max-new-tokens", type=int, default=LearningSettings.eval_max_new_tokens,
                        help="tokens generated to read an answer (and PPO's response length)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help=f"comma-separated, of {ALL_OBJECTIVES}")
    parser.add_argument("--max-operand", type=int, default=LearningSettings.max_operand,
                        help="operands are drawn from [0, MAX_OPERAND]")
    parser.add_argument("--ppo-lr", type=float, default=LearningSettings.ppo_lr, help="the PPO stage's learning rate")
    parser.add_argument("--warmup-steps", type=int, default=0, help="SFT batches before PPO in SFT->PPO")
    parser.add_argument("--out", default=None, help="write every run's numbers to this JSON file")
    args = parser.parse_args()
    settings = LearningSettings(
        eval_steps=tuple(int(s) for s in args.steps.split(",")), lr=args.lr, model=args.model,
        use_chat_template=args.chat, batch_size=args.batch_size, num_train=args.num_train, num_val=args.num_val,
        eval_max_new_tokens=args.max_new_tokens, warmup_steps=args.warmup_steps, eval_batch_size=min(args.num_val, 64),
        max_operand=args.max_operand, ppo_lr=args.ppo_lr,
        lora={"r": args.lora_r, "alpha": 2 * args.lora_r} if args.lora_r else None,
    )
    objectives = args.objectives.split(",")
    start = time.perf_counter()
    done = []

    def save(result) -> None:
        # Written after every run: a failure later keeps what was measured.
        done.append(result)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"settings": vars(settings) | {"eval_steps": list(settings.eval_steps)},
                                                  "runs": done}, indent=1, default=str))

    runs = run(settings, list(range(args.seeds)), objectives, args.workers, on_result=save)
    elapsed = time.perf_counter() - start

    columns = ["untrained"] + [f"{step} steps" for step in settings.eval_steps]
    print(f"\n{settings.model}: held-out accuracy, mean ± std over seeds 0-{args.seeds - 1}; {describe_hardware()}, "
          f"{args.workers} workers, {elapsed:.0f} s")
    print(f"{'objective':<10}" + "".join(f"{c:>18}" for c in columns))
    for name in objectives:
        mine = [r for r in runs if r["objective"] == name]
        cells = [mean_std([r["before"] for r in mine])] + [mean_std([r["after"][s] for r in mine]) for s in settings.eval_steps]
        print(f"{name:<10}" + "".join(f"{m:>11.3f} ± {s:.3f}" for m, s in cells))
    print("\nper seed:")
    for r in runs:
        print(f"  {r['objective']:<8} seed {r['seed']}: untrained {r['before']:.3f}, "
              + ", ".join(f"{s}: {a:.3f}" for s, a in r["after"].items()) + f" ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
