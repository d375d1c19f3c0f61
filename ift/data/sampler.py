"""A training shuffle that depends only on (seed, epoch), and a loader that resumes mid-epoch,
so a resumed run sees the same batches as an uninterrupted one."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSeededSampler(Sampler):
    """Random permutation of ``range(size)`` drawn from ``seed`` and the epoch number.

    Lightning calls :meth:`set_epoch` at the start of every epoch (also after restoring a
    checkpoint), so the order of epoch ``e`` is the same whether or not the run was
    interrupted; a sampler holding a generator would instead restart its stream.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that resumes in the middle of an epoch under Lightning.

    Lightning 2.6 saves the state of every training loader that has ``state_dict`` /
    ``load_state_dict`` (its "stateful loader" protocol) in the checkpoint and restores it
    before iterating again; a plain ``DataLoader`` restarts the interrupted epoch from its
    first batch (with a warning) while the loop counters say part of the epoch is done,
    so the resumed epoch repeats its first batches and never reaches its last ones.

    This loader saves the sampler's epoch and how many batches of that epoch Lightning
    has processed (``progress()``, normally the trainer's
    ``fit_loop.epoch_loop.batch_progress.current.processed``: the number the resumed loop
    counts as done, whether the checkpoint was written at a step end or inside a step; the
    number of batches it handed out when there is no trainer). Restored, its next
    iteration over the same epoch drops that many batches first (they are loaded and
    discarded, so the sampler, the workers and DDP's sharding stay as they are); any other
    epoch is unaffected. With :class:`EpochSeededSampler` the resumed run therefore sees
    exactly the batches the uninterrupted run would have seen.

    Args:
        progress: returns the number of batches of the current epoch already processed,
            or None when unknown; extra to the ``DataLoader`` arguments.
    """

    def __init__(self, *args: Any, progress: Optional[Callable[[], Optional[int]]] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.progress = progress
        self._handed_out = 0  # batches of the current iteration handed out
        self._resume: Optional[Tuple[Optional[int], int]] = None  # (epoch, batches to drop)

    def state_dict(self) -> Dict[str, Any]:
        done = self.progress() if self.progress is not None else None
        return {"epoch": _epoch_of(self), "batches": int(self._handed_out if done is None else done)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._resume = (state.get("epoch"), int(state.get("batches", 0)))

    def __iter__(self) -> Iterator[Any]:
        return _ResumingIterator(self, super().__iter__())


class _ResumingIterator:
    def __init__(self, loader: ResumableDataLoader, iterator: Iterator[Any]):
        self.loader, self.iterator, self.started = loader, iterator, False
        loader._handed_out = 0

    def __iter__(self) -> "_ResumingIterator":
        return self

    def __len__(self) -> int:
        return len(self.iterator)  # type: ignore[arg-type]

    def __next__(self) -> Any:
        if not self.started:
            # Decided at the first batch: Lightning sets the sampler's epoch after creating the iterator.
            self.started = True
            resume, self.loader._resume = self.loader._resume, None
            if resume is not None and resume[1] > 0 and resume[0] == _epoch_of(self.loader):
                for _ in range(resume[1]):
                    next(self.iterator)
                self.loader._handed_out = resume[1]
        batch = next(self.iterator)
        self.loader._handed_out += 1
        return batch


def _epoch_of(loader: DataLoader) -> Optional[int]:
    """The epoch the loader's sampler was last set to (None if it has no epoch)."""
    for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        epoch = getattr(sampler, "epoch", None)
        if isinstance(epoch, int):
            return epoch
    return None
