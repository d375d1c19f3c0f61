"""Run untrusted Python code against tests in a separate, locked-down process.

:func:`run_in_sandbox` starts a fresh interpreter (``sys.executable -P -s -S -B``) for one
program and its tests and returns a :class:`SandboxResult`. Layers, outermost first (what
each one does and does not guarantee is in ``docs/code_rewards.md``):

* **process**: a new session and process group, an empty environment (``PATH``, ``HOME``
  and ``TMPDIR`` pointing at a fresh temporary working directory that is removed
  afterwards), stdin from ``/dev/null``, stdout discarded, a wall-clock deadline; after
  the deadline, and always once the run is over, the whole process group gets SIGKILL;
* **namespaces** (when the kernel permits ``unshare``): a fresh network namespace (no
  interface but a downed loopback) and a PID namespace whose PID 1 runs the code, so
  every process it starts dies with it; without root, an unprivileged user namespace is
  tried for the same;
* **resource limits**: CPU seconds, address space, processes, file size, open files, no
  core dumps;
* **privileges**: when the parent is root, the code runs as an unprivileged uid/gid
  (``nobody`` by default) with no supplementary groups: it cannot read root's files,
  signal root's processes, or escape the process limit;
* **audit hook** (in the child, before the code runs): refuses sockets, process creation,
  signals, ``ctypes``, frame/GC introspection, writes outside the working directory and
  reads outside the standard library; bypassable in principle, hence the layers above;
* **result channel**: outcomes come back on a private pipe, one line per test, each
  prefixed by a random nonce that the code never sees; anything printed is ignored.

The code runs with the standard library only (``-S``: no site-packages).

Where things are: the child program is ``_sandbox_child.py`` with its parts
``_sandbox_child_audit.py`` and ``_sandbox_child_asserts.py``; the parent's process
plumbing is :mod:`ift.rewards._sandbox_process`, the reading of the child's reports
:mod:`ift.rewards._sandbox_reports`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ift.rewards._sandbox_process import kill_and_reap, pump, remove_tree
from ift.rewards._sandbox_reports import classify, read_reports

#: Modules imported before the privilege drop, so that code can ``import`` them even where
#: the interpreter's own files are not readable by the unprivileged user (e.g. a Python
#: installed under ``/root``). Other standard-library modules import when readable.
DEFAULT_PRELOAD = (
    "math", "cmath", "re", "string", "itertools", "functools", "collections", "collections.abc",
    "heapq", "bisect", "operator", "random", "fractions", "copy", "typing", "array", "textwrap",
    "unicodedata", "numbers",
)

#: Every status a :class:`SandboxResult` can have.
STATUSES = (
    "ok",            # ran to the end; ``passed`` of ``total`` tests passed
    "blocked",       # ran to the end, but the audit hook refused at least one operation
    "syntax_error",  # the program does not compile
    "error",         # the program raised at top level (its tests did not run)
    "setup_error",   # the example's setup code raised
    "timeout",       # wall-clock deadline or CPU limit
    "memory",        # MemoryError (address-space limit) in the program, setup or a test
    "crash",         # the process ended without reporting (killed, os._exit, startup failure)
    "invalid",       # contradictory reports carrying the nonce (should never happen)
)

#: The child program's parts, joined in this order into the one source the sandbox runs
#: (``-c``): helpers first, the entry point last. Each uses the standard library only.
_CHILD_PARTS = ("_sandbox_child_audit.py", "_sandbox_child_asserts.py", "_sandbox_child.py")
_CHILD_SOURCE: Optional[str] = None
_NOBODY = 65534


def _child_source() -> str:
    """The child program's source (read once): its parts joined, see :data:`_CHILD_PARTS`."""
    global _CHILD_SOURCE
    if _CHILD_SOURCE is None:
        here = Path(__file__).parent
        _CHILD_SOURCE = "\n\n".join((here / part).read_text(encoding="utf-8") for part in _CHILD_PARTS)
    return _CHILD_SOURCE


