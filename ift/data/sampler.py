"""A training shuffle that depends only on (seed, epoch), so a resumed run sees the same order."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


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
