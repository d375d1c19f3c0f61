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
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

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

_CHILD_SOURCE: Optional[str] = None
_NOBODY = 65534


def _child_source() -> str:
    global _CHILD_SOURCE
    if _CHILD_SOURCE is None:
        _CHILD_SOURCE = (Path(__file__).with_name("_sandbox_child.py")).read_text(encoding="utf-8")
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
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    drop = bool(drop_privileges and is_root)
    if drop:
        default_uid, default_gid = _unprivileged_ids()
        uid = default_uid if uid is None else int(uid)
        gid = default_gid if gid is None else int(gid)
    base = workdir_base or tempfile.gettempdir()
    if drop and not _traversable_by_others(base):
        if workdir_base is not None or not _traversable_by_others("/tmp"):
            raise RuntimeError(
                f"run_in_sandbox: {base} is not reachable by uid {uid}: pass a workdir_base that "
                "every user can enter (e.g. /tmp), or drop_privileges=False"
            )
        base = "/tmp"
    workdir = tempfile.mkdtemp(prefix="ift-sandbox-", dir=base)
    nonce = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    proc: Optional[subprocess.Popen] = None
    try:
        if drop:
            os.chown(workdir, uid, gid)
        os.chmod(workdir, 0o700)
        job = {
            "nonce": nonce,
            "result_fd": write_fd,
            "program": program,
            "setup": setup or "",
            "tests": tests,
            "workdir": workdir,
            "uid": uid if drop else None,
            "gid": gid if drop else None,
            "namespaces": bool(namespaces),
            "audit": bool(audit_hook),
            "strict_asserts": bool(strict_asserts),
            "preload": list(preload),
            "limits": {
                "cpu_s": cpu_limit,
                "memory_bytes": int(memory_mb) * 1024 * 1024,
                "file_bytes": int(max_file_mb) * 1024 * 1024,
                "open_files": int(max_open_files),
                "processes": int(max_processes),
            },
        }
        payload = json.dumps(job).encode("utf-8")
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUTF8": "1",
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, *_python_flags(), "-c", _child_source()],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(write_fd,), cwd=workdir, env=env, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            return SandboxResult(status="crash", total=len(tests), outcomes=["missing"] * len(tests),
                                 duration_s=time.monotonic() - start, detail=f"could not start the sandbox: {exc}")
        finally:
            os.close(write_fd)
        deadline = start + float(timeout_s)
        records, stderr, timed_out = _pump(proc, payload, read_fd, deadline, stderr_chars)
        returncode, cpu = _kill_and_reap(proc)
    finally:
        os.close(read_fd)
        if proc is not None and proc.returncode is None:  # an exception mid-way: never leave it running
            _kill_and_reap(proc)
        _remove_tree(workdir)
    result = _interpret(records, nonce, len(tests), timed_out, returncode, cpu, cpu_limit)
    result.duration_s = time.monotonic() - start
    result.stderr_tail = stderr.decode("utf-8", "replace")[-stderr_chars:]
    result.pid = proc.pid
    result.workdir = workdir
    return result


def _pump(proc: subprocess.Popen, payload: bytes, result_fd: int, deadline: float, keep: int):
    """Write the job, read results and stderr until both close, the process ends, or the deadline."""
    selector = selectors.DefaultSelector()
    stdin_fd, stderr_fd = proc.stdin.fileno(), proc.stderr.fileno()
    os.set_blocking(stdin_fd, False)
    selector.register(stdin_fd, selectors.EVENT_WRITE, "stdin")
    selector.register(stderr_fd, selectors.EVENT_READ, "stderr")
    selector.register(result_fd, selectors.EVENT_READ, "result")
    records, stderr = bytearray(), bytearray()
    max_records = 1 << 20
    view, offset, open_readers, timed_out = memoryview(payload), 0, 2, False

    def close_stdin():
        selector.unregister(stdin_fd)
        try:
            proc.stdin.close()
        except OSError:
            pass

    try:
        while open_readers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            events = selector.select(min(remaining, 0.05))
            if not events and _exited(proc.pid):
                # The leader is gone but something still holds a pipe: take what is there.
                for fd, sink in ((result_fd, records), (stderr_fd, stderr)):
                    os.set_blocking(fd, False)
                    try:
                        sink.extend(os.read(fd, 1 << 16))
                    except OSError:
                        pass
                del records[max_records:]
                break
            for key, _ in events:
                if key.data == "stdin":
                    try:
                        offset += os.write(stdin_fd, view[offset: offset + (1 << 16)])
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        close_stdin()
                        continue
                    if offset >= len(payload):
                        close_stdin()
                    continue
                data = os.read(key.fd, 1 << 16)
                if not data:
                    selector.unregister(key.fd)
                    open_readers -= 1
                    continue
                if key.data == "result":
                    if len(records) < max_records:
                        records.extend(data[: max_records - len(records)])
                else:
                    stderr.extend(data)
                    if len(stderr) > 4 * keep + 4096:
                        del stderr[: len(stderr) - 2 * keep]
    finally:
        if not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
        selector.close()
        proc.stderr.close()
    return bytes(records), bytes(stderr), timed_out


