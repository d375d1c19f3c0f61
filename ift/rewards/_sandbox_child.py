"""The program that runs inside every sandbox process (see :mod:`ift.rewards.sandbox`).

The parent runs ``python -P -s -S -B -c <the source of this file>`` with an empty
environment, in a fresh temporary directory, and writes one JSON object on its stdin. The
training process never imports this file to run it: nothing happens at import time.

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

Everything the harness uses after step 7 starts is bound to a local variable first:
untrusted code can replace module attributes and builtins, not the locals of this
function. The nonce lives only in locals and closures; reaching it needs frame or object
introspection, which the audit hook refuses (``sys._getframe``, ``tb_frame``, ``gc``...).
Audit hooks are not a security boundary (CPython bugs, crafted objects): the OS layers
(uid, namespaces, rlimits, process-group kill) are what protect the machine.
"""


def _ift_sandbox_main():  # noqa: C901 - one function on purpose: its locals are the secret
    import ast
    import json
    import os
    import posix
    import resource
    import signal
    import sys
    import types

    _write, _exit, _getpid, _close = os.write, os._exit, os.getpid, os.close
    _type, _len, _isinstance, _str = type, len, isinstance, str
    _exec, _eval, _compile, _range = exec, eval, compile, range
    _BaseException, _MemoryError, _AssertionError = BaseException, MemoryError, AssertionError
    _PermissionError = PermissionError
    _stat, _getcwd = posix.stat, posix.getcwd

    # ------------------------------------------------------------------ 1. the job
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
    result_fd = int(job["result_fd"])
    nonce = _str(job["nonce"])
    my_pid = [_getpid()]

    def emit(text):
        """One record on the result pipe; a forked copy of the harness never reports."""
        if _getpid() != my_pid[0]:
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

    isolation = []

    # ------------------------------------------------------------------ 2. preload
    for name in job.get("preload", []):
        try:
            __import__(name)
        except Exception:
            pass

    # Readable without restriction: the standard library the interpreter runs from.
    read_roots = []
    for entry in list(sys.path) + [os.path.dirname(os.__file__)]:
        if entry and os.path.isabs(entry) and os.path.exists(entry):
            read_roots.append(os.path.normpath(entry))
    read_roots += [os.path.normpath(p) for p in job.get("extra_read_paths", [])]
    read_files = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero")

    # ------------------------------------------------------------------ 3. namespaces
    libc = None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except Exception:
        libc = None
    is_root = os.geteuid() == 0
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
    if "pidns" in isolation:
        # The next child is PID 1 of the new namespace: when it exits, the kernel kills
        # every process left in the namespace. This process only waits and mirrors it.
        child = os.fork()
        if child:
            _close(result_fd)
            while True:
                try:
                    _, status = os.waitpid(child, 0)
                    break
                except InterruptedError:
                    continue
            if os.WIFSIGNALED(status):
                _exit(128 + os.WTERMSIG(status))
            _exit(os.WEXITSTATUS(status))
        my_pid[0] = _getpid()

    # ------------------------------------------------------------------ 4. limits
    limits = job["limits"]
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
            _exit(3)
    isolation.append("rlimits")
    # A file over RLIMIT_FSIZE raises OSError instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    # ------------------------------------------------------------------ 5. privileges
    uid, gid = job.get("uid"), job.get("gid")
    if uid is not None and is_root and "userns" not in isolation:
        try:
            os.setgroups([])
            os.setgid(int(gid))
            os.setuid(int(uid))
        except OSError as exc:
            note(f"sandbox: could not drop to uid {uid}: {exc}")
            emit("start error")
            _exit(3)
        try:
            os.setuid(0)
        except PermissionError:
            isolation.append("uid")
        else:
            note("sandbox: privileges could be regained after the drop; refusing to run")
            emit("start error")
            _exit(3)
    if libc is not None:
        parent = os.getppid()
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
            isolation.append("pdeathsig")
        if os.getppid() != parent:
            _exit(3)
    libc = None

    workdir = os.path.normpath(job["workdir"])
    os.chdir(workdir)

    # ------------------------------------------------------------------ 6. hide, hook
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

    strict = bool(job.get("strict_asserts", True))
    program = _str(job.get("program", ""))
    setup = _str(job.get("setup", "") or "")
    tests = [_str(t) for t in job.get("tests", [])]

    # Tests are parsed and compiled now, before untrusted code can touch ``ast``.
    scalar_types = (int, float, complex, str, bytes, bool, type(None))
    nothing = object()
    prepared = []
    for index, source in enumerate(tests):
        try:
            tree = ast.parse(source, mode="exec")
        except Exception as exc:
            prepared.append(("broken", None, describe(exc)))
            continue
        entry = None
        if strict and len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
            test = tree.body[0].test
            if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
                try:
                    expected = ast.literal_eval(test.comparators[0])
                except Exception:
                    expected = nothing
                if expected is not nothing:
                    expression = ast.Expression(body=test.left)
                    ast.fix_missing_locations(expression)
                    entry = ("strict", compile(expression, f"<test {index}>", "eval"), expected)
        if entry is None:
            entry = ("exec", compile(tree, f"<test {index}>", "exec"), None)
        prepared.append(entry)

    def exact_key(value):
        kind = _type(value)
        if kind in scalar_types:
            return True
        if kind is tuple:
            for item in value:
                if not exact_key(item):
                    return False
            return True
        return False

    def same(got, expected):
        """``got == expected`` where ``got`` must have exactly the literal's types, all the
        way down: an object whose ``__eq__`` always says yes cannot pass a test."""
        kind = _type(expected)
        if _type(got) is not kind:
            return False
        if kind in scalar_types:
            return got == expected
        if kind is list or kind is tuple:
            if _len(got) != _len(expected):
                return False
            for i in _range(_len(expected)):
                if not same(got[i], expected[i]):
                    return False
            return True
        if kind is dict:
            if _len(got) != _len(expected):
                return False
            for key in got:
                if not exact_key(key):
                    return False
            for key in expected:
                if key not in got or not same(got[key], expected[key]):
                    return False
            return True
        if kind is set or kind is frozenset:
            for item in got:
                if not exact_key(item):
                    return False
            return got == expected
        return got is expected  # Ellipsis

    blocked = [0, []]
    if job.get("audit", True):
        workdir_prefix = workdir + "/"
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        creations = [0]
        max_creations = int(limits.get("max_files", 200))
        deny_exact = frozenset((
            "os.kill", "os.killpg", "signal.pthread_kill", "os.fork", "os.forkpty", "os.system",
            "os.startfile", "os.symlink", "os.link", "sys._getframe", "sys._current_frames",
            "sys._current_exceptions", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
            "sys.settrace", "sys.setprofile", "sys.addaudithook", "resource.setrlimit", "resource.prlimit",
            "code.__new__", "marshal.load", "marshal.loads", "setopencodehook", "os.chroot",
            "function.__new__", "sys._getframemodulename", "cpython.PyInterpreterState_New",
            "_thread.start_new_thread", "os.add_dll_directory", "webbrowser.open",
        ))
        deny_prefixes = ("socket.", "ctypes.", "mmap.", "sqlite3.", "subprocess.", "pty.", "os.exec",
                         "os.spawn", "os.posix_spawn", "winreg.", "_winapi.", "msvcrt.", "ftplib.",
                         "smtplib.", "poplib.", "imaplib.", "nntplib.", "telnetlib.", "http.client.",
                         "urllib.", "ensurepip.", "syslog.", "shutil.make_archive", "shutil.unpack_archive")
        blocked_modules = frozenset((
            "ctypes", "_ctypes", "_posixsubprocess", "subprocess", "multiprocessing", "_multiprocessing",
            "mmap", "socket", "_socket", "ssl", "_ssl", "pty", "select", "selectors", "asyncio",
            "_posixshmem", "cffi", "_cffi_backend", "_testcapi", "_testinternalcapi", "_testbuffer",
            "_testmultiphase", "_testsinglephase", "_testimportmultiple", "_xxsubinterpreters",
            "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues", "faulthandler",
            "_tracemalloc", "tracemalloc", "concurrent", "_thread_debug",
        ))
        frame_attrs = frozenset(("tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals",
                                 "f_locals", "f_builtins", "gi_code", "cr_code", "ag_code", "f_code"))
        write_events = frozenset(("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime",
                                  "os.truncate", "os.chflags", "os.lchflags", "os.setxattr",
                                  "os.removexattr", "os.rename", "shutil.copyfile", "shutil.copymode",
                                  "shutil.copystat", "shutil.copytree", "shutil.chown", "shutil.move",
                                  "shutil.rmtree", "tempfile.mkstemp", "tempfile.mkdtemp"))
        read_events = frozenset(("os.listdir", "os.scandir", "os.getxattr", "os.listxattr", "glob.glob",
                                 "glob.glob/2"))

        def normal(path):
            """An absolute, lexically normalised str path; anything else is refused."""
            kind = _type(path)
            if kind is bytes:
                path = path.decode("utf-8", "surrogateescape")
            elif kind is not str:
                raise _PermissionError("only str/bytes paths are allowed")
            if "\x00" in path:
                raise _PermissionError("NUL in path")
            if not path.startswith("/"):
                path = _getcwd() + "/" + path
            parts = []
            for part in path.split("/"):
                if part == "" or part == ".":
                    continue
                if part == "..":
                    if parts:
                        parts.pop()
                    continue
                parts.append(part)
            return "/" + "/".join(parts)

        def inside_workdir(path, allow_root=False):
            return path.startswith(workdir_prefix) or (allow_root and path == workdir)

        def readable(path):
            if path in read_files or path == workdir or path.startswith(workdir_prefix):
                return True
            for root in read_roots:
                if path == root or path.startswith(root + "/"):
                    return True
            return False

        def is_directory(path):
            try:
                return (_stat(path).st_mode & 0o170000) == 0o040000
            except OSError:
                return False

        def verdict(event, args):
            """None if allowed, else why not."""
            if event in deny_exact:
                return "not allowed in the sandbox"
            for prefix in deny_prefixes:
                if event.startswith(prefix):
                    return "not allowed in the sandbox"
            if event == "import":
                name = args[0]
                if _type(name) is not str:
                    return "odd import"
                if name in blocked_modules or name.split(".")[0] in blocked_modules:
                    return f"module {name} is not available in the sandbox"
                return None
            if event == "object.__getattr__":
                if _len(args) > 1 and args[1] in frame_attrs:
                    return "frame introspection is not allowed"
                return None
            if event == "open":
                path, mode, flags = args[0], args[1], args[2]
                if _type(path) is int:
                    return None
                path = normal(path)
                if _type(mode) is str:
                    writing = ("w" in mode) or ("a" in mode) or ("x" in mode) or ("+" in mode)
                else:
                    writing = bool(int(flags) & write_flags)
                if writing:
                    if not inside_workdir(path):
                        return f"writing {path} (outside the working directory)"
                    creations[0] += 1
                    if creations[0] > max_creations:
                        return "too many files opened for writing"
                elif not readable(path):
                    return f"reading {path} (outside the allowed paths)"
                if is_directory(path):
                    return "opening a directory"
                return None
            if event in write_events:
                for value in args:
                    if _type(value) in (str, bytes):
                        if not inside_workdir(normal(value)):
                            return f"{event} outside the working directory"
                    elif value is None or _type(value) is int:
                        continue
                return None
            if event in read_events:
                if not args or args[0] is None:
                    return None
                if _type(args[0]) is int:
                    return "directory file descriptors are not allowed"
                if not readable(normal(args[0])):
                    return f"{event} outside the allowed paths"
                return None
            if event == "os.chdir":
                if not inside_workdir(normal(args[0]), allow_root=True):
                    return "leaving the working directory"
                return None
            return None

        def hook(event, args):
            try:
                reason = verdict(event, args)
            except _BaseException:
                reason = "unexpected arguments"
            if reason is not None:
                blocked[0] += 1
                if _len(blocked[1]) < 5:
                    safe = "".join(c if (c.isalnum() or c in "._-") else "_" for c in _str(event)[:60])
                    blocked[1].append(safe)
                raise _PermissionError(f"sandbox: {event}: {reason}")

        sys.addaudithook(hook)
        isolation.append("audit")

    # ------------------------------------------------------------------ 7. run
    solution = types.ModuleType("solution")
    sys.modules["solution"] = solution
    namespace = solution.__dict__
    emit("start " + ",".join(isolation))

    def finish(passed, total):
        emit(f"end {passed} {total} {blocked[0]} {','.join(blocked[1]) or '-'}")
        _exit(0)

    def outcome_of(exc):
        if _isinstance(exc, _MemoryError):
            return "memory"
        if _isinstance(exc, _AssertionError):
            return "fail"
        return "error"

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
    finish(passed, _len(prepared))


if __name__ == "__main__":
    _ift_sandbox_main()
