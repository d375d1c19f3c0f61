"""Rollout engines compared: Hugging Face ``generate`` (``HFSampler``) against vLLM
(``VLLMSampler``, in-process and in its own process), on the same prompts and in a short GRPO fit.

    make install-vllm                                   # vLLM's own environment, .venv-vllm
    OMP_NUM_THREADS=1 .venv-vllm/bin/python benchmarks/rollout_engines.py
    OMP_NUM_THREADS=1 .venv-vllm/bin/python benchmarks/rollout_engines.py --models tiny-gpt2 \\
        --engines hf,inprocess --grpo-steps 3 --out runs/rollout_engines_tiny.json

What it measures, for every model of ``--models`` (``tiny-gpt2``, ``smollm2-135m-instruct``):

1. **Sampling throughput.** ``--prompts`` left-padded arithmetic prompts (SmolLM2's in its chat
   template, ~35 tokens; tiny-gpt2's plain, ~6 characters), ``--new-tokens`` new tokens
   (default 64; 32 for tiny-gpt2), temperature 1, a fixed seed. Each engine samples once as a
   warm-up, then ``--repeats`` timed times; generated tokens count up to and with EOS. Also the
   engine's start-up (first ``load_weights``: export + engine start) and one weight sync after
   a parameter changed (every tensor is sent, so the sync cost does not depend on the change).
2. **Generation's share of a GRPO iteration.** ``--grpo-steps`` GRPO steps on the arithmetic
   task (4 prompts x 4 generations) with each engine of ``--grpo-engines``; from the logged
   ``time/*`` metrics, the share of ``time/generation`` in generation + scoring + logprobs +
   update, and the wall seconds per iteration. The first step holds the engine's start-up and is
   left out of the means. ``time/generation`` includes the weight sync (``load_weights`` runs
   inside the timed generation), so the sync is shown as a part of it, not added to the total.

Prints markdown tables (with the command, hardware, torch/vLLM versions and threads) and writes
everything to ``--out``. Threads: set ``OMP_NUM_THREADS`` before starting (the engine in its own
process inherits it); the script runs torch with that many threads. Engines run one after the
other, never at the same time, so they do not compete for cores.

Time on a 2-core CPU with the defaults: about 5.5 minutes (measured: 328 s), most of it the
SmolLM2 sampling and GRPO steps; an engine in its own process takes 13-14 s to come up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ift.core.sampling import HFSampler, Sampler, SamplingSettings  # noqa: E402
from ift.core.vllm_sampler import VLLMSampler  # noqa: E402
from ift.lab.hardware import describe_hardware  # noqa: E402
from ift.modules import FineTuneModule  # noqa: E402
from ift.objectives import GRPO  # noqa: E402
from ift.rewards import AnswerMatchReward  # noqa: E402
from ift.tasks.arithmetic import ArithmeticDataModule  # noqa: E402

# Lightning's advice about sync_dist (one device here) would bury the tables; vLLM's INFO lines too.
warnings.filterwarnings("ignore", message=".*sync_dist.*")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

ENGINES = ("hf", "inprocess", "multiprocess")
#: Models whose prompts go through the tokenizer's chat template (an instruct model).
CHAT_MODELS = ("smollm2-135m-instruct",)
#: New tokens per model when --new-tokens is not given (tiny-gpt2's character answers are short).
DEFAULT_NEW_TOKENS = {"tiny-gpt2": 32}
TIME_KEYS = ("generation", "scoring", "logprobs", "update", "weight_sync")


def make_sampler(engine: str, kv_cache_mb: int, max_model_len: int) -> Sampler:
    """The sampler an engine name stands for."""
    if engine == "hf":
        return HFSampler()
    if engine in ("inprocess", "multiprocess"):
        return VLLMSampler(processes=engine == "multiprocess", kv_cache_mb=kv_cache_mb, max_model_len=max_model_len)
    raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")


def arithmetic_data(model: str, tokenizer: Any, count: int, batch_size: int) -> ArithmeticDataModule:
    """The arithmetic task (two operands up to 19, + and -) with ``count`` training problems,
    in the chat template for an instruct model."""
    return ArithmeticDataModule(num_train=count, num_val=4, num_test=4, max_operand=19, operators="+-",
                                batch_size=batch_size, tokenizer=tokenizer, use_chat_template=model in CHAT_MODELS)


def prompt_batch(model: str, tokenizer: Any, count: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``count`` left-padded arithmetic prompts (ids, mask), the same for every engine."""
    data = arithmetic_data(model, tokenizer, count, count)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    return batch["prompt_input_ids"], batch["prompt_attention_mask"]


