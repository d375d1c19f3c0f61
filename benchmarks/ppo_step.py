"""Where does a PPO iteration spend its time, what does GRPO save, and what does the KV cache buy?

    python benchmarks/ppo_step.py                  # tiny-gpt2 and small-gpt2, CPU
    python benchmarks/ppo_step.py --quick          # tiny-gpt2 only, fewer iterations
    python benchmarks/ppo_step.py --device cuda --models tiny-gpt2,gpt2-100m

**PPO iteration.** A real ``Trainer.fit`` of ``FineTuneModule(objective=PPO(...))`` on the
arithmetic task (``--batch`` prompts x ``--samples`` samples each, ``--max-new-tokens``,
2 PPO epochs over mini-batches of ``--mini-batch``). PPO times its own phases and logs
them (``time/generation``, ``time/scoring``, ``time/logprobs`` — the no-grad passes of the
policy, the reference and the value head that give old log-probs, reference log-probs
and values — and ``time/update``, every optimizer step of the iteration); the table shows
the median over ``--iterations`` iterations after ``--warmup`` ones, and samples (sampled
responses) per second of a whole iteration.

**Shared prompts.** The same iterations with ``PPO(share_prompts=False)``: every sample's
prompt runs through the model again, in the no-grad passes and in every update. The
table gives both times of those passes (``time/logprobs`` + ``time/update``) and their
ratio; the samples are the same (the sampling streams do not depend on the setting).

**GRPO vs PPO.** The same prompts, samples per prompt (GRPO's group) and response limit,
and the same update schedule (2 epochs over mini-batches of ``--mini-batch``): GRPO runs no
value passes and has no value head to train. A second GRPO row takes the paper's one
update per rollout (no "old" log-prob pass at all). The table gives each iteration's time,
the ratio to PPO's, and the share of the iteration spent generating.

**Generation with vs without the KV cache.** The same model and the same left-padded
prompts (``--gen-batch`` random prompts of 8 to ``--prompt-len`` tokens), greedy so both
runs do exactly the same work and return the same tokens (checked), up to
``--gen-tokens`` new tokens. Median wall time over ``--repeats`` runs.

Times are wall-clock (CUDA synchronised). On a shared CPU machine pass ``--threads 1``:
tiny models gain nothing from a second thread, and lose a lot when cores are contended.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytorch_lightning as pl  # noqa: E402

from ift.tasks.arithmetic import ArithmeticDataModule  # noqa: E402
from ift.modules import FineTuneModule  # noqa: E402
from ift.core.generation import generate_responses  # noqa: E402
from ift.objectives import GRPO, PPO  # noqa: E402
from ift.rewards import AnswerMatchReward  # noqa: E402

PHASES = ("time/generation", "time/scoring", "time/logprobs", "time/update")


class PhaseTimes(pl.Callback):
    """Collect PPO's per-iteration phase times, and the wall time of each training batch."""

    def __init__(self) -> None:
        self.rows: List[Dict[str, float]] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        row = {key: float(trainer.callback_metrics[key + "_step"]) for key in PHASES}
        row["iteration"] = time.perf_counter() - self._start
        row["samples"] = float(batch["prompt_input_ids"].shape[0] * pl_module.objective.samples_per_prompt)
        self.rows.append(row)


def ppo_iteration(model: str, args: argparse.Namespace, share_prompts: bool = True,
                  algorithm: str = "ppo") -> Dict[str, float]:
    """Median phase times of ``args.iterations`` iterations of ``algorithm``: ``ppo``, ``grpo``
    (the same schedule as PPO's) or ``grpo-1`` (one update per rollout)."""
    pl.seed_everything(0, verbose=False)
    if algorithm == "ppo":
        objective = PPO(reward=AnswerMatchReward(), samples_per_prompt=args.samples, max_new_tokens=args.max_new_tokens,
                        ppo_epochs=2, mini_batch_size=args.mini_batch, use_cache=True, share_prompts=share_prompts)
    else:
        schedule = dict(epochs=2, mini_batch_size=args.mini_batch) if algorithm == "grpo" else {}
        objective = GRPO(reward=AnswerMatchReward(), num_generations=args.samples, max_new_tokens=args.max_new_tokens,
                         share_prompts=share_prompts, **schedule)
    module = FineTuneModule(model=model, objective=objective,
                            optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4))
    data = ArithmeticDataModule(num_train=args.batch * (args.iterations + args.warmup), num_val=8, num_test=8,
                                max_operand=49, operators="+-", batch_size=args.batch)
    times = PhaseTimes()
    trainer = pl.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         callbacks=[times])
    trainer.fit(module, data)
    rows = times.rows[args.warmup:]
    result = {key: statistics.median(row[key] for row in rows) for key in (*PHASES, "iteration")}
    result["samples/s"] = statistics.median(row["samples"] / row["iteration"] for row in rows)
    result["rollout"] = rows[0]["samples"]
    return result


