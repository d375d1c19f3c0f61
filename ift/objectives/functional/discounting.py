"""Discounted cumulative sums along a sequence, vectorised (IFT's propagation and PPO's GAE)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_DISCOUNT_CHUNK = 64  # block size of the two-level discounted sum; see discounted_cumsum


def _discount_matrix(size: int, gamma: float, device, dtype) -> torch.Tensor:
    """``A[j, t] = gamma ** (j - t)`` for ``j >= t`` else 0 (``0 ** 0 == 1``)."""
    idx = torch.arange(size, device=device)
    diff = idx.view(-1, 1) - idx.view(1, -1)  # j - t
    powers = torch.pow(torch.tensor(gamma, dtype=dtype, device=device), diff.clamp(min=0).to(dtype))
    return torch.where(diff >= 0, powers, torch.zeros((), dtype=dtype, device=device))


def discounted_cumsum(x: torch.Tensor, gamma: float, reverse: bool = True) -> torch.Tensor:
    """Discounted cumulative sum along the last dimension.

    ``reverse=True``:  ``S_t = sum_{j >= t} gamma^(j-t) x_j`` (toward the future).
    ``reverse=False``: ``S_t = sum_{j <= t} gamma^(t-j) x_j`` (toward the past).

    Vectorised in two levels so it is fast and numerically safe for long sequences:
    inside blocks of ``_DISCOUNT_CHUNK`` steps a small triangular matrix of discount
    powers does the sum with one matmul; the block totals are then combined by the
    same method at block granularity (discount ``gamma ** chunk``). Only non-positive
    powers of ``gamma`` are ever formed, so nothing overflows; they may underflow to 0,
    which is their true value to float32 precision. Accumulates in float32 (float64
    stays float64) and is differentiable. ``gamma`` must lie in ``[0, 1]``.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"discounted_cumsum: gamma must be in [0, 1], got {gamma}")
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.shape[-1] == 0:
        return x.to(compute_dtype)
    values = x.to(compute_dtype)
    if not reverse:
        values = values.flip(-1)
    lead_shape, length = values.shape[:-1], values.shape[-1]
    values = values.reshape(-1, length)

    chunk = min(_DISCOUNT_CHUNK, length)
    n_chunks = math.ceil(length / chunk)
    padded = F.pad(values, (0, n_chunks * chunk - length))  # zeros after the end change nothing
    blocks = padded.view(-1, n_chunks, chunk)

    inner = _discount_matrix(chunk, gamma, values.device, compute_dtype)
    within = blocks @ inner  # within[b, c, t] = sum_{j >= t in block c} gamma^(j-t) x_j
    if n_chunks > 1:
        block_heads = within[:, :, 0]  # each block's total, discounted to its first step
        outer = _discount_matrix(n_chunks, gamma**chunk, values.device, compute_dtype)
        from_block_start = block_heads @ outer  # S at the first step of every block
        # S at step t of block c also sees everything from block c+1 on, gamma^(chunk-t) away.
        later = F.pad(from_block_start[:, 1:], (0, 1))
        steps_to_next = torch.arange(chunk, 0, -1, device=values.device, dtype=compute_dtype)
        carry = torch.pow(torch.tensor(gamma, dtype=compute_dtype, device=values.device), steps_to_next)
        within = within + later.unsqueeze(-1) * carry
    result = within.reshape(-1, n_chunks * chunk)[:, :length].reshape(*lead_shape, length)
    return result if reverse else result.flip(-1)