def counted_tokens(ids: torch.Tensor, eos: int) -> int:
    """Generated tokens up to and with each row's first EOS (the whole row when it has none)."""
    is_eos = ids == eos
    first = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, torch.full_like(ids[:, 0], ids.shape[1]))
    return int(first.sum())


def load_module(model: str, objective: Any = None, seed: int = 0) -> FineTuneModule:
    """A FineTuneModule on ``model`` (a preset name), weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return FineTuneModule(model=model, objective=objective)


def bench_sampling(model: str, engines: List[str], prompts: int, new_tokens: int, repeats: int, seed: int,
                   kv_cache_mb: int, max_model_len: int) -> Dict[str, Any]:
    """Tokens/s of each engine on the same prompts, and vLLM's start-up and weight-sync seconds."""
    module = load_module(model)
    policy, tokenizer = module.policy.eval(), module.tokenizer
    ids, mask = prompt_batch(model, tokenizer, prompts)
    settings = SamplingSettings(max_new_tokens=new_tokens, temperature=1.0, seed=seed)
    result: Dict[str, Any] = {"model": model, "prompts": int(ids.shape[0]), "prompt_tokens_mean":
                              float(mask.sum(-1).float().mean()), "prompt_width": int(ids.shape[1]),
                              "new_tokens": new_tokens, "repeats": repeats, "engines": {}}
    print(f"[{time.strftime('%H:%M:%S')}] sampling {model}: {result['prompts']} prompts of "
          f"{result['prompt_tokens_mean']:.1f} tokens (padded to {result['prompt_width']}), {new_tokens} new", flush=True)
    for engine in engines:
        sampler = make_sampler(engine, kv_cache_mb, max_model_len)
        row: Dict[str, Any] = {}
        try:
            start = time.perf_counter()
            sampler.load_weights(policy)  # the engine's start-up (nothing for HF)
            row["startup_s"] = time.perf_counter() - start
            with torch.no_grad():
                sampler.sample(policy, tokenizer, ids, mask, settings)  # warm-up
                times, tokens = [], []
                for repeat in range(repeats):
                    start = time.perf_counter()
                    out = sampler.sample(policy, tokenizer, ids, mask,
                                         SamplingSettings(max_new_tokens=new_tokens, temperature=1.0, seed=seed + repeat))
                    times.append(time.perf_counter() - start)
                    tokens.append(counted_tokens(out.ids, tokenizer.eos_token_id))
            row.update(seconds=times, tokens=tokens, tokens_per_s=sum(tokens) / sum(times),
                       finished=float(out.finished.float().mean()))
            if isinstance(sampler, VLLMSampler):
                # A no-op in-place change bumps the parameter's version: the next load_weights
                # sends the whole state dict, as after an optimizer step, without changing the model.
                with torch.no_grad():
                    next(policy.parameters()).mul_(1.0)
                sampler.load_weights(policy)
                row["sync_s"] = sampler.last_sync_seconds
        finally:
            sampler.close()
        result["engines"][engine] = row
        print(f"  {engine:<12} start-up {row['startup_s']:6.2f} s, {row['tokens_per_s']:7.1f} tokens/s "
              f"({statistics.mean(row['tokens']):.0f} tokens in {statistics.mean(row['seconds']):.2f} s)"
              + (f", sync {row['sync_s']:.3f} s" if "sync_s" in row else ""), flush=True)
    del module, policy
    return result


