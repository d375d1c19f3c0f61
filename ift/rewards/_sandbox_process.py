"""The sandbox's process plumbing, on the parent's side (see :mod:`ift.rewards.sandbox`).

Feed the job to the child's stdin, collect the result pipe and stderr until they close,
the child exits or the deadline passes; then SIGKILL the whole process group, reap the
leader, and remove the working directory whatever the child left in it.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time


def pump(proc: subprocess.Popen, payload: bytes, result_fd: int, deadline: float, keep: int):
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


def kill_and_reap(proc: subprocess.Popen):
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


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything in it, even folders the sandbox made unwritable."""
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