@dataclasses.dataclass
class SandboxResult:
    """What one sandboxed run reports.

    Attributes:
        status: one of :data:`STATUSES`.
        passed: tests that passed (only tests reported before the end count).
        total: tests given.
        outcomes: per test: ``pass``, ``fail`` (assertion), ``error`` (other exception),
            ``memory``, ``broken`` (the test itself does not parse) or ``missing`` (never
            reported: the run stopped first).
        blocked: operations the audit hook refused.
        blocked_events: the first few refused audit events.
        isolation: the layers that were active: ``rlimits``, ``uid``, ``netns``, ``pidns``,
            ``userns``, ``pdeathsig``, ``audit``.
        returncode: the process's exit status (negative: killed by that signal).
        duration_s: wall-clock seconds.
        cpu_s: CPU seconds of the process and its waited-for children.
        stderr_tail: the last characters of the child's stderr (exceptions of failed tests).
        forged_lines: lines on the result pipe without the nonce (ignored).
        detail: one sentence on why the status is what it is.
        pid: the sandbox process's pid (also its session and process-group id).
        workdir: the temporary working directory (already removed).
    """

    status: str
    passed: int = 0
    total: int = 0
    outcomes: List[str] = dataclasses.field(default_factory=list)
    blocked: int = 0
    blocked_events: List[str] = dataclasses.field(default_factory=list)
    isolation: List[str] = dataclasses.field(default_factory=list)
    returncode: Optional[int] = None
    duration_s: float = 0.0
    cpu_s: float = 0.0
    stderr_tail: str = ""
    forged_lines: int = 0
    detail: str = ""
    pid: Optional[int] = None
    workdir: Optional[str] = None

    @property
    def completed(self) -> bool:
        """The run reached its end (status ``ok`` or ``blocked``)."""
        return self.status in ("ok", "blocked")

    @property
    def fraction_passed(self) -> float:
        """``passed / total`` for a completed run, else 0."""
        if not self.completed or self.total == 0:
            return 0.0
        return self.passed / self.total


def _unprivileged_ids() -> tuple:
    try:
        import pwd

        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except (ImportError, KeyError):
        return _NOBODY, _NOBODY


def _traversable_by_others(path: str) -> bool:
    """Every ancestor of ``path`` is searchable by 'others' (so a dropped uid can enter it)."""
    current = Path(path).resolve()
    for folder in [current, *current.parents]:
        try:
            if not folder.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _python_flags() -> List[str]:
    # -I would also ignore PYTHONHASHSEED; the environment is ours and empty anyway, so the
    # same isolation is -P (no script/cwd on sys.path) -s (no user site) -S (no site) with
    # PYTHONHASHSEED=0 for deterministic set/dict order of strings.
    flags = ["-s", "-S", "-B"]
    if sys.version_info >= (3, 11):
        flags.insert(0, "-P")
    return flags


