"""Ctrl-C and SIGTERM stop a command the same way: as an exception, so that it cleans up.

Python turns Ctrl-C (SIGINT) into ``KeyboardInterrupt`` but lets SIGTERM kill the process
on the spot: a command then has no chance to stop its worker processes, keep what it
finished or say where it is. While :func:`stop_on_signals` is active both signals raise
:class:`Stopped` (a ``KeyboardInterrupt``) in the main thread, and the signal is remembered.

Lightning catches a ``KeyboardInterrupt`` raised inside ``trainer.fit`` and exits with
``sys.exit(1)`` instead; :func:`stopping_signal` still recognises that ``SystemExit`` as
the signal's, because the signal was remembered when it arrived.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, List, Optional

#: Exit status of a command stopped by a signal: the shell's convention, 128 + the signal.
SIGNAL_EXIT_BASE = 128

_received: List[int] = []


class Stopped(KeyboardInterrupt):
    """Raised in the main thread on SIGINT or SIGTERM while :func:`stop_on_signals` is active.

    Attributes:
        signum: the signal received.
    """

    def __init__(self, signum: int):
        super().__init__(describe(signum))
        self.signum = signum


def describe(signum: int) -> str:
    """``Ctrl-C (SIGINT)`` or ``SIGTERM``: how a message names the signal."""
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


def _raise(signum: int, frame) -> None:
    _received.append(signum)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` inside the block; the handlers before it are
    put back after it (also Python's Ctrl-C handler, which Lightning replaces by SIG_IGN after
    it caught one). Outside the main thread signals cannot be handled: the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    del _received[:]
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def stopping_signal(error: BaseException) -> Optional[int]:
    """The signal behind ``error`` when it is how a stop surfaced (a ``KeyboardInterrupt``, or
    the ``SystemExit`` Lightning raises after catching one), else None."""
    if isinstance(error, Stopped):
        return error.signum
    if isinstance(error, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(error, SystemExit) and _received:
        return _received[-1]
    return None


def signal_received() -> Optional[int]:
    """The last signal received inside the current :func:`stop_on_signals` block, if any."""
    return _received[-1] if _received else None


__all__ = ["SIGNAL_EXIT_BASE", "Stopped", "describe", "signal_received", "stop_on_signals", "stopping_signal"]
