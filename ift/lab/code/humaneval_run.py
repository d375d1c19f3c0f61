"""One HumanEval evaluation: generate completions, check them in the sandbox, write them as they
are checked, report pass@k."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ift.lab.code.completions import completion_from_answer, cut_at_stops, generate_texts
from ift.lab.code.humaneval import HumanEvalError, HumanEvalSandbox
from ift.lab.code.problem_groups import group_seed, problem_groups
from ift.tasks.code.pass_at_k import mean_pass_at_k
from ift.lab.code.sample_file import SampleFile


@dataclasses.dataclass
class HumanEvalSettings:
    """How completions are made and scored (``ift code-pass-rate --benchmark humaneval``).

    Attributes:
        samples: completions per problem (1 with temperature 0: greedy decoding).
        temperature: 0 decodes greedily; above 0 samples at this temperature.
        k: the pass@k reported, each at most ``samples`` (default: 1 and ``samples``).
        max_new_tokens: most tokens generated per completion.
        chat: ask in a user turn of the chat template and take the code from the answer.
        stops: cut code-prefix completions at the Codex stop sequences (ignored with chat).
        batch_size: rows (problem x sample) generated together.
        seed: seed of the sampling (and of a preset's untrained weights).
        device: where to generate.
    """

    samples: int = 1
    temperature: float = 0.0
    k: Optional[Sequence[int]] = None
    max_new_tokens: int = 256
    chat: bool = False
    stops: bool = True
    batch_size: int = 8
    seed: int = 0
    device: str = "cpu"

    def ks(self) -> List[int]:
        """The k values reported, checked against ``samples``."""
        if self.samples < 1:
            raise HumanEvalError(f"--samples must be at least 1, got {self.samples}")
        if self.temperature < 0:
            raise HumanEvalError(f"--temperature must be 0 (greedy) or positive, got {self.temperature}")
        if self.samples > 1 and self.temperature == 0:
            raise HumanEvalError(f"--samples {self.samples} with greedy decoding (--temperature 0) would check the "
                                 f"same completion {self.samples} times; set --temperature above 0 to sample")
        ks = sorted(set(self.k)) if self.k else sorted({1, self.samples})
        wrong = [k for k in ks if not 1 <= k <= self.samples]
        if wrong:
            raise HumanEvalError(f"--k {wrong[0]}: pass@k needs 1 <= k <= --samples ({self.samples}); "
                                 f"give --samples {max(wrong)} or more, or a smaller --k")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise HumanEvalError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        return ks


def completions_of(problem: Mapping[str, str], texts: Sequence[str], settings: HumanEvalSettings) -> List[str]:
    """The completions (appended to the prompt) that a problem's generated texts give."""
    if settings.chat:
        return [completion_from_answer(text, problem["entry_point"]) for text in texts]
    return [cut_at_stops(text) if settings.stops else text for text in texts]


def run_humaneval(policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Mapping[str, str]],
                  settings: HumanEvalSettings, sandbox: Optional[HumanEvalSandbox] = None,
                  out: Optional[SampleFile] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Generate ``settings.samples`` completions per problem, check each, return the report.

    The problems go in groups of about one generation batch
    (:func:`~ift.lab.code.problem_groups.problem_groups`), each group generated from its own
    seed, checked, and appended to ``out`` before the next: a stop keeps the groups done, and
    the groups ``out`` already holds (a stopped run's, continued) are not generated again.

    The report: ``benchmark``, ``problems``, ``samples``, ``temperature``, ``decoding``,
    ``pass@k`` for each k, ``passed`` (completions that passed), ``completions``, ``solved``
    (problems with at least one pass), ``outcomes`` (completions per :class:`Verdict`
    outcome), ``prompts_cut``, ``unfinished``, ``resumed`` (completions a stopped run had
    written) and ``out`` (the sample file, or None). ``out`` must be open; it is committed
    here (or left partial when this raises). ``progress(done, total)`` follows the
    completions checked (those resumed included), group by group.
    """
    ks = settings.ks()
    sandbox = sandbox or HumanEvalSandbox()
    records: List[Dict[str, Any]] = list(out.resumed) if out is not None else []
    resumed = len(records)
    done = {task_id for note in (out.progress if out is not None else []) for task_id in note["task_ids"]}
    total = len(problems) * settings.samples
    groups = [group for group in problem_groups(len(problems), settings.samples, settings.batch_size)
              if not all(problems[index]["task_id"] in done for index in group)]
    was_training = policy.training
    try:
        for group in groups:
            chosen = [problems[index] for index in group]
            seed = group_seed(settings.seed, group[0])
            torch.manual_seed(seed)
            if settings.device.startswith("cuda"):
                torch.cuda.manual_seed_all(seed)
            try:
                generated = generate_texts(policy, tokenizer, [problem["prompt"] for problem in chosen],
                                           chat=settings.chat, samples=settings.samples,
                                           temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
                                           batch_size=settings.batch_size, device=settings.device)
            except ValueError as error:
                raise HumanEvalError(str(error)) from None
            rows = [(problem, completion, cut, finished)
                    for problem, texts, cut, flags in zip(chosen, generated.texts, generated.prompt_cut,
                                                          generated.finished)
                    for completion, finished in zip(completions_of(problem, texts, settings), flags)]
            verdicts = sandbox.check_all([(problem, completion) for problem, completion, _, _ in rows])
            written = [{"task_id": problem["task_id"], "completion": completion, "passed": verdict.passed,
                        "outcome": verdict.outcome, "prompt_cut": cut, "finished": finished}
                       for (problem, completion, cut, finished), verdict in zip(rows, verdicts)]
            if out is not None:
                out.write(written, done={"task_ids": [problem["task_id"] for problem in chosen]})
            records += written
            if progress is not None:
                progress(len(records), total)
    finally:
        policy.train(was_training)
    return _report(problems, settings, ks, records, resumed, out.commit() if out is not None else None)


def _report(problems: Sequence[Mapping[str, str]], settings: HumanEvalSettings, ks: Sequence[int],
            records: Sequence[Mapping[str, Any]], resumed: int, path: Optional[str]) -> Dict[str, Any]:
    """The report of :func:`run_humaneval` from every completion's record."""
    per_problem: Dict[str, int] = {problem["task_id"]: 0 for problem in problems}
    cut_problems = set()
    for record in records:
        per_problem[record["task_id"]] += bool(record["passed"])
        if record.get("prompt_cut"):
            cut_problems.add(record["task_id"])
    counts = [(settings.samples, passed) for passed in per_problem.values()]
    report: Dict[str, Any] = {
        "benchmark": "humaneval",
        "problems": len(problems),
        "samples": settings.samples,
        "temperature": settings.temperature,
        "decoding": "sampled" if settings.temperature > 0 else "greedy",
    }
    report.update({f"pass@{k}": mean_pass_at_k(counts, k) for k in ks})
    report.update({
        "passed": sum(bool(record["passed"]) for record in records),
        "completions": len(records),
        "solved": sum(1 for passed in per_problem.values() if passed),
        "outcomes": dict(sorted(Counter(record["outcome"] for record in records).items())),
        "prompts_cut": len(cut_problems),
        "unfinished": sum(1 for record in records if not record.get("finished", True)),
        "resumed": resumed,
        "out": path,
    })
    return report


__all__ = ["HumanEvalSettings", "completions_of", "run_humaneval"]
