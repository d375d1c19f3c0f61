"""Independent training runs in worker processes, one CPU thread each.

A tiny model trains fastest on one thread, and a run's numbers must not depend on how many
runs share the machine: every worker sets one thread and the same quiet logging, so a seed
gives the same numbers whether it runs alone or beside others.
"""

from __future__ import annotations

import logging
import multiprocessing
import warnings
from typing import Any, Callable, Iterator, List, Sequence

import torch


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
    thread pool can deadlock). ``function`` must be importable by name.
    """
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        quiet_worker()
        for job in jobs:
            yield function(job)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=quiet_worker) as pool:
        yield from pool.imap_unordered(function, jobs)


def map_in_processes(function: Callable[[Any], Any], jobs: Sequence[Any], workers: int) -> List[Any]:
    """``function(job)`` for every job, over ``workers`` processes, in the order of ``jobs``."""
    indexed = list(enumerate(jobs))
    results = dict(imap_in_processes(_Indexed(function), indexed, workers))
    return [results[index] for index, _ in indexed]


class _Indexed:
    """``(index, job) -> (index, function(job))``: picklable, so it crosses to the workers."""

    def __init__(self, function: Callable[[Any], Any]):
        self.function = function

    def __call__(self, item):
        index, job = item
        return index, self.function(job)
