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

The problems go in groups of about one generation batch (``--batch_size // --samples``),
each sampled, judged and appended to ``OUTPUT.partial`` before the next: Ctrl-C or SIGTERM
keeps the groups done (the message says how many and where), and the same command run
again continues after them, writing what an unstopped run would have written. A second
run on the same ``--output`` is refused while the first is alive.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any, Dict, List, Literal, Optional, Tuple

import torch

from ift.core.stop_signals import stopping_signal
from ift.rewards.code import CodeTestsReward
from ift.tasks.code.data import CodeTaskDataModule
from ift.lab.code.pair_file import PairFile
from ift.lab.code.pair_sampling import Source, load_sources, sample_programs
from ift.lab.code.pairs import DROP_REASONS, PairSummary, synthesise_pairs
from ift.lab.code.problem_groups import group_seed, problem_groups
from ift.lab.code.task_option import read_task

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
        task: the problems: a JSON object of CodeTaskDataModule arguments, inline (e.g. '{"num_train":
            2000, "task_seed": 1}') or the path of a JSON file holding one; keys: num_train, num_val,
            num_test, max_steps, max_constant, num_tests, min_input, max_input, task_seed (null: its
            defaults, as `ift code-pass-rate --task`).
        max_pairs_per_problem: most pairs kept per problem; 0 keeps every usable pair.
        timeout: seconds of one sandboxed run, interpreter start included.
        workers: sandboxed runs at once.
        seed: seed of the sampling, of a preset's weights and of the pairing's tie-breaks: the same
            seed and options give the same file.
        output: the JSONL written: one pair per line, with prompt, chosen, rejected and provenance.
            Pairs are appended to OUTPUT.partial as each group of problems is judged; the file takes
            its name when every problem is done. A run stopped before (Ctrl-C, SIGTERM, an error)
            keeps OUTPUT.partial, and the same command run again continues it. One run writes an
            --output at a time (OUTPUT.lock names it).
        overwrite: replace an existing --output, and start over instead of continuing a
            stopped run's OUTPUT.partial.
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
    """The problems of ``split`` of the built-in code task (``task_json``: ``--task``, see
    :func:`~ift.lab.code.task_option.read_task`), the first ``num`` of them, with their ids
    (``code_task[train]#17``).

    Raises ValueError naming the fix when the task arguments are wrong or give no problems.
    """
    data = CodeTaskDataModule(**read_task(task_json))
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


def _settings(args: CodePairsArguments) -> Dict[str, Any]:
    """The options that decide the pairs: a stopped run's ``.partial`` file is continued only
    with the same (``--workers`` and ``--device`` change how fast, not what)."""
    return {name: getattr(args, name) for name in (
        "strong", "weak", "strong_temperature", "weak_temperature", "samples", "tokenizer", "max_new_tokens",
        "batch_size", "split", "num", "task", "max_pairs_per_problem", "timeout", "seed")}


def _resumed(output: PairFile) -> Tuple[PairSummary, set]:
    """The summary and problem ids of the groups a stopped run finished."""
    summary, done = PairSummary(), set()
    for note in output.progress:
        summary.add(PairSummary(**note["summary"]))
        done.update(note["problems"])
    return summary, done


def run(args: CodePairsArguments) -> Dict[str, Any]:
    """Run ``ift code-pairs``: writes the pairs group by group, prints the summary as JSON and
    returns it. Bad input (task arguments, policies, the output file) raises ValueError naming
    the fix; a stop (Ctrl-C, SIGTERM, an error) keeps the groups done and says where."""
    sources = args.sources()
    start = time.monotonic()
    problems, ids = load_problems(args.task, args.split, args.num)  # --task is checked before anything loads
    reward = CodeTestsReward(timeout_s=args.timeout, max_workers=args.workers)
    # An unwritable folder, an existing file or another run writing it stops here, before any model loads.
    output = PairFile(args.output, overwrite=args.overwrite, settings=_settings(args)).open()
    summary, done = PairSummary(), set()
    try:
        summary, done = _resumed(output)
        groups = [group for group in problem_groups(len(problems), args.samples, args.batch_size)
                  if not all(ids[index] in done for index in group)]
        if output.progress:
            print(f"{PROG}: continuing {output.partial}: {len(done)} of {len(problems)} problems were done by a "
                  f"stopped run ({summary.pairs} pairs kept); sampling the other {len(problems) - len(done)}",
                  file=sys.stderr, flush=True)
        policies = load_sources(sources, args.tokenizer, args.seed) if groups else {}
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        for group in groups:
            before = dict(reward.counts)
            programs = sample_programs(sources, policies, [problems[index]["prompt"] for index in group],
                                       samples=args.samples, max_new_tokens=args.max_new_tokens,
                                       batch_size=args.batch_size, device=device,
                                       seed=group_seed(args.seed, group[0]))
            result = synthesise_pairs([problems[index] for index in group], programs,
                                      problem_ids=[ids[index] for index in group],
                                      max_pairs_per_problem=args.max_pairs_per_problem or None, seed=args.seed,
                                      reward=reward)
            # The reward's counters run over the whole command: this group's are the difference.
            result.summary.sandbox = {key: value - before.get(key, 0) for key, value in reward.counts.items()}
            output.write(result.records, done={"problems": [ids[index] for index in group],
                                               "summary": result.summary.as_dict()})
            summary.add(result.summary)
            done.update(ids[index] for index in group)
            print(f"{PROG}: {len(done)}/{len(problems)} problems done, {summary.pairs} pairs "
                  f"({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
        path = output.commit()
    except BaseException as error:
        kept = output.abort()
        if kept is not None:
            print(f"{PROG}: stopped after {len(done)} of {len(problems)} problems; their {summary.pairs} pairs are in "
                  f"{kept}; run the same command again to continue from there (--overwrite starts over)",
                  file=sys.stderr, flush=True)
        elif stopping_signal(error) is not None:
            print(f"{PROG}: stopped before any problem was done; nothing was written", file=sys.stderr, flush=True)
        raise
    result_summary = {"output": path, **summary.as_dict()}
    print(describe(summary, path, time.monotonic() - start), file=sys.stderr)
    print(json.dumps(result_summary))
    return result_summary
