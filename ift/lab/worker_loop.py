"""The worker's side of :mod:`ift.lab.workers`: what a spawned worker process runs.

Only the standard library is imported before the worker starts watching its parent: the
job's function is unpickled afterwards (importing torch and Lightning takes seconds, many
on a loaded machine), so a worker whose parent is killed during that time stops too.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import traceback

#: Seconds between two checks, in a worker, that its parent is still there.
PARENT_CHECK_S = 0.5


class WorkerError(RuntimeError):
    """A worker process stopped without returning its job's result (killed, out of memory, ...),
    or the result could not be sent back."""


def serve(payload: bytes, connection, parent: int) -> None:
    """A worker's loop: a job in, its result (or exception) out, until told to stop or orphaned.

    ``payload`` is the pickled function of the jobs; ``parent`` the pid of the process that
    started this one.
    """
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent handles it
    # The parent held SIGINT and SIGTERM while starting this process, and a new process inherits
    # that mask: let SIGTERM reach it again.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    function = pickle.loads(payload)
    from ift.lab.workers import quiet_worker

    quiet_worker()
    while True:
        try:
            item = connection.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if item is None:
            return
        try:
            message = ("ok", function(item), None)
        except Exception as error:  # a job's error goes back to the parent; SystemExit & co. end the worker
            message = ("error", _portable(error), traceback.format_exc())
        try:
            connection.send(message)
        except (EOFError, OSError):
            return
        except Exception:  # a result that cannot be pickled
            connection.send(("error", WorkerError(f"the result of a job cannot be sent back: "
                                                  f"{traceback.format_exc(limit=1)}"), traceback.format_exc()))


def _portable(error: Exception) -> Exception:
    """``error`` if it can be pickled, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _die_with(parent: int) -> None:
    """End this process as soon as ``parent`` is gone: the kernel's parent-death signal where
    there is one (Linux), and a thread that checks the parent every :data:`PARENT_CHECK_S`."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            # PR_SET_PDEATHSIG. It fires when the *thread* that started this process ends: the
            # thread that iterates imap_in_processes, which waits for its workers anyway.
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)  # nobody is left to receive the result
            time.sleep(PARENT_CHECK_S)

    threading.Thread(target=watch, name="ift-parent-watch", daemon=True).start()


__all__ = ["PARENT_CHECK_S", "WorkerError", "serve"]
