"""Part of the sandbox child program: the audit hook (step 6 of :mod:`ift.rewards._sandbox_child`).

Standard library only, no import of ``ift``: :mod:`ift.rewards.sandbox` joins this file
with the other parts into one program for an isolated interpreter. The hook runs while
untrusted code runs, so everything it uses is a local of the factories below (captured
in closures) or an argument, never a module attribute that the code could replace.
"""

import os
import posix


def _audit_tables():
    """The fixed audit rules: ``(deny_exact, deny_prefixes, blocked_modules, frame_attrs,
    write_events, read_events)``."""
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
    return deny_exact, deny_prefixes, blocked_modules, frame_attrs, write_events, read_events


def _path_rules(workdir, read_roots, read_files):
    """Closures ``(normal, inside_workdir, readable, is_directory)`` over the allowed paths."""
    # Builtins the closures use, bound now: untrusted code may rebind the names later.
    _type, _PermissionError, _str, _bytes, _OSError = type, PermissionError, str, bytes, OSError
    _stat, _getcwd = posix.stat, posix.getcwd
    workdir_prefix = workdir + "/"

    def normal(path):
        """An absolute, lexically normalised str path; anything else is refused."""
        kind = _type(path)
        if kind is _bytes:
            path = path.decode("utf-8", "surrogateescape")
        elif kind is not _str:
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
        except _OSError:
            return False

    return normal, inside_workdir, readable, is_directory


def _open_rule(paths, max_creations):
    """Closure ``open_verdict(args)`` for the ``open`` event: None if allowed, else why not.

    Opening for writing is allowed inside the working directory only, and at most
    ``max_creations`` times; reading only from the allowed paths; directories never."""
    _type, _str, _int, _bool = type, str, int, bool  # bound now: untrusted code may rebind the names
    normal, inside_workdir, readable, is_directory = paths
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    creations = [0]

    def open_verdict(args):
        path, mode, flags = args[0], args[1], args[2]
        if _type(path) is _int:
            return None
        path = normal(path)
        if _type(mode) is _str:
            writing = ("w" in mode) or ("a" in mode) or ("x" in mode) or ("+" in mode)
        else:
            writing = _bool(_int(flags) & write_flags)
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

    return open_verdict


def _audit_verdict(workdir, read_roots, read_files, max_creations):
    """Closure ``verdict(event, args)``: None if the audit event is allowed, else why not."""
    # Builtins the closure uses, bound now: untrusted code may rebind the names later.
    _type, _len, _str, _bytes, _int = type, len, str, bytes, int
    deny_exact, deny_prefixes, blocked_modules, frame_attrs, write_events, read_events = _audit_tables()
    paths = _path_rules(workdir, read_roots, read_files)
    normal, inside_workdir, readable, _ = paths
    open_verdict = _open_rule(paths, max_creations)

    def verdict(event, args):
        """None if allowed, else why not."""
        if event in deny_exact:
            return "not allowed in the sandbox"
        for prefix in deny_prefixes:
            if event.startswith(prefix):
                return "not allowed in the sandbox"
        if event == "import":
            name = args[0]
            if _type(name) is not _str:
                return "odd import"
            if name in blocked_modules or name.split(".")[0] in blocked_modules:
                return f"module {name} is not available in the sandbox"
            return None
        if event == "object.__getattr__":
            if _len(args) > 1 and args[1] in frame_attrs:
                return "frame introspection is not allowed"
            return None
        if event == "open":
            return open_verdict(args)
        if event in write_events:
            for value in args:
                if _type(value) in (_str, _bytes):
                    if not inside_workdir(normal(value)):
                        return f"{event} outside the working directory"
                elif value is None or _type(value) is _int:
                    continue
            return None
        if event in read_events:
            if not args or args[0] is None:
                return None
            if _type(args[0]) is _int:
                return "directory file descriptors are not allowed"
            if not readable(normal(args[0])):
                return f"{event} outside the allowed paths"
            return None
        if event == "os.chdir":
            if not inside_workdir(normal(args[0]), allow_root=True):
                return "leaving the working directory"
            return None
        return None

    return verdict


def _audit_hook(workdir, read_roots, read_files, limits, blocked):
    """The hook for ``sys.addaudithook``: raises PermissionError for a refused event and
    counts it in ``blocked`` (``[count, first few event names]``, shared with the caller)."""
    _len, _str, _BaseException, _PermissionError = len, str, BaseException, PermissionError
    verdict = _audit_verdict(workdir, read_roots, read_files, int(limits.get("max_files", 200)))

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

    return hook
