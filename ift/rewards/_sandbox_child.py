"""The program that runs inside every sandbox process (see :mod:`ift.rewards.sandbox`).

The parent runs ``python -P -s -S -B -c <source>`` with an empty environment, in a fresh
temporary directory, and writes one JSON object on its stdin. ``<source>`` is this file
joined after its two helper parts, :mod:`ift.rewards._sandbox_child_audit` and
:mod:`ift.rewards._sandbox_child_asserts` (see ``sandbox._CHILD_PARTS``), so all three
use the standard library only and never import ``ift``. The training process never
imports these files to run them: nothing happens at import time.

What it does, in order (every step before the untrusted code runs):

1. read the job (program, setup, tests, limits, a random nonce, the result pipe's fd);
2. import a few common standard-library modules (the privilege drop may make the
   standard library unreadable afterwards);
3. enter fresh network and PID namespaces when the kernel allows (``unshare``); with a PID
   namespace it forks, and the child is PID 1 of the namespace, so that every process it
   starts dies with it;
4. set resource limits (CPU, address space, processes, file size, open files, no core);
5. as root: drop to an unprivileged uid/gid (no supplementary groups); then ask the
   kernel to SIGKILL it if its parent dies;
6. hide the ``ctypes`` module and a few process-control functions, and install an audit
   hook (``sys.addaudithook``) that refuses network, process, signal, ctypes, introspection
   and file operations outside the working directory;
7. run the program, then the setup, then each test, each in the namespace of a module
   named ``solution`` (``if __name__ == "__main__":`` blocks do not run), and report each
   outcome on the result pipe as a line that starts with the nonce.

Every step is a function; the steps up to 6 run before any untrusted code, and whatever
is used after step 7 starts (reporting, comparison, the audit hook, the run itself) is a
closure over locals bound before it, or an argument: untrusted code can replace module
attributes and builtins, and even empty this program's module namespace, but not the
locals and closure cells of these functions, and step 7 never looks a name up in the
module. The nonce lives only in locals and closures; reaching it needs frame or object
introspection, which the audit hook refuses (``sys._getframe``, ``tb_frame``, ``gc``...).
Audit hooks are not a security boundary (CPython bugs, crafted objects): the OS layers
(uid, namespaces, rlimits, process-group kill) are what protect the machine.
"""

import json
import os
import posix
import resource
import signal
import sys
import types

if __name__ != "__main__":  # imported as a module; in the sandbox the parts are one program
    from ift.rewards._sandbox_child_asserts import _exact_comparison, _prepare_tests
    from ift.rewards._sandbox_child_audit import _audit_hook

#: Files every sandbox may read besides the standard library and its working directory.
_READ_FILES = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero")


def _read_job():
    """Step 1: the JSON job from stdin, which is then pointed at ``/dev/null``."""
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    job = json.loads(b"".join(chunks).decode("utf-8"))
    del chunks
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return job


def _reporter(result_fd, nonce):
    """Closures ``(emit, note, describe)``: a record on the result pipe, a line on stderr,
    and an exception as one short line. Only this process reports, not a forked copy."""
    _write, _exit, _getpid = os.write, os._exit, os.getpid
    _type, _str, _BaseException = type, str, BaseException
    my_pid = _getpid()

    def emit(text):
        """One record on the result pipe; a forked copy of the harness never reports."""
        if _getpid() != my_pid:
            _exit(0)
        try:
            _write(result_fd, (nonce + " " + text + "\n").encode("utf-8", "replace"))
        except _BaseException:
            pass

    def note(text):
        """A line on stderr, for the parent's stderr tail (not trusted, not parsed)."""
        try:
            _write(2, (text[:500] + "\n").encode("utf-8", "replace"))
        except _BaseException:
            pass

    def describe(exc):
        try:
            name = _str(_type(exc).__name__)
        except _BaseException:
            name = "Exception"
        try:
            text = _str(exc)
        except _BaseException:
            text = ""
        return (name + ": " + text).replace("\n", " ")[:300]

    return emit, note, describe


