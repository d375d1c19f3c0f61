"""Verifiable reward for code: run each response against its example's tests in a sandbox.

Each example carries ``tests``: a list of Python snippets (usually ``assert`` lines such as
``assert f(2) == 10``), and optionally ``setup`` (trusted code run after the response's
code and before the tests). The response's code (the first fenced block if there is one,
else the whole text) runs in :func:`ift.rewards.sandbox.run_in_sandbox`; the score is the
fraction of tests that pass, and 0 on a timeout, memory error, crash, syntax error or a
top-level exception (and, by default, when the sandbox refused an operation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ift.rewards.base import Reward
from ift.rewards.sandbox import STATUSES, SandboxResult, run_in_sandbox

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("python", "py", "python3", "")


def extract_code(response: Optional[str]) -> str:
    """The code in a response.

    A response with Markdown fences gives the first fenced block tagged ``python``/``py``
    (or untagged), else the first block; an opening fence that is never closed gives
    everything after it. A response without fences is taken whole.
    """
    if not response:
        return ""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(response)]
    if not blocks:
        return response.strip("\n")
    for tag, body in blocks:
        if tag in _PYTHON_TAGS:
            return body.rstrip()
    return blocks[0][1].rstrip()


class CodeTestsReward(Reward):
    """Fraction of an example's tests that the response's code passes, run in a sandbox.

    Counters of what happened (``counts``: one entry per sandbox status plus ``responses``,
    ``runs``, ``cache_hits`` and ``empty``) accumulate over calls; :attr:`timeouts`,
    :attr:`crashes` and :attr:`blocked` read them. Identical (code, tests, setup) triples
    are run once and cached (timeouts and crashes are not cached).

    Args:
        timeout_s: wall-clock limit of one response's run (interpreter start included).
        cpu_s: CPU-seconds limit of one run; None: ``ceil(timeout_s)``.
        memory_mb: address-space limit of one run, in MiB.
        max_workers: sandboxes run at the same time (one process each).
        partial_credit: score passed/total; False: 1 only when every test passes.
        zero_on_blocked: score 0 when the sandbox refused an operation (network, files, ...).
        strict_asserts: check ``assert EXPR == LITERAL`` by exact type and value.
        tests_key: key of the list of tests in each example.
        setup_key: key of the optional setup code in each example.
        max_processes: RLIMIT_NPROC of a sandbox (all sandboxes share the unprivileged uid).
        drop_privileges: as root, run the code as ``nobody``.
        namespaces: run the code in fresh network and PID namespaces where permitted.
        cache_size: results remembered (0: no cache).
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        cpu_s: Optional[int] = None,
        memory_mb: int = 512,
        max_workers: int = 4,
        partial_credit: bool = True,
        zero_on_blocked: bool = True,
        strict_asserts: bool = True,
        tests_key: str = "tests",
        setup_key: str = "setup",
        max_processes: int = 32,
        drop_privileges: bool = True,
        namespaces: bool = True,
        cache_size: int = 4096,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"CodeTestsReward: timeout_s must be > 0, got {timeout_s}")
        if max_workers < 1:
            raise ValueError(f"CodeTestsReward: max_workers must be >= 1, got {max_workers}")
        self.timeout_s = float(timeout_s)
        self.cpu_s = None if cpu_s is None else int(cpu_s)
        self.memory_mb = int(memory_mb)
        self.max_workers = int(max_workers)
        self.partial_credit = bool(partial_credit)
        self.zero_on_blocked = bool(zero_on_blocked)
        self.strict_asserts = bool(strict_asserts)
        self.tests_key = tests_key
        self.setup_key = setup_key
        self.max_processes = int(max_processes)
        self.drop_privileges = bool(drop_privileges)
        self.namespaces = bool(namespaces)
        self.cache_size = int(cache_size)
        self.counts: Dict[str, int] = {}
        self._init_runtime()

    # ------------------------------------------------------------------ state
    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._cache: "OrderedDict[str, SandboxResult]" = OrderedDict()
        self.last_results: List[Optional[SandboxResult]] = []

    def __getstate__(self) -> Dict[str, Any]:
        # Locks, the cache and results are not saved (and torch.load's weights_only mode
        # accepts only plain values).
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k != "last_results"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.counts = dict(self.__dict__.get("counts") or {})
        self._init_runtime()

    @property
    def timeouts(self) -> int:
        return self.counts.get("timeout", 0)

    @property
    def crashes(self) -> int:
        return self.counts.get("crash", 0)

    @property
    def blocked(self) -> int:
        return self.counts.get("blocked", 0)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n

    # ------------------------------------------------------------------ scoring
    def _tests_of(self, index: int, example: Any) -> Tuple[List[str], str]:
        if not isinstance(example, dict) or self.tests_key not in example:
            keys = sorted(example) if isinstance(example, dict) else type(example).__name__
            raise KeyError(
                f"CodeTestsReward: example {index} has no {self.tests_key!r} field (it has {keys}); "
                f"give every prompt a list of test snippets such as ['assert f(2) == 4'], or set tests_key"
            )
        tests = example[self.tests_key]
        if isinstance(tests, str):
            tests = [tests]
        if not isinstance(tests, (list, tuple)) or not all(isinstance(t, str) for t in tests):
            raise TypeError(
                f"CodeTestsReward: example {index}: {self.tests_key!r} must be a list of strings "
                f"(Python test snippets), got {type(tests).__name__}"
            )
        if not tests:
            raise ValueError(f"CodeTestsReward: example {index} has an empty {self.tests_key!r} list")
        setup = example.get(self.setup_key) or ""
        if not isinstance(setup, str):
            raise TypeError(f"CodeTestsReward: example {index}: {self.setup_key!r} must be a string")
        return list(tests), setup

    def run(self, code: str, tests: Sequence[str], setup: str = "") -> SandboxResult:
        """Run ``code`` against ``tests`` in the sandbox with this reward's limits (no cache)."""
        return run_in_sandbox(
            code, tests, setup=setup, timeout_s=self.timeout_s, cpu_s=self.cpu_s, memory_mb=self.memory_mb,
            max_processes=self.max_processes, drop_privileges=self.drop_privileges,
            namespaces=self.namespaces, strict_asserts=self.strict_asserts,
        )

    def score_result(self, result: SandboxResult) -> float:
        """The score of one sandbox result under this reward's settings."""
        if result.status == "blocked" and self.zero_on_blocked:
            return 0.0
        fraction = result.fraction_passed  # 0 unless the run completed
        if self.partial_credit:
            return fraction
        return 1.0 if fraction == 1.0 else 0.0

    def __call__(self, prompts: List[str], responses: List[str], examples: List[Dict[str, Any]]) -> List[float]:
        jobs = []
        for i, (response, example) in enumerate(zip(responses, examples)):
            tests, setup = self._tests_of(i, example)
            jobs.append((extract_code(response), tests, setup))
        self._count("responses", len(jobs))
        keys = [hashlib.sha256(repr(job).encode("utf-8", "surrogatepass")).hexdigest() for job in jobs]
        results: Dict[str, SandboxResult] = {}
        to_run: Dict[str, tuple] = {}
        with self._lock:
            for key, job in zip(keys, jobs):
                if key in results or key in to_run:
                    continue
                if key in self._cache:
                    self._cache.move_to_end(key)
                    results[key] = self._cache[key]
                elif job[0].strip():
                    to_run[key] = job
        self._count("cache_hits", sum(1 for k in keys if k in results))
        empty = SandboxResult(status="error", detail="no code in the response")
        if to_run:
            items = list(to_run.items())
            workers = min(self.max_workers, len(items))
            if workers == 1:
                outputs = [self.run(*job) for _, job in items]
            else:
                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="code-reward")
                try:
                    outputs = list(pool.map(lambda item: self.run(*item[1]), items))
                finally:
                    # On Ctrl-C or a stop signal the queued programs are dropped, not run first
                    # (the ones running end within their timeout).
                    pool.shutdown(wait=True, cancel_futures=True)
            self._count("runs", len(items))
            for (key, _), result in zip(items, outputs):
                results[key] = result
                self._count(result.status)
                if self.cache_size > 0 and result.status not in ("timeout", "crash"):
                    with self._lock:
                        self._cache[key] = result
                        while len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)
        scores, last = [], []
        for key, job in zip(keys, jobs):
            result = results.get(key)
            if result is None:
                self._count("empty")
                result = dataclasses.replace(empty, total=len(job[1]), outcomes=["missing"] * len(job[1]))
            last.append(result)
            scores.append(self.score_result(result))
        self.last_results = last
        return scores

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__getstate__().items() if k != "counts")
        return f"{type(self).__name__}({fields})"


__all__ = ["CodeTestsReward", "extract_code", "STATUSES"]
