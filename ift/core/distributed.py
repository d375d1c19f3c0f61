"""Small helpers for running under Lightning's multi-process strategies (DDP, FSDP).

Objectives stay free of Lightning: they ask these functions whether a process group
exists and reduce their statistics through it; with one process every helper is a
no-op, so the same code runs alone and under ``--trainer.strategy ddp``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is up (more than one process may run)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def process_rank() -> int:
    """This process's global rank; 0 when not distributed."""
    return torch.distributed.get_rank() if is_distributed() else 0


def all_reduce_sum_fn() -> Optional[Callable[[torch.Tensor], None]]:
    """An in-place sum over processes (for :func:`~ift.objectives.functional.masked_whiten`),
    or None when there is only one process."""
    if not is_distributed():
        return None
    return lambda tensor: torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)


def sum_over_processes(value: torch.Tensor) -> float:
    """The sum of a scalar over every process (the value itself with one process). The
    reduction runs on ``value``'s device: keep it on the GPU under NCCL."""
    if not is_distributed():
        return float(value)
    tensor = value.detach().float().reshape(1).clone()
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return float(tensor)


def mean_over_processes(value: torch.Tensor) -> float:
    """The mean of a scalar over every process (the value itself with one process)."""
    return sum_over_processes(value) / world_size()


def any_process(flag: bool, device: Optional[torch.device] = None) -> bool:
    """True when ``flag`` is true on at least one process: every rank takes the same branch,
    so no rank waits in a collective the others skipped."""
    if not is_distributed():
        return bool(flag)
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def allow_idle_parameters(strategy: object) -> bool:
    """Let DDP accept trainable parameters that a step does not use.

    A recipe's SFT stage leaves the PPO value head idle; DDP's default
    (``find_unused_parameters=False``) then fails on the next step. Setting the flag
    before the strategy wraps the model keeps the numbers those of a single process
    (a zero-gradient trick would let AdamW decay the idle weights). Returns whether the
    flag was set; a value the user gave explicitly is left alone.
    """
    from pytorch_lightning.strategies import DDPStrategy

    if not isinstance(strategy, DDPStrategy):
        return False
    kwargs = getattr(strategy, "_ddp_kwargs", None)
    if not isinstance(kwargs, dict) or "find_unused_parameters" in kwargs:
        return False
    kwargs["find_unused_parameters"] = True
    return True


def is_sharded(strategy: object) -> bool:
    """Whether ``strategy`` shards parameters across processes (FSDP / model parallel)."""
    from pytorch_lightning.strategies import FSDPStrategy, ModelParallelStrategy

    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))


def world_size() -> int:
    """How many processes train together (1 when not distributed)."""
    return torch.distributed.get_world_size() if is_distributed() else 1
