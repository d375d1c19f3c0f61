"""What does IFT cost over SFT? Step time and activation memory on one fixed batch.

    python benchmarks/step_cost.py                 # batch 8 x 256 tokens, three models, CPU
    python benchmarks/step_cost.py --quick         # smaller batch, fewer repeats
    python benchmarks/step_cost.py --device cuda   # on a GPU (times synchronised, real peak memory)

For each model (dropout-free ``tiny-gpt2``, ``tiny-llama`` and the ~124M-parameter
``gpt2-100m`` preset with its 50,257-token vocabulary, all built locally with random
weights) one batch of random token ids is built directly: the first half of every row
is prompt (label -100), the second half response. Three operations are timed, each as
the median over ``--repeats`` rounds after ``--warmup`` rounds (the three take turns
within a round, so a busy spell of a shared machine slows them alike):

- ``SFT step``: ``SFT().loss`` then ``backward`` (no optimizer step).
- ``IFT step``: ``IFT(lam=0.2, gamma=0.95).loss`` (a no-grad pass 1, then pass 2 on the
  mixed embeddings) then ``backward``.
- ``forward``: one forward pass under ``torch.no_grad()``.

A second table compares two preference objectives on one batch of pairs (each side the
batch above: chosen = its rows, rejected = the same rows with other response tokens):

- ``RM step``: ``RewardModeling().loss_with_head`` (both sides through the trunk, a scalar
  head at the last token) then ``backward``.
- ``DPO step``: what DPO does in training: the frozen reference's log-probs of both sides
  (a no-grad pass), then ``DPO().loss`` then ``backward``. A reward model needs no reference,
  so RM ÷ DPO is expected near 3/4 (three forward-pass units against four).

Times are wall-clock on CUDA. On CPU they are, by default, the CPU time of this process
(``time.process_time``, ``--clock process``): on a shared machine other jobs then do not
inflate one operation more than another; with ``--threads 1`` it equals the compute spent.
``--clock wall`` gives elapsed time instead.

docs/objectives.md expects IFT ÷ SFT ≈ 4/3 (SFT is about three forward passes of compute) and
(IFT − SFT) ÷ forward ≈ 1 (one extra forward pass).

Memory. On CUDA the peak is read from the allocator: ``torch.cuda.max_memory_allocated``
during the step minus ``torch.cuda.memory_allocated`` just before it (parameters and
gradient buffers excluded), reported as the ratio IFT ÷ SFT. On CPU there is no such
counter, so activation memory is *estimated*: every tensor that autograd saves for the
backward pass is seen through ``torch.autograd.graph.saved_tensors_hooks`` and the bytes
of its storage are summed, each storage counted once and parameters' storages excluded.
That is what a training step holds between forward and backward. IFT's pass 1 runs under
``no_grad`` and saves nothing; its largest buffer is the ``B x T x V`` logits tensor, which
is freed (only the ``B x T`` argmax is kept) before pass 2 starts. Two CPU ratios are
therefore given: ``saved`` (pass-2 saved tensors only, the likely real peak ratio) and
``bound`` (saved tensors plus the pass-1 logits, as if both were alive at once: an upper
bound).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ift.core.tokenizer import build_char_tokenizer  # noqa: E402
from ift.core.model_factory import build_policy  # noqa: E402
from ift.objectives import DPO, IFT, SFT, RewardModeling  # noqa: E402
from ift.objectives.preference import pair_logprobs  # noqa: E402
from ift.objectives.reward_modeling import RewardHead  # noqa: E402
from ift.objectives.value_functions import hidden_size_of  # noqa: E402
from ift.core.forward import policy_logits  # noqa: E402
from ift.core.constants import IGNORE_INDEX  # noqa: E402

DEFAULT_MODELS = ("tiny-gpt2", "tiny-llama", "gpt2-100m")
FIRST_TOKEN = 4  # ids below are special tokens of the character tokenizer


@dataclass
class Result:
    model: str
    params: int
    tokens: str
    forward_s: float
    sft_s: float
    ift_s: float
    memory: Dict[str, float]

    @property
    def ift_over_sft(self) -> float:
        return self.ift_s / self.sft_s

    @property
    def extra_over_forward(self) -> float:
        return (self.ift_s - self.sft_s) / self.forward_s


def make_batch(vocab_size: int, batch: int, seq: int, device: torch.device, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random ids; first half of each row is prompt (label -100), second half response."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(FIRST_TOKEN, vocab_size, (batch, seq), generator=generator)
    labels = input_ids.clone()
    labels[:, : seq // 2] = IGNORE_INDEX
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
        "labels": labels.to(device),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def median_times(
    fns: Dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device, clock: str = "wall"
) -> Dict[str, float]:
    """Median seconds of each function on ``clock``. The functions take turns (one run of
    each per round), so a slow spell of a shared machine hits all of them alike."""
    now = CLOCKS[clock]
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = now()
            fn()
            synchronize(device)
            times[name].append(now() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def train_step(policy: torch.nn.Module, objective, batch) -> Callable[[], None]:
    def step() -> None:
        policy.zero_grad(set_to_none=True)
        loss, _ = objective.loss(policy, batch)
        loss.backward()

    return step


def forward_only(policy: torch.nn.Module, batch) -> Callable[[], None]:
    def forward() -> None:
        with torch.no_grad():
            policy_logits(policy, batch["input_ids"], batch["attention_mask"])

    return forward


def preference_batch(batch: Dict[str, torch.Tensor], vocab_size: int, seed: int = 1) -> Dict[str, torch.Tensor]:
    """Pairs from ``batch``: chosen = its rows, rejected = the same prompts with other random responses."""
    generator = torch.Generator().manual_seed(seed)
    rejected = batch["input_ids"].clone()
    response = batch["labels"] != IGNORE_INDEX
    fresh = torch.randint(FIRST_TOKEN, vocab_size, rejected.shape, generator=generator).to(rejected.device)
    rejected = torch.where(response, fresh, rejected)
    rejected_labels = torch.where(response, rejected, batch["labels"])
    return {"chosen_input_ids": batch["input_ids"], "chosen_attention_mask": batch["attention_mask"],
            "chosen_labels": batch["labels"], "rejected_input_ids": rejected,
            "rejected_attention_mask": batch["attention_mask"], "rejected_labels": rejected_labels}


def reward_model_step(policy: torch.nn.Module, head: RewardHead, pairs) -> Callable[[], None]:
    objective = RewardModeling()

    def step() -> None:
        policy.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        loss, _ = objective.loss_with_head(policy, head, pairs)
        loss.backward()

    return step


def dpo_step(policy: torch.nn.Module, reference: torch.nn.Module, pairs) -> Callable[[], None]:
    objective = DPO()

    def step() -> None:
        policy.zero_grad(set_to_none=True)
        with torch.no_grad():  # DPO's training step: the frozen reference's log-probs first
            chosen, rejected = pair_logprobs(reference, pairs, average=False)
        loss, _ = objective.loss(policy, {**pairs, "reference_chosen_logps": chosen, "reference_rejected_logps": rejected})
        loss.backward()

    return step


def measure_preference(model_name: str, args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    """Median RM and DPO step times on the same pairs (see the module docstring)."""
    import copy

    torch.manual_seed(0)
    policy = build_policy(model_name, build_char_tokenizer(), args.dtype).to(device)
    policy.train()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    head = RewardHead(hidden_size_of(policy)).to(device)
    torch.nn.init.normal_(head.linear.weight, std=0.02)  # a trained head's gradient reaches the trunk
    pairs = preference_batch(make_batch(policy.config.vocab_size, args.batch, args.seq, device),
                             policy.config.vocab_size)
    timings = median_times({"rm": reward_model_step(policy, head, pairs), "dpo": dpo_step(policy, reference, pairs)},
                           args.repeats, args.warmup, device, args.clock)
    return {"model": model_name, "rm": timings["rm"], "dpo": timings["dpo"], "pairs": f"{args.batch} pairs x {args.seq}"}


def saved_tensor_bytes(policy: torch.nn.Module, objective, batch) -> int:
    """Bytes of the distinct non-parameter storages autograd saves during ``objective.loss``."""
    parameter_storages = {p.untyped_storage().data_ptr() for p in policy.parameters()}
    seen: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in parameter_storages:
            seen[key] = max(seen.get(key, 0), storage.nbytes())
        return tensor

    policy.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = objective.loss(policy, batch)
    loss.backward()
    policy.zero_grad(set_to_none=True)
    return sum(seen.values())


def cuda_step_peak(step: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated during ``step`` above what was allocated before it."""
    step()  # gradients exist from here on, as in training
    synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def measure(model_name: str, args: argparse.Namespace, device: torch.device) -> Result:
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    policy = build_policy(model_name, tokenizer, args.dtype).to(device)
    policy.train()  # the presets have no dropout, so train mode is deterministic
    vocab = policy.config.vocab_size
    batch = make_batch(vocab, args.batch, args.seq, device)
    sft, ift = SFT(), IFT(lam=0.2, gamma=0.95)

    timings = median_times(
        {"forward": forward_only(policy, batch), "sft": train_step(policy, sft, batch), "ift": train_step(policy, ift, batch)},
        args.repeats, args.warmup, device, args.clock,
    )
    forward_s, sft_s, ift_s = timings["forward"], timings["sft"], timings["ift"]

    memory: Dict[str, float] = {}
    if device.type == "cuda":
        sft_peak = cuda_step_peak(train_step(policy, sft, batch), device)
        ift_peak = cuda_step_peak(train_step(policy, ift, batch), device)
        memory = {"sft_MiB": sft_peak / 2**20, "ift_MiB": ift_peak / 2**20, "ratio": ift_peak / sft_peak}
    else:
        sft_saved = saved_tensor_bytes(policy, sft, batch)
        ift_saved = saved_tensor_bytes(policy, ift, batch)
        element = torch.finfo(next(policy.parameters()).dtype).bits // 8
        pass1_logits = args.batch * args.seq * vocab * element
        memory = {
            "sft_MiB": sft_saved / 2**20,
            "ift_MiB": ift_saved / 2**20,
            "ratio": ift_saved / sft_saved,
            "bound": (ift_saved + pass1_logits) / sft_saved,
        }
    params = sum(p.numel() for p in policy.parameters())
    return Result(model_name, params, f"{args.batch}x{args.seq}", forward_s, sft_s, ift_s, memory)


