"""``ift code-pairs``: preference pairs of the built-in code task, judged by the sandbox.

    ift code-pairs --strong run.ckpt --weak tiny-gpt2 --output pairs.jsonl
    ift code-pairs --strong run.ckpt --strong-temperature 0.4 --weak-temperature 1.5 --output pairs.jsonl
    ift code-pairs --strong export/final --weak early.ckpt --split train --num 200 --samples 8 --output pairs.jsonl

For each problem of a split of the built-in code task, ``--samples`` programs are sampled
from a strong and a weak source (two policies, or one policy at two temperatures), every
program runs on the problem's tests in the sandbox, and a passing program (chosen) is
paired with a failing one (rejected): :mod:`ift.lab.code.pairs`. The records are JSONL
with ``prompt``, ``chosen`` and ``rejected`` (``ift.data.PreferenceDataModule``'s default
fields) plus provenance. The summary (problems, samples, pairs, dropped candidates by
reason) is printed as one line of JSON on stdout, and in words on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from typing import Any, Dict, List, Optional, Tuple

import torch

from ift.rewards.code import CodeTestsReward
from ift.tasks.code.data import CodeTaskDataModule
from ift.lab.code.pair_file import PairFile
from ift.lab.code.pair_sampling import Source, load_sources, sample_programs
from ift.lab.code.pairs import DROP_REASONS, PairSummary, synthesise_pairs

PROG = "ift code-pairs"
SPLITS = ("train", "val", "test")
#: Temperatures when none is given: one policy needs two different ones to be two sources.
STRONG_TEMPERATURE, WEAK_TEMPERATURE_ONE_POLICY = 0.7, 1.5


def build_parser() -> argparse.ArgumentParser:
    """The options of ``ift code-pairs``."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill("Preference pairs of the built-in code task: programs sampled from a strong and a "
                                  "weak source, run on each problem's tests in the sandbox; a passing program "
                                  "(chosen) beside a failing one (rejected), written as JSONL.", 79),
        epilog="examples:\n" + "\n".join(line for line in __doc__.splitlines() if line.startswith("    ift ")))
    policy = ("a checkpoint written by `ift fit` (*.ckpt), a folder written by ExportPretrained or save_pretrained, "
              "a .gguf file, a preset (tiny-gpt2, ...: untrained; smollm2-135m-instruct) or a hub id")
    sources = parser.add_argument_group("sources")
    sources.add_argument("--strong", required=True, metavar="POLICY",
                         help=f"the policy whose passing programs are preferred as the chosen side: {policy}")
    sources.add_argument("--weak", metavar="POLICY",
                         help="the policy whose failing programs are preferred as the rejected side (same kinds as "
                              "--strong); default: --strong again, sampled at --weak-temperature")
    sources.add_argument("--strong-temperature", type=float, default=None,
                         help=f"sampling temperature of the strong source; 0 decodes greedily and needs --samples 1 "
                              f"(default: {STRONG_TEMPERATURE})")
    sources.add_argument("--weak-temperature", type=float, default=None,
                         help=f"sampling temperature of the weak source (default: {STRONG_TEMPERATURE} with --weak, "
                              f"{WEAK_TEMPERATURE_ONE_POLICY} without, so that one policy gives two sources)")
    sources.add_argument("--samples", type=int, default=4,
                         help="programs sampled per problem from each source (default: 4)")
    sources.add_argument("--tokenizer", help="tokenizer of both policies instead of their own (char, char:CHARS, a "
                                             "folder or hub id); a checkpoint's default is the one its run recorded")
    sources.add_argument("--max-new-tokens", type=int, default=48,
                         help="most tokens generated per program (default: 48)")
    sources.add_argument("--batch-size", type=int, default=16, help="programs generated together (default: 16)")
    sources.add_argument("--device", default=None,
                         help="where to generate: cpu, cuda, cuda:1 (default: cuda when available, else cpu)")
    problems = parser.add_argument_group("problems")
    problems.add_argument("--split", default="train", choices=SPLITS,
                          help="split of the built-in code task the problems come from (default: train, since the "
                               "pairs are training data; val/test are the held-out problems)")
    problems.add_argument("--num", type=int, default=None,
                          help="use the first N problems of the split (default: all of them)")
    problems.add_argument("--task", default=None,
                          help="JSON of CodeTaskDataModule arguments, e.g. '{\"num_train\": 2000, \"task_seed\": 1}' "
                               "(default: its defaults, as `ift code-pass-rate --task`)")
    pairing = parser.add_argument_group("pairing and output")
    pairing.add_argument("--max-pairs-per-problem", type=int, default=4,
                         help="most pairs kept per problem; 0 keeps every usable pair (default: 4)")
    pairing.add_argument("--timeout", type=float, default=5.0,
                         help="seconds of one sandboxed run, interpreter start included (default: 5)")
    pairing.add_argument("--workers", type=int, default=4, help="sandboxed runs at once (default: 4)")
    pairing.add_argument("--seed", type=int, default=0,
                         help="seed of the sampling, of a preset's weights and of the pairing's tie-breaks: the same "
                              "seed and options give the same file (default: 0)")
    pairing.add_argument("--output", required=True, metavar="FILE",
                         help="the JSONL written: one pair per line, with prompt, chosen, rejected and provenance")
    pairing.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return parser


