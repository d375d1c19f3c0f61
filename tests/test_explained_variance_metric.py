"""PPO's explained variance accumulates as a torchmetrics metric: over updates and over
processes it is the formula applied to the union of the tokens, not a mean of per-shard
ratios (which differs whenever the shards' return variances differ)."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ift.objectives.explained_variance import TokenExplainedVariance, rollout_explained_variance
from reference_impls import loop_explained_variance


def _shard(seed, rows=4, width=6, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(rows, width, generator=g, dtype=torch.float64)
    returns = scale * torch.randn(rows, width, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, width + 1, (rows,), generator=g)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    # Garbage where the mask is off: the result must not read it.
    return torch.where(mask, values, torch.nan), torch.where(mask, returns, torch.nan), mask


def _union(*shards):
    """One ``B x R`` batch holding every shard's rows (padded to the widest)."""
    width = max(s[0].shape[1] for s in shards)
    pad = lambda x, fill: torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill)  # noqa: E731
    return tuple(torch.cat([pad(s[i], False if i == 2 else 0.0) for s in shards]) for i in range(3))


def test_one_rollout_matches_the_loop_reference():
    values, returns, mask = _shard(0)
    got = rollout_explained_variance(values, returns, mask)
    assert got.item() == pytest.approx(loop_explained_variance(values, returns, mask), rel=1e-10)


def test_updates_accumulate_to_the_union_not_the_mean_of_ratios():
    first, second = _shard(1), _shard(2, scale=5.0)  # different return variances
    metric = TokenExplainedVariance()
    metric.update(*first)
    metric.update(*second)
    union = loop_explained_variance(*_union(first, second))
    mean_of_ratios = (loop_explained_variance(*first) + loop_explained_variance(*second)) / 2
    assert metric.compute().item() == pytest.approx(union, rel=1e-10)
    assert abs(union - mean_of_ratios) > 1e-3  # so the check above can tell them apart


def test_merged_process_states_give_the_union():
    first, second = _shard(3), _shard(4, scale=0.2)
    rank0, rank1 = TokenExplainedVariance(), TokenExplainedVariance()
    rank0.update(*first)
    rank1.update(*second)
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(loop_explained_variance(*_union(first, second)), rel=1e-10)


def test_constant_returns_or_no_valid_token_give_nan():
    values, _, mask = _shard(5)
    assert math.isnan(rollout_explained_variance(values, torch.ones_like(values), mask).item())
    assert math.isnan(rollout_explained_variance(values, values, torch.zeros_like(mask)).item())


def test_bf16_inputs_are_summed_in_float32():
    values, returns, mask = _shard(6)
    values, returns = values.nan_to_num(0.0), returns.nan_to_num(0.0)
    got = rollout_explained_variance(values.bfloat16(), returns.bfloat16(), mask)
    assert got.dtype == torch.float32
    reference = loop_explained_variance(values.bfloat16().double(), returns.bfloat16().double(), mask)
    assert got.item() == pytest.approx(reference, rel=1e-5)


def _two_process_worker(rank, init_file, shards, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        out[rank] = rollout_explained_variance(*shards[rank]).item()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_each_log_the_whole_rollouts_value(tmp_path):
    shards = [_shard(7), _shard(8, rows=3, scale=3.0)]  # uneven token counts per rank
    out = mp.get_context("spawn").Manager().dict()
    mp.spawn(_two_process_worker, args=(str(tmp_path / "init"), shards, out), nprocs=2, join=True)
    union = loop_explained_variance(*_union(*shards))
    assert out[0] == pytest.approx(union, rel=1e-10)
    assert out[1] == pytest.approx(union, rel=1e-10)
