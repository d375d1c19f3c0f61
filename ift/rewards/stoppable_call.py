"""Run a call in a daemon thread with a deadline, and stop it when the deadline passes.

:func:`call_with_deadline` is what :func:`ift.rewards.score_safely` uses to time-limit a
reward. When the deadline passes, the call is asked to stop by raising :class:`CallStopped`
inside its thread (``PyThreadState_SetAsyncExc``): Python code, a ``while True: pass``
included, sees it at its next function call or loop iteration, so the thread ends and
no longer competes for the GIL for the rest of the run. A call stuck inside native code
(one long ``time.sleep``, a blocking read, a lock wait, a C extension) cannot be
interrupted that way: the exception stays pending and the thread ends as soon as that
native call returns to Python. Until then it keeps running; it is a daemon thread, so it
never keeps the process from exiting, and :func:`still_running_calls` counts such calls.

Why a thread and not a subprocess: a reward is an object of the training process. It may
hold a torch model (on the GPU: a forked child cannot use CUDA, a spawned one would load a
second copy of the model and pickle the reward for every batch), and its state must
survive its calls (``CodeTestsReward.counts``, caches, counters). A thread keeps all of that;
the price is that only calls that return to Python can be stopped. Rewards that run
untrusted or slow code put that code in a subprocess with its own timeout
(:mod:`ift.rewards.code`); this deadline is the safety net behind it.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from typing import Any, Callable, List, Optional, Sequence

#: Seconds to wait, once the deadline passed, for the call to end after being asked to stop.
#: A Python-level loop ends within milliseconds; this only bounds the wait on native code.
STOP_GRACE_S = 1.0
# While waiting for the call to end, the stop request is re-sent this often: a call whose
# own ``except BaseException`` swallowed one request gets another.
_RESEND_EVERY_S = 0.05

_abandoned: List[threading.Thread] = []  # threads of calls that passed their deadline
_abandoned_lock = threading.Lock()


class CallStopped(BaseException):
    """Raised inside a call's thread to end it after its deadline passed.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that the call's own
    ``except Exception`` handlers do not swallow it."""


class DeadlinePassed(Exception):
    """The call did not return before its deadline (raised by :func:`call_with_deadline`).

    Attributes:
        stopped: whether the call's thread ended after it was asked to stop.
        still_running: calls that passed their deadline and whose threads are still alive
            (this one included when it was not stopped), over the whole process.
    """

    def __init__(self, stopped: bool, still_running: int):
        super().__init__(f"deadline passed; stopped={stopped}, still running={still_running}")
        self.stopped = stopped
        self.still_running = still_running


def still_running_calls() -> int:
    """How many calls that passed their deadline are still running (could not be stopped yet)."""
    with _abandoned_lock:
        _abandoned[:] = [thread for thread in _abandoned if thread.is_alive()]
        return len(_abandoned)


def _raise_in_thread(ident: Optional[int], exc_type: Optional[type]) -> bool:
    """Make ``exc_type`` pending in thread ``ident`` (None clears a pending one); whether it took.

    A stop is not sent while any thread is being started (False is returned; the caller sends
    again later): on CPython <= 3.11 a thread being started carries, until it first runs, the
    id of the thread starting it, so a stop aimed at a reward that starts a thread could land
    on that new thread, end it before ``Thread.start()`` in the reward returns, and leave the
    reward waiting there for ever (CPython gh-140746), unstoppable. Holding threading's own
    lock keeps a start from beginning between the check and the send."""
    set_async_exc = getattr(getattr(ctypes, "pythonapi", None), "PyThreadState_SetAsyncExc", None)
    if set_async_exc is None or ident is None:  # not CPython, or a thread that never started
        return False
    if exc_type is None:  # clearing one's own pending stop never harms another thread
        return set_async_exc(ctypes.c_ulong(ident), None) == 1
    starting = getattr(threading, "_limbo", None)
    lock = getattr(threading, "_active_limbo_lock", None)
    if starting is None or lock is None:  # a threading without these: send unguarded
        return _send(set_async_exc, ident, exc_type)
    with lock:
        if starting:
            return False
        return _send(set_async_exc, ident, exc_type)


def _send(set_async_exc: Any, ident: int, exc_type: type) -> bool:
    exc = ctypes.py_object(exc_type)
    changed = set_async_exc(ctypes.c_ulong(ident), exc)
    if changed > 1:  # more than one thread state with this id: the C API says to undo it
        set_async_exc(ctypes.c_ulong(ident), None)
        return False
    return changed == 1


class _Call:
    """One call run in its own thread: its result or exception, and whether it finished.

    ``lock`` orders the caller's stop request against the call finishing: a stop is sent
    only while ``finished`` is False, and the call clears any stop still pending when it
    sets ``finished``, so the exception never escapes into ``threading``'s own code."""

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any]):
        self.fn = fn
        self.args = tuple(args)
        self.lock = threading.Lock()
        self.finished = False
        self.value: Any = None
        self.error: Optional[BaseException] = None
        # torch's grad and inference modes are per thread: give the call the caller's, so a
        # reward that runs a model under the rollout's no_grad does not build a graph here.
        torch = sys.modules.get("torch")
        self.grad_modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled()) if torch else None

    def run(self) -> None:
        try:
            try:
                self.value = self._invoke()
            except BaseException as exc:  # handed to the caller (ignored there after a timeout)
                self.error = exc
            with self.lock:
                self.finished = True
                _raise_in_thread(threading.get_ident(), None)  # a stop that came too late to matter
        except CallStopped:  # delivered after the call itself had ended
            pass

    def _invoke(self) -> Any:
        if self.grad_modes is None:
            return self.fn(*self.args)
        import torch

        grad, inference = self.grad_modes
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return self.fn(*self.args)

    def request_stop(self, thread: threading.Thread) -> None:
        with self.lock:
            if not self.finished:
                _raise_in_thread(thread.ident, CallStopped)


def _stop(call: _Call, thread: threading.Thread, grace_s: float) -> bool:
    """Ask the call to stop until its thread ends or ``grace_s`` pass; whether it ended."""
    give_up = time.monotonic() + grace_s
    while True:
        call.request_stop(thread)
        thread.join(min(_RESEND_EVERY_S, max(give_up - time.monotonic(), 0.0)))
        if not thread.is_alive():
            return True
        if time.monotonic() >= give_up:
            return False


def call_with_deadline(fn: Callable[..., Any], args: Sequence[Any], timeout_s: float, thread_name: str,
                       grace_s: float = STOP_GRACE_S) -> Any:
    """``fn(*args)`` run in a daemon thread named ``thread_name``, given ``timeout_s`` seconds.

    Returns what ``fn`` returned, or raises what it raised (with its traceback). If it did
    not return in time it is asked to stop (:class:`CallStopped` inside its thread) and
    given ``grace_s`` more seconds to end; then :class:`DeadlinePassed` says whether it did.
    Interrupted while waiting (Ctrl-C), the call is stopped the same way before the
    interrupt propagates, so it does not run on behind it.
    """
    call = _Call(fn, args)
    thread = threading.Thread(target=call.run, name=thread_name, daemon=True)
    thread.start()
    try:
        thread.join(timeout_s)
    except BaseException:
        _stop(call, thread, grace_s)
        raise
    with call.lock:
        done = call.finished
    if not done:
        stopped = _stop(call, thread, grace_s)
        if not stopped:
            with _abandoned_lock:
                _abandoned.append(thread)
        raise DeadlinePassed(stopped, still_running_calls())
    thread.join()  # finished: only the thread's own exit is left
    if call.error is not None:
        raise call.error
    return call.value