def _preload(job):
    """Step 2: import the job's preload modules; return the paths readable without
    restriction (the standard library the interpreter runs from, plus extra ones)."""
    for name in job.get("preload", []):
        try:
            __import__(name)
        except Exception:
            pass
    read_roots = []
    for entry in list(sys.path) + [os.path.dirname(os.__file__)]:
        if entry and os.path.isabs(entry) and os.path.exists(entry):
            read_roots.append(os.path.normpath(entry))
    read_roots += [os.path.normpath(p) for p in job.get("extra_read_paths", [])]
    return read_roots


def _load_libc():
    """libc through ctypes (for ``unshare`` and ``prctl``), or None where unavailable."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except Exception:
        return None


def _enter_namespaces(job, libc, is_root, isolation):
    """Step 3: fresh network and PID (and, without root, user) namespaces when allowed."""
    if job.get("namespaces", True) and libc is not None:
        newuser, newnet, newpid = 0x10000000, 0x40000000, 0x20000000
        tries = [newnet | newpid, newnet] if is_root else [newuser | newnet | newpid, newuser | newnet]
        for flags in tries:
            if libc.unshare(flags) == 0:
                if flags & newnet:
                    isolation.append("netns")
                if flags & newuser:
                    isolation.append("userns")
                if flags & newpid:
                    isolation.append("pidns")
                break


def _become_namespace_init(result_fd):
    """Step 3, with a PID namespace: fork; only the child returns.

    The child is PID 1 of the new namespace: when it exits, the kernel kills every
    process left in the namespace. This process only waits and mirrors its exit."""
    child = os.fork()
    if not child:
        return
    os.close(result_fd)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def _set_limits(limits, isolation, emit, note):
    """Step 4: the resource limits; a limit that cannot be set stops the run."""
    cpu_s = int(limits["cpu_s"])
    for res, soft, hard in (
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, cpu_s, cpu_s),  # soft = hard: SIGKILL at the limit (PID 1 of a namespace ignores SIGXCPU)
        (resource.RLIMIT_AS, int(limits["memory_bytes"]), int(limits["memory_bytes"])),
        (resource.RLIMIT_FSIZE, int(limits["file_bytes"]), int(limits["file_bytes"])),
        (resource.RLIMIT_NOFILE, int(limits["open_files"]), int(limits["open_files"])),
        (resource.RLIMIT_NPROC, int(limits["processes"]), int(limits["processes"])),
    ):
        try:
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError) as exc:
            note(f"sandbox: setrlimit({res}) failed: {exc}")
            emit("start error")
            os._exit(3)
    isolation.append("rlimits")
    # A file over RLIMIT_FSIZE raises OSError instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _drop_privileges(job, is_root, isolation, emit, note):
    """Step 5: as root (outside a user namespace), become the job's uid/gid for good."""
    uid, gid = job.get("uid"), job.get("gid")
    if uid is None or not is_root or "userns" in isolation:
        return
    try:
        os.setgroups([])
        os.setgid(int(gid))
        os.setuid(int(uid))
    except OSError as exc:
        note(f"sandbox: could not drop to uid {uid}: {exc}")
        emit("start error")
        os._exit(3)
    try:
        os.setuid(0)
    except PermissionError:
        isolation.append("uid")
    else:
        note("sandbox: privileges could be regained after the drop; refusing to run")
        emit("start error")
        os._exit(3)


def _die_with_parent(libc, isolation):
    """Step 5: ask the kernel to SIGKILL this process when its parent dies."""
    if libc is None:
        return
    parent = os.getppid()
    if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
        isolation.append("pdeathsig")
    if os.getppid() != parent:
        os._exit(3)


def _hide_process_controls():
    """Step 6: forget ``ctypes``, remove process-control functions, compile imports from source."""
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.") or m == "_ctypes"]:
        del sys.modules[name]
    for module in (os, posix, signal, sys.modules.get("_signal")):
        for attr in ("setsid", "setpgid", "setpgrp", "pidfd_open", "pidfd_send_signal", "unshare", "setns",
                     "setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid", "setregid",
                     "setresgid", "setgroups", "chroot"):
            try:
                delattr(module, attr)
            except (AttributeError, TypeError):
                pass
    sys.dont_write_bytecode = True
    sys.pycache_prefix = "/nonexistent-ift-sandbox-pycache"  # imports compile from source: no marshal


