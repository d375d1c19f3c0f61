"""Reading what a sandbox reported (see :mod:`ift.rewards.sandbox`): the lines of its
result pipe, each tagged with the run's nonce, and the status they add up to.

Lines without the nonce are counted, never read: the code under test may print anything,
but cannot know the nonce.
"""

from __future__ import annotations

import dataclasses
import hmac
import signal
from typing import List, Optional, Tuple

#: A test's outcome as the child reports it.
TEST_OUTCOMES = ("pass", "fail", "error", "memory", "broken")


@dataclasses.dataclass
class Reports:
    """The nonce-tagged records of one run, parsed (``None``: never reported)."""

    outcomes: List[Optional[str]]
    forged: int = 0
    invalid: List[str] = dataclasses.field(default_factory=list)
    started: Optional[str] = None
    program: Optional[str] = None
    setup: Optional[str] = None
    end: Optional[Tuple[int, int]] = None
    isolation: List[str] = dataclasses.field(default_factory=list)
    blocked: int = 0
    blocked_events: List[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> int:
        """Tests reported as passed."""
        return sum(1 for o in self.outcomes if o == "pass")


def read_reports(records: bytes, nonce: str, total: int) -> Reports:
    """Parse the result pipe's bytes; anything out of order or malformed goes to ``invalid``."""
    expected = nonce.encode("ascii")
    reports = Reports(outcomes=[None] * total)
    outcomes, invalid = reports.outcomes, reports.invalid
    for raw in records.split(b"\n"):
        if not raw.strip():
            continue
        head, _, rest = raw.partition(b" ")
        if not hmac.compare_digest(head, expected):
            reports.forged += 1
            continue
        words = rest.decode("utf-8", "replace").split(" ")
        kind = words[0]
        if reports.end is not None:
            invalid.append("a report after the end")
        elif kind == "start" and reports.started is None and len(words) == 2:
            reports.started = words[1]
            reports.isolation = [w for w in words[1].split(",") if w and w != "error"]
        elif kind == "program" and reports.program is None and len(words) == 2:
            reports.program = words[1]
        elif kind == "setup" and reports.setup is None and len(words) == 2:
            reports.setup = words[1]
        elif kind == "test" and len(words) == 3 and words[1].isdigit() and int(words[1]) < total \
                and outcomes[int(words[1])] is None and words[2] in TEST_OUTCOMES:
            outcomes[int(words[1])] = words[2]
        elif kind == "end" and len(words) == 5 and all(w.isdigit() for w in words[1:4]):
            reports.end = (int(words[1]), int(words[2]))
            reports.blocked = int(words[3])
            reports.blocked_events = [] if words[4] == "-" else words[4].split(",")
        else:
            invalid.append(f"unexpected report {kind!r}")
    passed = reports.passed
    if reports.end is not None and (reports.end[0] != passed or reports.end[1] != total):
        invalid.append(f"end says {reports.end[0]}/{reports.end[1]}, tests reported {passed}/{total}")
    return reports


def _signal_number(returncode: Optional[int]) -> Optional[int]:
    """The signal that ended the process: ``-returncode``, or ``returncode - 128`` as a
    PID-namespace parent mirrors it; None for a normal exit."""
    if returncode is not None and returncode < 0:
        return -returncode
    return returncode - 128 if returncode is not None and returncode > 128 else None


def classify(reports: Reports, timed_out: bool, returncode: Optional[int], cpu: float,
             cpu_limit: int) -> Tuple[str, str]:
    """``(status, detail)`` of a run: the first of the statuses below that applies."""
    program, setup, outcomes = reports.program, reports.setup, reports.outcomes
    signal_number = _signal_number(returncode)
    if timed_out:
        return "timeout", "wall-clock deadline reached"
    if reports.started is None or reports.started == "error":
        return "crash", f"the sandbox did not start (exit status {returncode})"
    if program == "syntax_error":
        return "syntax_error", "the program does not compile"
    if "memory" in (program, setup) or "memory" in outcomes:
        return "memory", "MemoryError (address-space limit)"
    if program == "error":
        return "error", "the program raised at top level"
    if setup == "error":
        return "setup_error", "the example's setup code raised"
    if reports.end is None:
        # The kernel kills at RLIMIT_CPU by its own tick accounting; the rusage read when the
        # process is reaped can come out under the limit (seen: 0.9 s of a 1 s limit with both
        # cores busy). A SIGKILL after half the CPU budget or more is the CPU limit's.
        if signal_number == signal.SIGXCPU or (signal_number == signal.SIGKILL and cpu >= 0.5 * cpu_limit):
            return "timeout", f"CPU limit ({cpu_limit} s) reached"
        why = f"killed by signal {signal_number}" if signal_number else f"exit status {returncode}"
        return "crash", f"the process ended before reporting its end ({why})"
    if reports.invalid:
        return "invalid", "; ".join(reports.invalid[:3])
    if reports.blocked:
        return "blocked", f"the audit hook refused {reports.blocked} operation(s): {', '.join(reports.blocked_events)}"
    return "ok", f"{reports.passed}/{len(outcomes)} tests passed"