class StepTimes(pl.Callback):
    """Each training batch's wall seconds and logged ``time/*`` metrics."""

    def __init__(self):
        self.rows: List[Dict[str, float]] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        row = {key: float(trainer.callback_metrics.get(f"time/{key}_step", 0.0)) for key in TIME_KEYS}
        row["wall"] = time.perf_counter() - self._start
        self.rows.append(row)


def bench_grpo(model: str, engines: List[str], steps: int, new_tokens: int, seed: int, kv_cache_mb: int,
               max_model_len: int) -> Dict[str, Any]:
    """A short GRPO fit per engine; the per-step timings and their means over steps 2..N."""
    result: Dict[str, Any] = {"model": model, "steps": steps, "prompts_per_step": 4, "num_generations": 4,
                              "new_tokens": new_tokens, "engines": {}}
    print(f"[{time.strftime('%H:%M:%S')}] GRPO {model}: {steps} steps of 4 prompts x 4 generations, "
          f"{new_tokens} new tokens", flush=True)
    for engine in engines:
        sampler = make_sampler(engine, kv_cache_mb, max_model_len)
        try:
            objective = GRPO(reward=AnswerMatchReward(), num_generations=4, max_new_tokens=new_tokens, seed=seed,
                             sampler=sampler)
            module = load_module(model, objective)
            log = StepTimes()
            trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                 max_epochs=1, limit_train_batches=steps, limit_val_batches=0, callbacks=[log])
            start = time.perf_counter()
            trainer.fit(module, arithmetic_data(model, None, 4 * steps, 4))
            fit_s = time.perf_counter() - start
        finally:
            sampler.close()  # fit's teardown closed it already; closing twice is safe
        later = log.rows[1:] or log.rows  # the first step holds the engine's start-up
        means = {key: statistics.mean(r[key] for r in later) for key in (*TIME_KEYS, "wall")}
        total = sum(means[key] for key in ("generation", "scoring", "logprobs", "update"))
        row = {"per_step": log.rows, "mean_after_first": means, "fit_s": fit_s,
               "generation_share": means["generation"] / total, "first_step_wall": log.rows[0]["wall"]}
        result["engines"][engine] = row
        print(f"  {engine:<12} {means['wall']:6.2f} s/iteration, generation {means['generation']:.2f} s "
              f"({100 * row['generation_share']:.0f}%), update {means['update']:.2f} s, "
              f"first step {row['first_step_wall']:.1f} s", flush=True)
        del module, trainer
    return result


def environment(threads: int) -> Dict[str, str]:
    """What computed the numbers: CPU, cores, torch and vLLM versions, threads."""
    try:
        model = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
        model = model.split(":", 1)[1].strip() if ":" in model else platform.processor()
    except OSError:
        model = platform.processor()
    import vllm

    return {"cpu": model, "cores": str(os.cpu_count()), "torch": torch.__version__, "vllm": vllm.__version__,
            "threads": f"{threads} (torch.get_num_threads(); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
            "hardware": describe_hardware()}