def _exited(pid: int) -> bool:
    """Whether ``pid`` (our child) has exited, without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_and_reap(proc: subprocess.Popen):
    """SIGKILL the whole process group (it is still ours: the leader is not reaped yet),
    then reap the leader. Returns ``(returncode, cpu seconds)``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    cpu = 0.0
    if proc.returncode is not None:
        return proc.returncode, cpu
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        cpu = usage.ru_utime + usage.ru_stime
        proc.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    except ChildProcessError:
        proc.wait()
    return proc.returncode, cpu


def _remove_tree(path: str) -> None:
    def make_writable(function, target, _exc):
        try:
            os.chmod(target, 0o700)
            parent = os.path.dirname(target)
            os.chmod(parent, 0o700)
            function(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable)
    if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)


def _interpret(records: bytes, nonce: str, total: int, timed_out: bool, returncode: Optional[int],
               cpu: float, cpu_limit: int) -> SandboxResult:
    """Turn the nonce-tagged lines into a result; lines without the nonce are counted, not read."""
    expected = nonce.encode("ascii")
    outcomes: List[Optional[str]] = [None] * total
    forged, invalid = 0, []
    started = program = setup = end = None
    isolation: List[str] = []
    blocked, blocked_events = 0, []
    for raw in records.split(b"\n"):
        if not raw.strip():
            continue
        head, _, rest = raw.partition(b" ")
        if not hmac.compare_digest(head, expected):
            forged += 1
            continue
        words = rest.decode("utf-8", "replace").split(" ")
        kind = words[0]
        if end is not None:
            invalid.append("a report after the end")
        elif kind == "start" and started is None and len(words) == 2:
            started = words[1]
            isolation = [w for w in words[1].split(",") if w and w != "error"]
        elif kind == "program" and program is None and len(words) == 2:
            program = words[1]
        elif kind == "setup" and setup is None and len(words) == 2:
            setup = words[1]
        elif kind == "test" and len(words) == 3 and words[1].isdigit() and int(words[1]) < total \
                and outcomes[int(words[1])] is None and words[2] in ("pass", "fail", "error", "memory", "broken"):
            outcomes[int(words[1])] = words[2]
        elif kind == "end" and len(words) == 5 and all(w.isdigit() for w in words[1:4]):
            end = (int(words[1]), int(words[2]))
            blocked = int(words[3])
            blocked_events = [] if words[4] == "-" else words[4].split(",")
        else:
            invalid.append(f"unexpected report {kind!r}")
    passed = sum(1 for o in outcomes if o == "pass")
    if end is not None and (end[0] != passed or end[1] != total):
        invalid.append(f"end says {end[0]}/{end[1]}, tests reported {passed}/{total}")
    signal_number = -returncode if returncode is not None and returncode < 0 else (
        returncode - 128 if returncode is not None and returncode > 128 else None)

    if timed_out:
        status, detail = "timeout", "wall-clock deadline reached"
    elif started is None or started == "error":
        status, detail = "crash", f"the sandbox did not start (exit status {returncode})"
    elif program == "syntax_error":
        status, detail = "syntax_error", "the program does not compile"
    elif "memory" in (program, setup) or "memory" in outcomes:
        status, detail = "memory", f"MemoryError (address-space limit)"
    elif program == "error":
        status, detail = "error", "the program raised at top level"
    elif setup == "error":
        status, detail = "setup_error", "the example's setup code raised"
    elif end is None:
        if signal_number == signal.SIGXCPU or (signal_number == signal.SIGKILL and cpu >= cpu_limit):
            status, detail = "timeout", f"CPU limit ({cpu_limit} s) reached"
        else:
            why = f"killed by signal {signal_number}" if signal_number else f"exit status {returncode}"
            status, detail = "crash", f"the process ended before reporting its end ({why})"
    elif invalid:
        status, detail = "invalid", "; ".join(invalid[:3])
    elif blocked:
        status, detail = "blocked", f"the audit hook refused {blocked} operation(s): {', '.join(blocked_events)}"
    else:
        status, detail = "ok", f"{passed}/{total} tests passed"
    return SandboxResult(
        status=status, passed=passed, total=total, outcomes=[o or "missing" for o in outcomes],
        blocked=blocked, blocked_events=blocked_events, isolation=isolation, returncode=returncode,
        cpu_s=cpu, forged_lines=forged, detail=detail,
    )


def sandbox_isolation(**kwargs) -> List[str]:
    """The layers a sandbox gets on this machine (runs an empty program), e.g.
    ``['netns', 'pidns', 'rlimits', 'uid', 'pdeathsig', 'audit']``."""
    return run_in_sandbox("", (), **kwargs).isolation
