"""What the code sandbox costs: one sandboxed run ÷ one bare interpreter running the same
program and tests, and the code reward's throughput on a PPO-sized batch.

    python benchmarks/sandbox_cost.py --repeats 30 --batch 64

Prints a Markdown table. Run it by hand (not in the test suite); the numbers in the README
come from it. Every timing is wall-clock (a sandbox is a process: its cost is mostly the
interpreter's start), median over ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from ift.rewards import CodeTestsReward, run_in_sandbox
from ift.tasks.code import code_examples


def bare_run(program: str, tests: list) -> float:
    """A plain ``python -S -c`` of the program and its asserts: the floor any process-based runner pays."""
    source = program + "\n" + "\n".join(tests) + "\n"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-S", "-c", source], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def sandboxed_run(program: str, tests: list, **options) -> float:
    start = time.perf_counter()
    result = run_in_sandbox(program, tests, **options)
    elapsed = time.perf_counter() - start
    if result.status != "ok" or result.passed != result.total:
        raise RuntimeError(f"benchmark program failed in the sandbox: {result.detail}")
    return elapsed


def reward_batch(examples: list, workers: int) -> float:
    reward = CodeTestsReward(max_workers=workers, cache_size=0)
    prompts = [e["prompt"] for e in examples]
    responses = [e["response"] for e in examples]
    start = time.perf_counter()
    scores = reward(prompts, responses, examples)
    elapsed = time.perf_counter() - start
    if scores != [1.0] * len(examples):
        raise RuntimeError("benchmark: a reference function did not pass its tests")
    return elapsed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="runs per timing (median)")
    parser.add_argument("--batch", type=int, default=64, help="responses in the reward batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4], help="sandboxes at once")
    args = parser.parse_args(argv)

    example = code_examples(1, seed=0)[0]
    program, tests = example["response"], example["tests"]
    for _ in range(3):  # warm the page cache
        bare_run(program, tests)
        sandboxed_run(program, tests)
    bare = statistics.median(bare_run(program, tests) for _ in range(args.repeats))
    boxed = statistics.median(sandboxed_run(program, tests) for _ in range(args.repeats))
    # Which layer costs what: the same run without the namespaces, and without the audit hook.
    no_ns = statistics.median(sandboxed_run(program, tests, namespaces=False) for _ in range(args.repeats))
    no_hook = statistics.median(sandboxed_run(program, tests, namespaces=False, audit_hook=False)
                                for _ in range(args.repeats))
    layers = run_in_sandbox("", ()).isolation
    print(f"isolation layers here: {', '.join(layers)}\n")
    print("| run | ms | ÷ bare interpreter |")
    print("|---|---:|---:|")
    print(f"| bare `python -S -c` | {bare * 1e3:.1f} | 1.00 |")
    print(f"| `run_in_sandbox` (every layer) | {boxed * 1e3:.1f} | {boxed / bare:.2f} |")
    print(f"| `run_in_sandbox(namespaces=False)` | {no_ns * 1e3:.1f} | {no_ns / bare:.2f} |")
    print(f"| `run_in_sandbox(namespaces=False, audit_hook=False)` | {no_hook * 1e3:.1f} | {no_hook / bare:.2f} |")

    examples = code_examples(args.batch, seed=1)
    print(f"\n| CodeTestsReward, {args.batch} distinct responses | batch s | ms / response | ÷ one worker |")
    print("|---|---:|---:|---:|")
    one = None
    for workers in args.workers:
        seconds = statistics.median(reward_batch(examples, workers) for _ in range(3))
        one = seconds if one is None else one
        print(f"| max_workers={workers} | {seconds:.2f} | {seconds / args.batch * 1e3:.1f} | {seconds / one:.2f} |")


if __name__ == "__main__":
    main()
