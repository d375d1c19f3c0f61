"""One HumanEval evaluation: generate completions, check them in the sandbox, report pass@k."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ift.lab.code.completions import completion_from_answer, cut_at_stops, generate_texts
from ift.lab.code.humaneval import HumanEvalError, HumanEvalSandbox
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

    The report: ``benchmark``, ``problems``, ``samples``, ``temperature``, ``decoding``,
    ``pass@k`` for each k, ``passed`` (completions that passed), ``completions``, ``solved``
    (problems with at least one pass), ``outcomes`` (completions per :class:`Verdict`
    outcome), ``prompts_cut``, ``unfinished`` and ``out`` (the sample file, or None).
    ``out`` must be open; it is committed here (or left partial when this raises).
    ``progress(done, total)`` follows the generation, batch by batch.
    """
    ks = settings.ks()
    sandbox = sandbox or HumanEvalSandbox()
    torch.manual_seed(settings.seed)
    if settings.device.startswith("cuda"):
        torch.cuda.manual_seed_all(settings.seed)
    was_training = policy.training
    try:
        generated = generate_texts(policy, tokenizer, [problem["prompt"] for problem in problems], chat=settings.chat,
                                   samples=settings.samples, temperature=settings.temperature,
                                   max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                                   device=settings.device, progress=progress)
    except ValueError as error:
        raise HumanEvalError(str(error)) from None
    finally:
        policy.train(was_training)
    jobs = [(problem, completion) for problem, texts in zip(problems, generated.texts)
            for completion in completions_of(problem, texts, settings)]
    verdicts = sandbox.check_all(jobs)
    if out is not None:
        out.write({"task_id": problem["task_id"], "completion": completion, "passed": verdict.passed,
                   "outcome": verdict.outcome} for (problem, completion), verdict in zip(jobs, verdicts))
    per_problem: Dict[str, int] = {problem["task_id"]: 0 for problem in problems}
    for verdict in verdicts:
        per_problem[verdict.task_id] += verdict.passed
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
        "passed": sum(verdict.passed for verdict in verdicts),
        "completions": len(verdicts),
        "solved": sum(1 for passed in per_problem.values() if passed),
        "outcomes": dict(sorted(Counter(verdict.outcome for verdict in verdicts).items())),
        "prompts_cut": generated.cut,
        "unfinished": generated.unfinished,
        "out": out.commit() if out is not None else None,
    })
    return report


__all__ = ["HumanEvalSettings", "completions_of", "run_humaneval"]
