"""``ift code-pairs``: preference pairs of the built-in code task, judged by the sandbox.

    ift code-pairs --strong run.ckpt --weak tiny-gpt2 --output pairs.jsonl
    ift code-pairs --strong run.ckpt --strong_temperature 0.4 --weak_temperature 1.5 --output pairs.jsonl
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

import dataclasses
import json
import sys
import time
from typing import Any, Dict, List, Literal, Optional, Tuple

import torch

from ift.rewards.code import CodeTestsReward
from ift.tasks.code.data import CodeTaskDataModule
from ift.lab.code.pair_file import PairFile
from ift.lab.code.pair_sampling import Source, load_sources, sample_programs
from ift.lab.code.pairs import DROP_REASONS, PairSummary, synthesise_pairs

PROG = "ift code-pairs"
#: Temperatures when none is given: one policy needs two different ones to be two sources.
STRONG_TEMPERATURE, WEAK_TEMPERATURE_ONE_POLICY = 0.7, 1.5


_POLICY = ("a checkpoint written by `ift fit` (*.ckpt), a folder written by ExportPretrained or save_pretrained, "
           "a .gguf file, a preset (tiny-gpt2, ...: untrained; smollm2-135m-instruct) or a hub id")


@dataclasses.dataclass(kw_only=True)
class CodePairsArguments:
    """Preference pairs of the built-in code task: programs sampled from a strong and a weak
    source, run on each problem's tests in the sandbox; a passing program (chosen) beside a
    failing one (rejected), written as JSONL.

    Attributes:
        strong: the policy whose passing programs are preferred as the chosen side: POLICY.
        weak: the policy whose failing programs are preferred as the rejected side (same kinds as
            --strong); null: --strong again, sampled at --weak_temperature.
        strong_temperature: sampling temperature of the strong source; 0 decodes greedily and needs
            --samples 1 (null: STRONG_T).
        weak_temperature: sampling temperature of the weak source (null: STRONG_T with --weak,
            WEAK_T without, so that one policy gives two sources).
        samples: programs sampled per problem from each source.
        tokenizer: tokenizer of both policies instead of their own (char, char:CHARS, a folder or hub
            id); null: their own (a checkpoint's: the one its run recorded).
        max_new_tokens: most tokens generated per program.
        batch_size: programs generated together.
        device: where to generate: cpu, cuda, cuda:1 (null: cuda when available, else cpu).
        split: split of the built-in code task the problems come from (train, since the pairs are
            training data; val/test are the held-out problems).
        num: use the first N problems of the split (null: all of them).
        task: JSON of CodeTaskDataModule arguments, e.g. '{"num_train": 2000, "task_seed": 1}'
            (null: its defaults, as `ift code-pass-rate --task`).
        max_pairs_per_problem: most pairs kept per problem; 0 keeps every usable pair.
        timeout: seconds of one sandboxed run, interpreter start included.
        workers: sandboxed runs at once.
        seed: seed of the sampling, of a preset's weights and of the pairing's tie-breaks: the same
            seed and options give the same file.
        output: the JSONL written: one pair per line, with prompt, chosen, rejected and provenance.
        overwrite: replace an existing --output.
    """

    strong: str
    weak: Optional[str] = None
    strong_temperature: Optional[float] = None
    weak_temperature: Optional[float] = None
    samples: int = 4
    tokenizer: Optional[str] = None
    max_new_tokens: int = 48
    batch_size: int = 16
    device: Optional[str] = None
    split: Literal["train", "val", "test"] = "train"
    num: Optional[int] = None
    task: Optional[str] = None
    max_pairs_per_problem: int = 4
    timeout: float = 5.0
    workers: int = 4
    seed: int = 0
    output: str
    overwrite: bool = False

    def __post_init__(self) -> None:
        """Stop on options that cannot be meant (ValueError naming the option)."""
        for name in ("samples", "max_new_tokens", "batch_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.num is not None and self.num < 1:
            raise ValueError(f"--num {self.num}: zero problems give no pairs; give --num >= 1, or leave it out for "
                             f"the whole --split")
        if self.max_pairs_per_problem < 0:
            raise ValueError(f"--max_pairs_per_problem must be >= 0 (0: no cap), got {self.max_pairs_per_problem}")
        if self.timeout <= 0:
            raise ValueError(f"--timeout must be > 0, got {self.timeout}")
        self.sources()

    def sources(self) -> List[Source]:
        """The two sources the options name, after checking they differ and can be sampled."""
        strong_t = self.strong_temperature if self.strong_temperature is not None else STRONG_TEMPERATURE
        weak_t = self.weak_temperature if self.weak_temperature is not None else (
            STRONG_TEMPERATURE if self.weak else WEAK_TEMPERATURE_ONE_POLICY)
        weak = self.weak or self.strong
        if weak == self.strong and weak_t == strong_t:
            raise ValueError(f"the strong and weak sources are the same policy at the same temperature ({strong_t}); "
                             f"give --weak another policy, or a --weak_temperature that differs from "
                             f"--strong_temperature")
        sources = [Source("strong", self.strong, strong_t), Source("weak", weak, weak_t)]
        for source in sources:
            if source.temperature < 0:
                raise ValueError(f"--{source.name}_temperature must be >= 0, got {source.temperature}")
            if source.temperature == 0 and self.samples > 1:
                raise ValueError(f"--{source.name}_temperature 0 decodes greedily: --samples {self.samples} would "
                                 f"give the same program {self.samples} times; sample at a temperature above 0, or "
                                 f"give --samples 1")
        return sources


CodePairsArguments.__doc__ = (CodePairsArguments.__doc__.replace("POLICY", _POLICY)
                              .replace("STRONG_T", str(STRONG_TEMPERATURE))
                              .replace("WEAK_T", str(WEAK_TEMPERATURE_ONE_POLICY)))


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


def run(args: CodePairsArguments) -> Dict[str, Any]:
    """Run ``ift code-pairs``: writes the pairs, prints the summary as JSON and returns it.
    Bad input (task arguments, policies, the output file) raises ValueError naming the fix."""
    sources = args.sources()
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
    except BaseException:
        if output is not None:
            output.abort()
        raise
    summary = {"output": path, **result.summary.as_dict()}
    print(describe(result.summary, path, time.monotonic() - start), file=sys.stderr)
    print(json.dumps(summary))
    return summary