def generation_cache(model: str, args: argparse.Namespace) -> Dict[str, float]:
    torch.manual_seed(0)
    module = FineTuneModule(model=model).to(args.device)
    module.eval()
    tokenizer = module.tokenizer
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, args.prompt_len + 1, (args.gen_batch,), generator=generator)
    low = len(tokenizer.all_special_ids)  # ordinary tokens only (no pad/eos in the prompts)
    prompt_ids = torch.full((args.gen_batch, args.prompt_len), tokenizer.pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    for row, length in enumerate(lengths.tolist()):
        prompt_ids[row, -length:] = torch.randint(low, len(tokenizer), (length,), generator=generator)
        prompt_mask[row, -length:] = 1
    prompt_ids, prompt_mask = prompt_ids.to(args.device), prompt_mask.to(args.device)

    def run(use_cache: bool):
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = generate_responses(module.policy, prompt_ids, prompt_mask, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, max_new_tokens=args.gen_tokens,
                                 do_sample=False, use_cache=use_cache)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    run(True)
    run(False)  # warm-up
    with_cache, without_cache = [], []
    for _ in range(args.repeats):  # alternate, so a busy spell slows both alike
        seconds, cached = run(True)
        with_cache.append(seconds)
        seconds, uncached = run(False)
        without_cache.append(seconds)
    same = torch.equal(cached[0], uncached[0])
    tokens = int(cached[1].sum())
    return {
        "with": statistics.median(with_cache),
        "without": statistics.median(without_cache),
        "tokens": tokens,
        "same": same,
    }


def ppo_tables(models, args: argparse.Namespace, device: str) -> None:
    """The PPO iteration table and the shared-prompt on/off table."""
    print(f"# PPO iteration ({device}; {args.batch} prompts x {args.samples} samples, "
          f"<= {args.max_new_tokens} new tokens, 2 PPO epochs, mini-batches of {args.mini_batch}; median of "
          f"{args.iterations})\n")
    print("| model | rollouts | generation s | scoring s | logprobs s | update s | iteration s | samples/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    shared = {}
    for model in models:
        r = shared[model] = ppo_iteration(model, args)
        print(f"| {model} | {r['rollout']:.0f} | {r['time/generation']:.3f} | {r['time/scoring']:.4f} | "
              f"{r['time/logprobs']:.3f} | {r['time/update']:.3f} | {r['iteration']:.3f} | {r['samples/s']:.0f} |",
              flush=True)

    print(f"\n# Shared prompts: log-prob and update passes with share_prompts on vs off (same iterations)\n")
    print("| model | shared s | plain s | shared / plain |")
    print("|---|---:|---:|---:|")
    for model in models:
        plain = ppo_iteration(model, args, share_prompts=False)
        on = shared[model]["time/logprobs"] + shared[model]["time/update"]
        off = plain["time/logprobs"] + plain["time/update"]
        print(f"| {model} | {on:.3f} | {off:.3f} | {on / off:.2f} |", flush=True)

    print(f"\n# GRPO vs PPO on the same prompts (GRPO: beta 0.04, k3 in the loss; same iterations)\n")
    print("| model | algorithm | updates per rollout | logprobs s | update s | iteration s | ÷ PPO | generating |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    updates = 2 * -(-args.batch * args.samples // args.mini_batch)
    for model in models:
        ppo = shared[model]
        for name, row, count in (("PPO", ppo, updates), ("GRPO", ppo_iteration(model, args, algorithm="grpo"), updates),
                                 ("GRPO, 1 update", ppo_iteration(model, args, algorithm="grpo-1"), 1)):
            print(f"| {model} | {name} | {count} | {row['time/logprobs']:.3f} | {row['time/update']:.3f} | "
                  f"{row['iteration']:.3f} | {row['iteration'] / ppo['iteration']:.2f} | "
                  f"{row['time/generation'] / row['iteration']:.0%} |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny-gpt2 only, fewer iterations and repeats")
    parser.add_argument("--models", default=None, help="comma-separated presets (default tiny-gpt2,small-gpt2)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's choice)")
    parser.add_argument("--batch", type=int, default=32, help="prompts per PPO iteration")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--mini-batch", type=int, default=64, help="rollouts per optimizer step")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="longest PPO response")
    parser.add_argument("--iterations", type=int, default=10, help="timed PPO iterations")
    parser.add_argument("--warmup", type=int, default=2, help="untimed PPO iterations first")
    parser.add_argument("--gen-batch", type=int, default=32, help="prompts of the KV-cache comparison")
    parser.add_argument("--prompt-len", type=int, default=64, help="longest prompt of the KV-cache comparison")
    parser.add_argument("--gen-tokens", type=int, default=64, help="new tokens of the KV-cache comparison")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each generation mode")
    parser.add_argument("--generation-only", action="store_true",
                        help="only the KV-cache generation comparison (skip the PPO iterations)")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.warmup, args.repeats = 4, 1, 2
        args.gen_tokens, args.prompt_len = 32, 32
    models = (args.models or ("tiny-gpt2" if args.quick else "tiny-gpt2,small-gpt2")).split(",")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    if not args.generation_only:
        ppo_tables(models, args, device)

    print(f"\n# Generation with vs without the KV cache ({device}; {args.gen_batch} left-padded prompts of "
          f"8-{args.prompt_len} tokens, greedy, <= {args.gen_tokens} new tokens; median of {args.repeats})\n")
    print("| model | tokens generated | with cache s | without cache s | with cache tokens/s | "
          "without cache tokens/s | speed-up | same tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for model in models:
        g = generation_cache(model, args)
        print(f"| {model} | {g['tokens']} | {g['with']:.3f} | {g['without']:.3f} | {g['tokens'] / g['with']:.0f} | "
              f"{g['tokens'] / g['without']:.0f} | {g['without'] / g['with']:.2f}x | {'yes' if g['same'] else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