def _test_runner(same, emit, note, describe):
    """Closure ``run_tests(prepared, namespace)`` for step 7: runs each test on its own,
    reports it, returns how many passed. Built before untrusted code runs, because it
    runs after: every name it uses is bound here."""
    _exec, _eval, _len, _range = exec, eval, len, range
    _BaseException, _MemoryError, _AssertionError, _isinstance = BaseException, MemoryError, AssertionError, isinstance

    def outcome_of(exc):
        if _isinstance(exc, _MemoryError):
            return "memory"
        if _isinstance(exc, _AssertionError):
            return "fail"
        return "error"

    def run_tests(prepared, namespace):
        passed = 0
        for index in _range(_len(prepared)):
            kind, code, expected = prepared[index]
            if kind == "broken":
                note(f"test {index}: does not parse: {expected}")
                emit(f"test {index} broken")
                continue
            try:
                if kind == "strict":
                    ok = same(_eval(code, namespace), expected)
                    result = "pass" if ok else "fail"
                else:
                    _exec(code, namespace)
                    result = "pass"
            except _BaseException as exc:
                result = outcome_of(exc)
                note(f"test {index}: {describe(exc)}")
            if result == "pass":
                passed += 1
            emit(f"test {index} {result}")
        return passed

    return run_tests


def _run_solution(program, setup, prepared, isolation, blocked, reporting, run_tests):
    """Step 7: report the start, run the program, then the setup, then the tests; exit.

    Untrusted code runs from here on: everything below is a local, an argument or a
    closure bound before the first ``exec``."""
    emit, note, describe = reporting
    _exec, _compile, _len, _isinstance, _exit = exec, compile, len, isinstance, os._exit
    _BaseException, _MemoryError = BaseException, MemoryError
    solution = types.ModuleType("solution")
    sys.modules["solution"] = solution
    namespace = solution.__dict__
    emit("start " + ",".join(isolation))

    def finish(passed, total):
        emit(f"end {passed} {total} {blocked[0]} {','.join(blocked[1]) or '-'}")
        _exit(0)

    try:
        code = _compile(program, "<solution>", "exec")
    except _BaseException as exc:
        note("program: " + describe(exc))
        emit("program memory" if _isinstance(exc, _MemoryError) else "program syntax_error")
        finish(0, _len(prepared))
    try:
        _exec(code, namespace)
    except _BaseException as exc:
        note("program: " + describe(exc))
        emit("program memory" if _isinstance(exc, _MemoryError) else "program error")
        finish(0, _len(prepared))
    emit("program ok")
    if setup.strip():
        try:
            _exec(_compile(setup, "<setup>", "exec"), namespace)
        except _BaseException as exc:
            note("setup: " + describe(exc))
            emit("setup memory" if _isinstance(exc, _MemoryError) else "setup error")
            finish(0, _len(prepared))
        emit("setup ok")
    finish(run_tests(prepared, namespace), _len(prepared))


def _ift_sandbox_main():
    """Steps 1 to 7 of the module docstring, in order; ends the process."""
    job = _read_job()
    result_fd = int(job["result_fd"])
    nonce = str(job["nonce"])
    isolation = []
    read_roots = _preload(job)
    libc = _load_libc()
    is_root = os.geteuid() == 0
    _enter_namespaces(job, libc, is_root, isolation)
    if "pidns" in isolation:
        _become_namespace_init(result_fd)
    emit, note, describe = reporting = _reporter(result_fd, nonce)
    limits = job["limits"]
    _set_limits(limits, isolation, emit, note)
    _drop_privileges(job, is_root, isolation, emit, note)
    _die_with_parent(libc, isolation)
    libc = None  # nothing after step 5 calls into libc
    workdir = os.path.normpath(job["workdir"])
    os.chdir(workdir)
    _hide_process_controls()

    strict = bool(job.get("strict_asserts", True))
    program = str(job.get("program", ""))
    setup = str(job.get("setup", "") or "")
    prepared = _prepare_tests([str(t) for t in job.get("tests", [])], strict, describe)
    run_tests = _test_runner(_exact_comparison(), emit, note, describe)
    blocked = [0, []]
    if job.get("audit", True):
        sys.addaudithook(_audit_hook(workdir, read_roots, _READ_FILES, limits, blocked))
        isolation.append("audit")
    _run_solution(program, setup, prepared, isolation, blocked, reporting, run_tests)


if __name__ == "__main__":
    _ift_sandbox_main()