def markdown_table(results: List[Result], device: torch.device) -> str:
    if device.type == "cuda":
        memory_heads = ["SFT peak MiB", "IFT peak MiB", "peak IFT÷SFT"]
    else:
        memory_heads = ["SFT saved MiB", "IFT saved MiB", "saved IFT÷SFT", "bound IFT÷SFT"]
    heads = ["model", "params", "batch", "fwd no-grad ms", "SFT step ms", "IFT step ms", "IFT÷SFT",
             "(IFT−SFT)÷fwd"] + memory_heads
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for r in results:
        cells = [r.model, f"{r.params / 1e6:.2f}M", r.tokens, f"{1e3 * r.forward_s:.1f}", f"{1e3 * r.sft_s:.1f}",
                 f"{1e3 * r.ift_s:.1f}", f"{r.ift_over_sft:.2f}", f"{r.extra_over_forward:.2f}",
                 f"{r.memory['sft_MiB']:.1f}", f"{r.memory['ift_MiB']:.1f}", f"{r.memory['ratio']:.2f}"]
        if "bound" in r.memory:
            cells.append(f"{r.memory['bound']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 4 x 128 tokens, 3 repeats, 1 warm-up")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="presets to measure")
    parser.add_argument("--batch", type=int, default=None, help="sequences per batch (default 8; 4 with --quick)")
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 256; 128 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2; 1 with --quick)")
    parser.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 (default float32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                        help="wall: elapsed time (default on cuda); process: CPU time of this process "
                             "(default on cpu: other jobs on a shared machine do not count)")
    args = parser.parse_args(argv)
    args.clock = args.clock or ("wall" if args.device.startswith("cuda") else "process")
    if args.device.startswith("cuda") and args.clock != "wall":
        parser.error("--clock process measures CPU time; GPU steps need --clock wall")
    quick = args.quick
    args.batch = args.batch or (4 if quick else 8)
    args.seq = args.seq or (128 if quick else 256)
    args.repeats = args.repeats or (3 if quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    return args


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("step_cost: --device cuda asked for, but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(measure(name, args, device))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    header = (f"IFT vs SFT step cost on {where}, torch {torch.__version__}, dtype {args.dtype or 'float32'}, "
              f"{args.clock} clock, median of {args.repeats} after {args.warmup} warm-up; half of each row is prompt.")
    table = markdown_table(results, device)
    print(header)
    print()
    print(table)
    print("\nReward-model step vs DPO step on the same pairs (DPO includes its reference pass)\n")
    print("| model | pairs | RM step ms | DPO step ms | RM ÷ DPO |")
    print("|---|---|---|---|---|")
    for name in args.models:
        print(f"measuring {name} (preference) ...", file=sys.stderr, flush=True)
        r = measure_preference(name, args, device)
        print(f"| {name} | {r['pairs']} | {1e3 * r['rm']:.1f} | {1e3 * r['dpo']:.1f} | {r['rm'] / r['dpo']:.2f} |",
              flush=True)
    return table


if __name__ == "__main__":
    main()
