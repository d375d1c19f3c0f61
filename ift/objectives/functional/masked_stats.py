"""Masked statistics over response tokens: mean, variance and (DDP-aware) whitening.

Every function computes in float32 (float64 stays float64) whatever the input precision,
and never lets values on masked positions (which may be garbage, even inf/nan) leak into
a result.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is never used for sums)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _masked_values(x: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype`` with masked positions set to 0 (``where``, so nan/inf there vanish)."""
    return torch.where(mask.bool(), x.to(dtype), torch.zeros((), dtype=dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is true.

    Args:
        x: any shape, any float dtype (computed in float32; float64 stays float64).
        mask: same shape as ``x``, bool or 0/1.
        dim: reduce this dimension only (result has it removed); ``None`` reduces all.

    Returns:
        A 0-dim tensor (``dim=None``) or ``x``'s shape without ``dim``. Where no entry is
        valid the mean is 0 (not nan), like :func:`sequence_mean`.
    """
    dtype = _compute_dtype(x)
    values = _masked_values(x, mask, dtype)
    counts = mask.bool().to(dtype)
    if dim is None:
        return values.sum() / counts.sum().clamp(min=1)
    return values.sum(dim) / counts.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over all entries where ``mask`` is true (a 0-dim float32 tensor).

    ``unbiased`` divides by ``n - 1`` (Bessel), else by ``n``. With no valid entry, or a
    single one when ``unbiased``, the variance is undefined and 0 is returned, so that
    whitening such a batch gives zeros rather than nan.
    """
    dtype = _compute_dtype(x)
    n = mask.bool().sum().to(dtype)
    mean = masked_mean(x, mask)
    sq = (_masked_values(x, mask, dtype) - mean).square()
    total = torch.where(mask.bool(), sq, torch.zeros((), dtype=dtype, device=x.device)).sum()
    denom = n - 1 if unbiased else n
    return torch.where(denom > 0, total / denom.clamp(min=1), torch.zeros((), dtype=dtype, device=x.device))


def _reduce(all_reduce: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]], t: torch.Tensor) -> torch.Tensor:
    """Apply a user all-reduce (sum) that either returns the result or sums in place (returns None)."""
    if all_reduce is None:
        return t
    out = all_reduce(t)
    return t if out is None else out


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    all_reduce: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]] = None,
    unbiased: bool = True,
) -> torch.Tensor:
    """Normalise ``x`` to mean 0 and variance 1 over its valid entries.

    ``(x - mean) / sqrt(var + eps)`` with ``mean`` and ``var`` (see :func:`masked_var`)
    taken over the entries where ``mask`` is true only. ``shift_mean=False`` rescales the
    spread but adds the mean back (``(x - mean) / std + mean``, as TRL and torchtune do
    for rewards). Masked positions are 0 in the output.

    Under DDP, pass ``all_reduce``: a callable that sums a tensor over all processes and
    returns the sum (e.g. ``lambda t: strategy.reduce(t, reduce_op="sum")``) or sums it in
    place and returns None (``torch.distributed.all_reduce``). The mean and variance are
    then those of the valid entries of every rank together (two collectives: sums and
    counts, then squared deviations). Every rank must call this function, even one
    whose mask is empty.

    Args:
        x: ``B x R`` (any shape) values, e.g. advantages; any float dtype.
        mask: same shape, bool or 0/1.

    Returns:
        float32 (float64 for float64 input) tensor of ``x``'s shape.
    """
    dtype = _compute_dtype(x)
    valid = mask.bool()
    values = _masked_values(x, valid, dtype)
    stats = torch.stack([values.sum(), valid.sum().to(dtype)])
    stats = _reduce(all_reduce, stats)
    total, n = stats[0], stats[1]
    mean = total / n.clamp(min=1)
    sq = torch.where(valid, (values - mean).square(), torch.zeros((), dtype=dtype, device=x.device)).sum()
    sq = _reduce(all_reduce, sq.reshape(1)).reshape(())
    denom = n - 1 if unbiased else n
    var = torch.where(denom > 0, sq / denom.clamp(min=1), torch.zeros((), dtype=dtype, device=x.device))
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(valid, whitened, torch.zeros((), dtype=dtype, device=x.device))