def run_in_sandbox(
    program: str,
    tests: Sequence[str] = (),
    *,
    setup: str = "",
    timeout_s: float = 5.0,
    cpu_s: Optional[int] = None,
    memory_mb: int = 512,
    max_processes: int = 32,
    max_file_mb: int = 16,
    max_open_files: int = 64,
    drop_privileges: bool = True,
    uid: Optional[int] = None,
    gid: Optional[int] = None,
    namespaces: bool = True,
    audit_hook: bool = True,
    strict_asserts: bool = True,
    preload: Sequence[str] = DEFAULT_PRELOAD,
    workdir_base: Optional[str] = None,
    stderr_chars: int = 2000,
) -> SandboxResult:
    """Run ``program``, then ``setup``, then each test (Python source, e.g. ``assert f(2) == 4``).

    Args:
        program: the untrusted code (a module body).
        tests: test snippets, each run on its own: one failing or raising test does not
            stop the others. They run in the program's namespace.
        setup: trusted code run after the program and before the tests (same namespace).
        timeout_s: wall-clock limit of the whole run, startup included.
        cpu_s: CPU-seconds limit (RLIMIT_CPU); default ``ceil(timeout_s)``.
        memory_mb: address-space limit (RLIMIT_AS) of the process, in MiB.
        max_processes: RLIMIT_NPROC: processes (and threads) of the sandbox's uid; with
            the uid drop this counts every sandbox running at the same time.
        max_file_mb: largest file the code may write (RLIMIT_FSIZE).
        max_open_files: RLIMIT_NOFILE.
        drop_privileges: when running as root, run the code as ``uid``/``gid``.
        uid: unprivileged uid (default: ``nobody``, else 65534).
        gid: unprivileged gid (default: ``nobody``'s group, else 65534).
        namespaces: try fresh network and PID namespaces (``unshare``).
        audit_hook: install the in-process audit hook (turn off only to test the OS layers).
        strict_asserts: check ``assert EXPR == LITERAL`` by exact type and value (an object
            whose ``__eq__`` always returns True does not pass); other tests run as written.
        preload: modules to import before the privilege drop.
        workdir_base: folder for the temporary working directory (default: the system's).
        stderr_chars: how much of the child's stderr to keep.

    Returns:
        A :class:`SandboxResult`; this function does not raise for anything the code does.
    """
    start = time.monotonic()
    tests = [str(t) for t in tests]
    cpu_limit = int(cpu_s) if cpu_s is not None else max(1, int(-(-float(timeout_s) // 1)))
    drop, uid, gid = _child_identity(drop_privileges, uid, gid)
    workdir = tempfile.mkdtemp(prefix="ift-sandbox-", dir=_workdir_base(workdir_base, drop, uid))
    nonce = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    proc: Optional[subprocess.Popen] = None
    try:
        if drop:
            os.chown(workdir, uid, gid)
        os.chmod(workdir, 0o700)
        payload = _job_payload(
            nonce, write_fd, program, setup, tests, workdir, uid if drop else None, gid if drop else None,
            namespaces, audit_hook, strict_asserts, preload,
            _limits(cpu_limit, memory_mb, max_file_mb, max_open_files, max_processes),
        )
        try:
            proc = _start_child(workdir, write_fd)
        except OSError as exc:
            return SandboxResult(status="crash", total=len(tests), outcomes=["missing"] * len(tests),
                                 duration_s=time.monotonic() - start, detail=f"could not start the sandbox: {exc}")
        finally:
            os.close(write_fd)
        records, stderr, timed_out = pump(proc, payload, read_fd, start + float(timeout_s), stderr_chars)
        returncode, cpu = kill_and_reap(proc)
    finally:
        os.close(read_fd)
        if proc is not None and proc.returncode is None:  # an exception mid-way: never leave it running
            kill_and_reap(proc)
        remove_tree(workdir)
    result = _interpret(records, nonce, len(tests), timed_out, returncode, cpu, cpu_limit)
    result.duration_s, result.pid, result.workdir = time.monotonic() - start, proc.pid, workdir
    result.stderr_tail = stderr.decode("utf-8", "replace")[-stderr_chars:]
    return result


def _child_identity(
    drop_privileges: bool, uid: Optional[int], gid: Optional[int]
) -> Tuple[bool, Optional[int], Optional[int]]:
    """``(drop, uid, gid)``: whether the child drops root (only when we are root), and to
    which ids (default: ``nobody``'s)."""
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    drop = bool(drop_privileges and is_root)
    if drop:
        default_uid, default_gid = _unprivileged_ids()
        uid = default_uid if uid is None else int(uid)
        gid = default_gid if gid is None else int(gid)
    return drop, uid, gid


def _workdir_base(workdir_base: Optional[str], drop: bool, uid: Optional[int]) -> str:
    """The folder to make the working directory in: one the dropped uid can enter."""
    base = workdir_base or tempfile.gettempdir()
    if drop and not _traversable_by_others(base):
        if workdir_base is not None or not _traversable_by_others("/tmp"):
            raise RuntimeError(
                f"run_in_sandbox: {base} is not reachable by uid {uid}: pass a workdir_base that "
                "every user can enter (e.g. /tmp), or drop_privileges=False"
            )
        base = "/tmp"
    return base


def _job_payload(nonce: str, result_fd: int, program: str, setup: str, tests: List[str], workdir: str,
                 uid: Optional[int], gid: Optional[int], namespaces: bool, audit_hook: bool,
                 strict_asserts: bool, preload: Sequence[str], limits: dict) -> bytes:
    """The job, as the JSON that :mod:`ift.rewards._sandbox_child` reads on its stdin."""
    job = {
        "nonce": nonce,
        "result_fd": result_fd,
        "program": program,
        "setup": setup or "",
        "tests": tests,
        "workdir": workdir,
        "uid": uid,
        "gid": gid,
        "namespaces": bool(namespaces),
        "audit": bool(audit_hook),
        "strict_asserts": bool(strict_asserts),
        "preload": list(preload),
        "limits": limits,
    }
    return json.dumps(job).encode("utf-8")


def _limits(cpu_limit: int, memory_mb: int, max_file_mb: int, max_open_files: int, max_processes: int) -> dict:
    """The job's resource limits, in the units of ``setrlimit``."""
    return {
        "cpu_s": cpu_limit,
        "memory_bytes": int(memory_mb) * 1024 * 1024,
        "file_bytes": int(max_file_mb) * 1024 * 1024,
        "open_files": int(max_open_files),
        "processes": int(max_processes),
    }


def _start_child(workdir: str, result_fd: int) -> subprocess.Popen:
    """Start the child interpreter in its own session, with an empty environment of our own."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUTF8": "1",
    }
    return subprocess.Popen(
        [sys.executable, *_python_flags(), "-c", _child_source()],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        pass_fds=(result_fd,), cwd=workdir, env=env, start_new_session=True, close_fds=True,
    )


def _interpret(records: bytes, nonce: str, total: int, timed_out: bool, returncode: Optional[int],
               cpu: float, cpu_limit: int) -> SandboxResult:
    """Turn the nonce-tagged lines into a result; lines without the nonce are counted, not read."""
    reports = read_reports(records, nonce, total)
    status, detail = classify(reports, timed_out, returncode, cpu, cpu_limit)
    return SandboxResult(
        status=status, passed=reports.passed, total=total, outcomes=[o or "missing" for o in reports.outcomes],
        blocked=reports.blocked, blocked_events=reports.blocked_events, isolation=reports.isolation,
        returncode=returncode, cpu_s=cpu, forged_lines=reports.forged, detail=detail,
    )


def sandbox_isolation(**kwargs) -> List[str]:
    """The layers a sandbox gets on this machine (runs an empty program), e.g.
    ``['netns', 'pidns', 'rlimits', 'uid', 'pdeathsig', 'audit']``."""
    return run_in_sandbox("", (), **kwargs).isolation