def tables(command: str, env: Dict[str, str], sampling: List[Dict[str, Any]], grpo: List[Dict[str, Any]]) -> str:
    """The results as markdown, ready for the docs."""
    lines = [f"Command: `{command}`", "",
             f"Hardware: {env['cpu']}, {env['cores']} cores; torch {env['torch']}, vLLM {env['vllm']}; "
             f"threads {env['threads']}.", ""]
    if sampling:
        lines += ["**Sampling throughput** (temperature 1, tokens counted up to and with EOS; start-up: first "
                  "`load_weights`; sync: one full weight sync)", "",
                  "| model | prompts x new tokens | engine | tokens/s | vs HF | s per batch | start-up s | sync s |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for result in sampling:
            hf = result["engines"].get("hf", {}).get("tokens_per_s")
            for engine, row in result["engines"].items():
                ratio = f"{row['tokens_per_s'] / hf:.2f}x" if hf else "-"
                startup = f"{row['startup_s']:.1f}" if engine != "hf" else "-"
                sync = f"{row['sync_s']:.3f}" if "sync_s" in row else "-"
                lines.append(f"| {result['model']} | {result['prompts']} x {result['new_tokens']} (prompt "
                             f"{result['prompt_tokens_mean']:.0f} tok) | {engine} | {row['tokens_per_s']:.1f} | {ratio} | "
                             f"{statistics.mean(row['seconds']):.2f} | {startup} | {sync} |")
        lines.append("")
    if grpo:
        lines += ["**GRPO iteration** (4 prompts x 4 generations; means over steps 2..N; generation includes the "
                  "weight sync; share = generation / (generation + scoring + logprobs + update))", "",
                  "| model | new tokens | engine | s/iteration | generation s | of which sync s | scoring s | "
                  "logprobs s | update s | generation share | first step s |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for result in grpo:
            for engine, row in result["engines"].items():
                m = row["mean_after_first"]
                lines.append(f"| {result['model']} | {result['new_tokens']} | {engine} | {m['wall']:.2f} | "
                             f"{m['generation']:.2f} | {m['weight_sync']:.3f} | {m['scoring']:.3f} | {m['logprobs']:.2f} | "
                             f"{m['update']:.2f} | {100 * row['generation_share']:.0f}% | {row['first_step_wall']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def engine_list(text: str) -> List[str]:
    """A comma-separated engine list, checked."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENGINES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    return names


def main(argv: Optional[List[str]] = None) -> None:
    """Run the benchmark from the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny-gpt2,smollm2-135m-instruct", help="comma-separated model presets")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per sampling batch")
    parser.add_argument("--new-tokens", type=int, default=None,
                        help="new tokens per prompt (default 64; 32 for tiny-gpt2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed sampling calls after the warm-up")
    parser.add_argument("--engines", type=engine_list, default=list(ENGINES), help="engines of the sampling part")
    parser.add_argument("--grpo-engines", type=engine_list, default=["hf", "inprocess"],
                        help="engines of the GRPO part (empty: skip it)")
    parser.add_argument("--grpo-models", default=None, help="models of the GRPO part (default: --models)")
    parser.add_argument("--grpo-steps", type=int, default=4, help="GRPO steps per engine (the first is left out)")
    parser.add_argument("--grpo-new-tokens", type=int, default=32, help="new tokens per GRPO generation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kv-cache-mb", type=int, default=512, help="vLLM's KV cache")
    parser.add_argument("--max-model-len", type=int, default=512, help="vLLM's longest prompt + response")
    parser.add_argument("--out", default="runs/rollout_engines.json")
    args = parser.parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    grpo_models = [name.strip() for name in (args.grpo_models or args.models).split(",") if name.strip()]
    threads = torch.get_num_threads()
    env = environment(threads)
    command = " ".join([f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] * ("OMP_NUM_THREADS" in os.environ)
                       + [sys.executable, *sys.argv])
    print(f"[{time.strftime('%H:%M:%S')}] {env['hardware']}; vLLM {env['vllm']}; threads {env['threads']}", flush=True)
    started = time.perf_counter()
    sampling, grpo = [], []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(partial: bool) -> None:
        # Rewritten after every part, so a crash or a kill keeps what finished.
        out.write_text(json.dumps({"command": command, "environment": env, "settings": vars(args), "sampling": sampling,
                                   "grpo": grpo, "elapsed_seconds": time.perf_counter() - started,
                                   "partial": partial}, indent=1))

    for model in models:
        new_tokens = args.new_tokens or DEFAULT_NEW_TOKENS.get(model, 64)
        sampling.append(bench_sampling(model, args.engines, args.prompts, new_tokens, args.repeats, args.seed,
                                       args.kv_cache_mb, args.max_model_len))
        save(True)
    for model in grpo_models if args.grpo_engines else []:
        grpo.append(bench_grpo(model, args.grpo_engines, args.grpo_steps, args.grpo_new_tokens, args.seed,
                               args.kv_cache_mb, args.max_model_len))
        save(True)
    save(False)
    print(f"\n[{time.strftime('%H:%M:%S')}] done in {time.perf_counter() - started:.0f} s; wrote {out}\n", flush=True)
    print(tables(command, env, sampling, grpo))


if __name__ == "__main__":
    main()
