"""Independent training runs in worker processes, one CPU thread each.

A tiny model trains fastest on one thread, and a run's numbers must not depend on how many
runs share the machine: every worker sets one thread and the same quiet logging, so a seed
gives the same numbers whether it runs alone or beside others.

The workers never outlive the command. ``multiprocessing.Pool`` let them: its workers
take the next queued job by themselves, and it starts a new worker for one that died, so
after SIGTERM to the parent (or to the whole process group: Lightning's own SIGTERM
handler in a worker lets the run finish when the signal comes after its last step) a
worker went on training queued jobs, orphaned. Here instead

* each worker gets one job at a time over its own pipe, and the parent sends the next only
  when the last result is in: a worker never holds work of its own;
* a worker whose pipe closes (the parent exited) stops, and mid-job a worker stops as soon as
  its parent is gone (killed with SIGKILL, which nothing can catch): the kernel's
  parent-death signal and a thread that watches the parent (:mod:`ift.lab.worker_loop`);
* when the parent stops, for any reason (Ctrl-C, SIGTERM raised by
  :func:`ift.core.stop_signals.stop_on_signals`, an error), it kills its workers and waits
  for them: nothing of a stopped run is worth keeping, and Lightning may hold a SIGTERM;
* workers ignore Ctrl-C: the terminal sends it to the whole group, and the parent is the
  one that decides what happens (so no worker prints its own traceback).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import time
import warnings
from multiprocessing.connection import wait
from typing import Any, Callable, Dict, Iterator, List, Sequence

import torch

from ift.lab.worker_loop import PARENT_CHECK_S, WorkerError, serve

#: Seconds the parent waits for a worker to exit after asking it to (finished) or killing it.
JOIN_TIMEOUT_S = 10.0


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (the ``__cause__`` of the re-raised one)."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""


def quiet_worker() -> None:
    """One CPU thread; Lightning's per-fit banners, warnings and transformers' progress bars
    (one per export and load) off."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def imap_in_processes(function: Callable[[Any], Any], jobs: Sequence[Any], workers: int) -> Iterator[Any]:
    """``function(job)`` for every job, yielded as each finishes (in any order).

    ``workers <= 1`` runs them here, one after the other. Otherwise they run in ``workers``
    spawned processes (spawn, not fork: a forked copy of a process that already used torch's
    thread pool can deadlock). ``function`` must be importable by name. An exception of a
    job is raised here (its traceback in the worker as its ``__cause__``). When the caller
    stops iterating (close the generator, e.g. with ``contextlib.closing``) or an exception
    passes through, the workers are killed and waited for.
    """
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        quiet_worker()
        for job in jobs:
            yield function(job)
        return
    context = multiprocessing.get_context("spawn")
    started: List[_Worker] = []
    try:
        for _ in range(workers):
            started.append(_Worker(context, function))
        pending = iter(list(enumerate(jobs)))
        busy: Dict[Any, _Worker] = {}
        for worker in started:
            if worker.send_next(pending):
                busy[worker.connection] = worker
        while busy:
            ready = wait(list(busy) + [worker.process.sentinel for worker in busy.values()])
            for worker in list(busy.values()):
                if worker.connection not in ready and worker.process.sentinel not in ready:
                    continue
                result = worker.receive()
                del busy[worker.connection]
                if worker.send_next(pending):
                    busy[worker.connection] = worker
                yield result
        for worker in started:
            worker.finish()
    finally:
        _stop(started)


def map_in_processes(function: Callable[[Any], Any], jobs: Sequence[Any], workers: int) -> List[Any]:
    """``function(job)`` for every job, over ``workers`` processes, in the order of ``jobs``."""
    indexed = list(enumerate(jobs))
    with contextlib.closing(imap_in_processes(_Indexed(function), indexed, workers)) as results:
        by_index = dict(results)
    return [by_index[index] for index, _ in indexed]


class _Indexed:
    """``(index, job) -> (index, function(job))``: picklable, so it crosses to the workers."""

    def __init__(self, function: Callable[[Any], Any]):
        self.function = function

    def __call__(self, item):
        index, job = item
        return index, self.function(job)


# ------------------------------------------------------------------------- the parent's side
class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context, function: Callable[[Any], Any]):
        self.connection, child = context.Pipe()
        # The function goes pickled: the worker unpickles it (and imports what it needs) only
        # once it watches its parent (ift.lab.worker_loop).
        self.process = context.Process(target=serve, args=(pickle.dumps(function), child, os.getpid()),
                                       daemon=True, name="ift-worker")
        # Ctrl-C or SIGTERM while start() hands the new process its start-up data would cut that
        # hand-over short: the process would die printing an EOFError traceback, and the parent,
        # interrupted inside start(), would not know it. Held until start() returns, the signal
        # stops the command the usual way, with this worker known and killed.
        held = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child.close()  # the worker's end lives in the worker only: its exit closes the pipe
        self.job: Any = None
        self.finished = False

    def send_next(self, pending: Iterator[Any]) -> bool:
        """Send the next job; False when there is none left."""
        item = next(pending, None)
        if item is None:
            return False
        self.job = item  # (index, job): the index names the job in an error
        self.connection.send(item[1])
        return True

    def receive(self) -> Any:
        """The result of the job sent last (its exception raised here)."""
        try:
            kind, payload, remote = self.connection.recv()
        except (EOFError, OSError):
            self.process.join(1.0)
            raise WorkerError(f"worker process {self.process.pid} stopped (exit code {self.process.exitcode}) "
                              f"before returning the result of job {self.job[0] + 1}") from None
        if kind == "error":
            raise payload from RemoteTraceback(remote)
        return payload

    def finish(self) -> None:
        """Tell the worker there is no more work (it exits by itself within moments)."""
        with contextlib.suppress(OSError):
            self.connection.send(None)
            self.finished = True


def _stop(workers: Sequence[_Worker]) -> None:
    """Make sure none of ``workers`` is left: those still running are killed (SIGKILL: a
    worker inside ``trainer.fit`` would let Lightning hold a SIGTERM until its step ends)."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for worker in workers:
        if worker.finished:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
    for worker in workers:
        worker.process.join(JOIN_TIMEOUT_S)
        worker.connection.close()


__all__ = ["JOIN_TIMEOUT_S", "PARENT_CHECK_S", "RemoteTraceback", "WorkerError", "imap_in_processes",
           "map_in_processes", "quiet_worker"]