def _sources(parser: argparse.ArgumentParser, args: argparse.Namespace) -> List[Source]:
    """The two sources the options name, after checking they differ and can be sampled."""
    strong_t = args.strong_temperature if args.strong_temperature is not None else STRONG_TEMPERATURE
    weak_t = args.weak_temperature if args.weak_temperature is not None else (
        STRONG_TEMPERATURE if args.weak else WEAK_TEMPERATURE_ONE_POLICY)
    weak = args.weak or args.strong
    if weak == args.strong and weak_t == strong_t:
        parser.error(f"the strong and weak sources are the same policy at the same temperature ({strong_t}); give "
                     f"--weak another policy, or a --weak-temperature that differs from --strong-temperature")
    sources = [Source("strong", args.strong, strong_t), Source("weak", weak, weak_t)]
    for source in sources:
        if source.temperature < 0:
            parser.error(f"--{source.name}-temperature must be >= 0, got {source.temperature}")
        if source.temperature == 0 and args.samples > 1:
            parser.error(f"--{source.name}-temperature 0 decodes greedily: --samples {args.samples} would give the "
                         f"same program {args.samples} times; sample at a temperature above 0, or give --samples 1")
    return sources


def _check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("samples", "max_new_tokens", "batch_size", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.num is not None and args.num < 1:
        parser.error(f"--num {args.num}: zero problems give no pairs; give --num >= 1, or leave it out for the whole "
                     f"--split")
    if args.max_pairs_per_problem < 0:
        parser.error(f"--max-pairs-per-problem must be >= 0 (0: no cap), got {args.max_pairs_per_problem}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout}")


def load_problems(task_json: Optional[str], split: str, num: Optional[int]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """The problems of ``split`` of the built-in code task (``task_json``: CodeTaskDataModule
    arguments), the first ``num`` of them, with their ids (``code_task[train]#17``).

    Raises ValueError naming the fix when the task arguments are wrong or give no problems.
    """
    try:
        task = json.loads(task_json or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"--task is not JSON ({error}); give an object such as '{{\"num_train\": 200}}'") from None
    if not isinstance(task, dict):
        raise ValueError(f"--task must be a JSON object of CodeTaskDataModule arguments, got {task_json}")
    try:
        data = CodeTaskDataModule(**task)
    except TypeError as error:
        raise ValueError(f"--task: {error}; its keys are CodeTaskDataModule's arguments (num_train, num_val, "
                         f"num_test, max_steps, max_constant, num_tests, min_input, max_input, task_seed)") from None
    examples = data.all_examples()[split]
    if not examples:
        raise ValueError(f"the {split} split of the code task has no problems (--task sets num_{split} to "
                         f"{data.sizes[split]}); raise num_{split} in --task, or choose another --split")
    if num is not None and num > len(examples):
        raise ValueError(f"--num {num}: the {split} split has {len(examples)} problems; ask for fewer, or raise "
                         f"num_{split} in --task")
    examples = examples[:num] if num is not None else examples
    ids = [f"{data.task_name}[{split}]#{index}" for index in range(len(examples))]
    return examples, ids


def describe(summary: PairSummary, path: str, seconds: float) -> str:
    """The summary in words, for stderr."""
    dropped = ", ".join(f"{reason} {summary.dropped[reason]}" for reason in DROP_REASONS)
    passing = ", ".join(f"{name} {summary.passing_by_source[name]}/{summary.samples_by_source[name]}"
                        for name in summary.samples_by_source)
    return (f"{PROG}: {summary.problems} problems, {summary.samples} programs (passing every test: {passing}); "
            f"{summary.candidates} candidate pairs: {summary.pairs} written to {path} "
            f"({summary.problems_with_pairs} problems with pairs), dropped: {dropped} ({seconds:.0f} s)")


def _progress(name: str, done: int, total: int) -> None:
    # Sampling a real model takes minutes on a CPU; stdout keeps only the JSON.
    print(f"{PROG}: {name}: generated {done}/{total} programs", file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """``ift code-pairs`` (or ``python -m ift.lab.code.pairs_command``): writes the pairs,
    prints the summary as JSON and returns it. Bad arguments stop with ``ift code-pairs: error: ...``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_numbers(parser, args)
    sources = _sources(parser, args)
    start = time.monotonic()
    output = None
    try:
        problems, ids = load_problems(args.task, args.split, args.num)
        reward = CodeTestsReward(timeout_s=args.timeout, max_workers=args.workers)
        output = PairFile(args.output, overwrite=args.overwrite).open()  # an unwritable folder stops here
        policies = load_sources(sources, args.tokenizer, args.seed)
        programs = sample_programs(sources, policies, [problem["prompt"] for problem in problems],
                                   samples=args.samples, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                   device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
                                   seed=args.seed, progress=_progress)
        result = synthesise_pairs(problems, programs, problem_ids=ids,
                                  max_pairs_per_problem=args.max_pairs_per_problem or None, seed=args.seed,
                                  reward=reward)
        output.write(result.records)
        path = output.commit()
    except ValueError as error:
        if output is not None:
            output.abort()
        raise SystemExit(f"{PROG}: error: {error}") from None
    except BaseException:
        if output is not None:
            output.abort()
        raise
    summary = {"output": path, **result.summary.as_dict()}
    print(describe(result.summary, path, time.monotonic() - start), file=sys.stderr)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":  # pragma: no cover
    main()
