"""Critic-free RL maths of ift.objectives.functional (GRPO family) against loop references and worked cases."""

import math

import pytest
import torch

from ift.objectives import functional as F
from reference_impls import (
    loop_aggregate,
    loop_aggregate_sequences,
    loop_cispo,
    loop_clipped_surrogate,
    loop_group_mean_baseline,
    loop_group_normalized_advantages,
    loop_leave_one_out,
    loop_reinforce_pp,
    loop_sequence_surrogate,
    loop_sequence_token_surrogate,
    loop_soft_overlong,
    loop_zero_variance_groups,
)

SEEDS = [0, 1, 2]
# (B, G, R): several groups, pairs, single-token responses.
SHAPES = [(12, 4, 7), (6, 2, 1), (9, 3, 5)]


def any_mask(g, batch, width):
    """A ``B x R`` mask mixing every padding pattern: full, right-padded, left-padded,
    holes, and one all-masked row."""
    rows = []
    for b in range(batch):
        kind = b % 5
        n = int(torch.randint(1, width + 1, (1,), generator=g))
        positions = torch.arange(width)
        if kind == 0:
            row = torch.ones(width, dtype=torch.bool)
        elif kind == 1:
            row = positions < n  # right padding
        elif kind == 2:
            row = positions >= width - n  # left padding
        elif kind == 3:
            row = torch.rand(width, generator=g) < 0.6  # holes, maybe empty
        else:
            row = torch.zeros(width, dtype=torch.bool)  # all masked
        rows.append(row)
    return torch.stack(rows)


def with_garbage(x, mask, value=float("nan")):
    """``x`` with masked positions overwritten: results must not depend on them."""
    return torch.where(mask.bool(), x, torch.full_like(x, value))


def policy_batch(seed, batch, width, dtype=torch.float64):
    """``(logprobs, old_logprobs, row advantages, token advantages, mask)`` with ratios around 1."""
    g = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(batch, width, generator=g, dtype=dtype) * 2
    old = logprobs + 0.4 * torch.randn(batch, width, generator=g, dtype=dtype)
    adv_rows = torch.randn(batch, generator=g, dtype=dtype)
    adv_tokens = torch.randn(batch, width, generator=g, dtype=dtype)
    return logprobs, old, adv_rows, adv_tokens, any_mask(g, batch, width)


def group_scores(seed, batch, group_size):
    """Scores mixing binary groups (often all equal) and continuous ones, and random validity."""
    g = torch.Generator().manual_seed(seed)
    binary = torch.randint(0, 2, (batch,), generator=g).double()
    continuous = torch.randn(batch, generator=g, dtype=torch.float64)
    per_group = (torch.arange(batch) // group_size) % 2 == 0
    scores = torch.where(per_group, binary, continuous)
    valid = torch.rand(batch, generator=g) < 0.8
    return scores, valid


def approx(values, rel=1e-6, abs=1e-6):
    return pytest.approx(values, rel=rel, abs=abs)


# ====================================================================== group advantages


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,group_size,_", SHAPES)
@pytest.mark.parametrize("scale", F.ADVANTAGE_SCALES)
def test_group_normalized_advantages_match_the_loop(seed, batch, group_size, _, scale):
    scores, valid = group_scores(seed, batch, group_size)
    expected = loop_group_normalized_advantages(scores, group_size, scale, 1e-4, valid)
    garbage = torch.where(valid, scores, torch.tensor(float("nan"), dtype=torch.float64))
    got = F.group_normalized_advantages(garbage, group_size, scale=scale, valid=valid)
    assert got.dtype == torch.float64 and got.tolist() == approx(expected, rel=1e-12, abs=1e-12)
    got32 = F.group_normalized_advantages(scores.float(), group_size, scale=scale, valid=valid)
    assert got32.dtype == torch.float32 and got32.tolist() == approx(expected, rel=1e-5, abs=1e-5)
    # without valid, every row counts
    all_in = F.group_normalized_advantages(scores, group_size, scale=scale)
    expected = loop_group_normalized_advantages(scores, group_size, scale, 1e-4)
    assert all_in.tolist() == approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,group_size,_", SHAPES)
def test_leave_one_out_baseline_and_zero_variance_match_the_loops(seed, batch, group_size, _):
    scores, valid = group_scores(seed, batch, group_size)
    pairs = [(F.leave_one_out_advantages, loop_leave_one_out), (F.group_mean_baseline, loop_group_mean_baseline)]
    for fn, loop in pairs:
        expected = loop(scores, group_size, valid)
        assert fn(scores, group_size, valid=valid).tolist() == approx(expected, rel=1e-12, abs=1e-12)
        assert fn(scores.float(), group_size).dtype == torch.float32
        assert fn(scores.float(), group_size).tolist() == approx(loop(scores, group_size), rel=1e-5, abs=1e-5)
    expected = loop_zero_variance_groups(scores, group_size, valid)
    assert F.zero_variance_groups(scores, group_size, valid).tolist() == expected


def test_leave_one_out_worked_case():
    # group [1, 0, 0, 1]: r_0 - mean(0, 0, 1) = 1 - 1/3 = 2/3; r_1 - mean(1, 0, 1) = -2/3.
    got = F.leave_one_out_advantages(torch.tensor([1.0, 0, 0, 1]), 4)
    assert got.tolist() == approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    # pairs [1, 0] -> (1 - 0, 0 - 1); [3, 5] with the 5 invalid: 3 is alone -> 0, the invalid row -> 0.
    got = F.leave_one_out_advantages(torch.tensor([1.0, 0, 3, 5]), 2, valid=[1, 1, 1, 0])
    assert got.tolist() == approx([1.0, -1.0, 0.0, 0.0])


def test_group_normalized_worked_case():
    # group [1, 0, 0, 0]: mean 0.25, unbiased std sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5
    # -> (0.75 / 0.5, -0.25 / 0.5, ...) = (1.5, -0.5, -0.5, -0.5) (eps=0 here).
    got = F.group_normalized_advantages([1.0, 0, 0, 0], 4, eps=0.0)
    assert got.tolist() == approx([1.5, -0.5, -0.5, -0.5])
    # Dr.GRPO: mean only.
    got = F.group_normalized_advantages([1.0, 0, 0, 0], 4, scale="none")
    assert got.tolist() == approx([0.75, -0.25, -0.25, -0.25])


@pytest.mark.parametrize("dtype,tie", [(torch.float32, 0.9), (torch.float64, 0.1)])
def test_zero_variance_groups_give_exactly_zero_advantage(dtype, tie):
    # (t + t + t) / 3 != t in floating point for these ties: the naive r - mean is not exactly 0.
    scores = torch.tensor([tie, tie, tie, 1.0, 0.0, 7.0, 0.3, 0.3, 0.3], dtype=dtype)
    assert (scores[:3] - scores[:3].sum() / 3 != 0).any()
    valid = torch.tensor([True, True, True, True, True, True, True, True, False])  # group 3: 0.3 twice valid
    assert F.zero_variance_groups(scores, 3, valid).tolist() == [True, False, True]
    for fn in (F.leave_one_out_advantages, F.group_mean_baseline,
               *[lambda s, g, valid, scale=scale: F.group_normalized_advantages(s, g, scale=scale, valid=valid)
                 for scale in F.ADVANTAGE_SCALES]):
        adv = fn(scores, 3, valid=valid)
        assert adv.dtype == dtype
        assert torch.equal(adv[:3], torch.zeros(3, dtype=dtype)) and torch.equal(adv[6:], torch.zeros(3, dtype=dtype))
        assert (adv[3:6] != 0).all()
    # fewer than 2 valid members counts as no signal too
    assert F.zero_variance_groups([1.0, 2.0], 2, valid=[True, False]).tolist() == [True]
    assert F.group_normalized_advantages([1.0, 2.0], 2, valid=[True, False]).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "fn",
    [F.group_normalized_advantages, F.leave_one_out_advantages, F.group_mean_baseline, F.zero_variance_groups],
)
def test_group_estimators_reject_bad_groups(fn):
    with pytest.raises(ValueError, match="num_generations"):
        fn(torch.ones(4), 1)
    with pytest.raises(ValueError, match="group_size"):
        fn(torch.ones(5), 2)


def test_unknown_scale_is_rejected():
    with pytest.raises(ValueError, match="group"):
        F.group_normalized_advantages(torch.ones(4), 2, scale="global")


@pytest.mark.parametrize("seed", SEEDS)
def test_an_invalid_rows_score_moves_nobody(seed):
    scores, valid = group_scores(seed, 12, 4)
    valid[1] = valid[6] = False
    changed = scores.clone()
    changed[~valid] = 1e6
    nan = scores.clone()
    nan[~valid] = float("nan")
    estimators = [lambda s, scale=scale: F.group_normalized_advantages(s, 4, scale=scale, valid=valid)
                  for scale in F.ADVANTAGE_SCALES]
    estimators += [
        lambda s: F.leave_one_out_advantages(s, 4, valid=valid),
        lambda s: F.group_mean_baseline(s, 4, valid=valid),
        lambda s: F.zero_variance_groups(s, 4, valid=valid),
    ]
    for fn in estimators:
        base = fn(scores)
        assert torch.equal(fn(changed), base) and torch.equal(fn(nan), base)
    assert (F.group_normalized_advantages(scores, 4, valid=valid)[~valid] == 0).all()
    mask = torch.ones(12, 3, dtype=torch.bool)
    base = F.reinforce_pp_advantages(scores, mask, valid=valid)
    assert torch.equal(F.reinforce_pp_advantages(nan, mask, valid=valid), base)
    assert torch.equal(F.reinforce_pp_advantages(changed, mask, valid=valid), base)
    assert (base[~valid] == 0).all()


def test_bf16_scores_give_float32_advantages():
    scores, valid = group_scores(3, 12, 4)
    bf = scores.bfloat16()
    for fn in (
        lambda s: F.group_normalized_advantages(s, 4, valid=valid),
        lambda s: F.leave_one_out_advantages(s, 4, valid=valid),
        lambda s: F.group_mean_baseline(s, 4, valid=valid),
    ):
        got = fn(bf)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, fn(bf.float()))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,_,width", SHAPES + [(1, 1, 4)])
def test_reinforce_pp_matches_the_loop_on_any_mask(seed, batch, _, width):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, generator=g, dtype=torch.float64)
    kl = torch.randn(batch, width, generator=g, dtype=torch.float64).abs()
    mask = any_mask(g, batch, width)
    valid = torch.rand(batch, generator=g) < 0.8
    expected = loop_reinforce_pp(scores, mask, kl, 0.05, valid)
    got = F.reinforce_pp_advantages(scores, mask, with_garbage(kl, mask, float("inf")), 0.05, valid=valid)
    assert got.dtype == torch.float64 and got.shape == (batch, width)
    assert got.tolist() == [approx(row, rel=1e-10, abs=1e-10) for row in expected]
    # float32 and bf16: float32 out, close to the reference
    got32 = F.reinforce_pp_advantages(scores.float(), mask.int(), kl.float(), 0.05, valid=valid)
    assert got32.dtype == torch.float32
    assert got32.tolist() == [approx(row, rel=1e-4, abs=1e-4) for row in expected]
    bf = F.reinforce_pp_advantages(scores.bfloat16(), mask, kl.bfloat16(), 0.05, valid=valid)
    assert bf.dtype == torch.float32
    rounded = F.reinforce_pp_advantages(scores.bfloat16().float(), mask, kl.bfloat16().float(), 0.05, valid=valid)
    torch.testing.assert_close(bf, rounded)
    # without KL the return of each token is just the score (then whitened)
    no_kl = F.reinforce_pp_advantages(scores, mask)
    assert no_kl.tolist() == [approx(row, rel=1e-10, abs=1e-10) for row in loop_reinforce_pp(scores, mask)]


def test_reinforce_pp_worked_case_and_all_reduce():
    # Row 0 valid on t=0,1 (right padding), row 1 on t=1,2 (left padding), kl_coef 0:
    # returns (1, 1, -) and (-, -1, -1): mean 0, unbiased var 4/3 -> +-sqrt(3)/2.
    scores, mask = torch.tensor([1.0, -1.0]), torch.tensor([[1, 1, 0], [0, 1, 1]])
    h = math.sqrt(3) / 2
    calls = []

    def one_rank_sum(t):
        calls.append(t.clone())
        return t

    got = F.reinforce_pp_advantages(scores, mask, all_reduce=one_rank_sum)
    assert got.tolist() == [approx([h, h, 0.0]), approx([0.0, -h, -h])]
    assert len(calls) == 2  # the sums and counts, then the squared deviations
    # with KL: rewards row 0 = (-0.1*2, -0.1*4 + 1) -> returns (0.4, 0.6)
    got = F.reinforce_pp_advantages(torch.tensor([1.0]), torch.tensor([[1, 1]]), torch.tensor([[2.0, 4.0]]), 0.1)
    # mean 0.5, unbiased std sqrt(0.02) -> (-0.1, 0.1) / sqrt(0.02)
    assert got.tolist() == [approx([-0.1 / math.sqrt(0.02), 0.1 / math.sqrt(0.02)], rel=1e-4)]


def test_soft_overlong_penalty():
    lengths = [0, 10, 12, 13, 16, 20, 21, 100]
    # max 20, cache 8: soft zone starts after 12; 16 -> (12 - 16) / 8 = -0.5; 20 -> -1; 21 -> -1.
    got = F.soft_overlong_penalty(torch.tensor(lengths), 20, 8)
    assert got.dtype == torch.float32
    assert got.tolist() == approx(loop_soft_overlong(lengths, 20, 8))
    assert got.tolist() == approx([0, 0, 0, -0.125, -0.5, -1, -1, -1])
    assert F.soft_overlong_penalty(lengths, 20, 20).tolist() == approx(loop_soft_overlong(lengths, 20, 20))
    for cache in (0, -1, 21):
        with pytest.raises(ValueError, match="cache_length"):
            F.soft_overlong_penalty(lengths, 20, cache)


# ====================================================================== surrogates


def _as_tensor_lists(result):
    return [t.tolist() for t in result]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,_,width", SHAPES)
@pytest.mark.parametrize("eps_low,eps_high,dual", [(0.2, 0.2, None), (0.2, 0.28, 3.0), (0.0, 0.0, 1.5)])
@pytest.mark.parametrize("token_adv", [False, True])
def test_clipped_surrogate_matches_the_loop(seed, batch, _, width, eps_low, eps_high, dual, token_adv):
    logprobs, old, adv_rows, adv_tokens, mask = policy_batch(seed, batch, width)
    old[0, 0] = logprobs[0, 0] - 30  # ratio beyond the log-ratio clamp (row 0 is full)
    adv = adv_tokens if token_adv else adv_rows
    expected = loop_clipped_surrogate(logprobs, old, adv, mask, eps_low, eps_high, dual, 20.0)
    got = F.clipped_surrogate(with_garbage(logprobs, mask), with_garbage(old, mask, float("inf")),
                              with_garbage(adv_tokens, mask) if token_adv else adv_rows, mask, eps_low, eps_high, dual)
    loss, ratio, low, high, dual_flags = _as_tensor_lists(got)
    assert loss == [approx(row, rel=1e-12, abs=1e-12) for row in expected[0]]
    assert ratio == [approx(row, rel=1e-12) for row in expected[1]]
    assert (low, high, dual_flags) == expected[2:]
    assert not got.ratio.requires_grad and got.loss.dtype == torch.float64


def test_clipped_surrogate_worked_cases():
    def one(ratio, adv, **kw):
        lp = torch.tensor([[math.log(ratio)]])
        return F.clipped_surrogate(lp, torch.zeros(1, 1), torch.tensor([adv]), torch.ones(1, 1, dtype=torch.bool), **kw)

    # ratio 1.5, A=+1, eps_high 0.2: min(1.5 * 1, clip(1.5, 0.8, 1.2) * 1) = 1.2 -> loss -1.2, clipped high.
    out = one(1.5, 1.0)
    assert out.loss.item() == approx(-1.2) and out.clipped_high.item() and not out.clipped_low.item()
    # ratio 0.5, A=-1, eps_low 0.2: min(-0.5, clip(0.5) * -1 = -0.8) = -0.8 -> loss 0.8, clipped low.
    out = one(0.5, -1.0)
    assert out.loss.item() == approx(0.8) and out.clipped_low.item() and not out.clipped_high.item()
    # ratio 5, A=-1, dual clip 3: PPO loss max(5, 1.2) = 5; dual bound -3 * -1 = 3 < 5 -> loss 3.
    out = one(5.0, -1.0, dual_clip=3.0)
    assert out.loss.item() == approx(3.0) and out.dual_clipped.item() and not out.clipped_low.item()
    assert one(5.0, -1.0).loss.item() == approx(5.0)  # without dual clip
    # ratio 2 < 3: the dual bound is not active -> loss 2
    out = one(2.0, -1.0, dual_clip=3.0)
    assert out.loss.item() == approx(2.0) and not out.dual_clipped.item()
    # clip-higher eps_high 0.28, ratio 1.25 < 1.28, A=+1 -> not clipped, loss -1.25.
    out = one(1.25, 1.0, epsilon_high=0.28)
    assert out.loss.item() == approx(-1.25) and not out.clipped_high.item()
    # the same ratio with the symmetric 0.2 is clipped at 1.2
    assert one(1.25, 1.0).loss.item() == approx(-1.2)
    # ratio 1.5 with A=-1 is not clipped (the clip only binds on the side that helps): loss 1.5
    out = one(1.5, -1.0)
    assert out.loss.item() == approx(1.5) and not (out.clipped_low.item() or out.clipped_high.item())


def test_clipped_surrogate_gradient_of_token_mean_matches_finite_differences():
    logprobs, old, adv_rows, _, mask = policy_batch(7, 6, 5)
    lp = logprobs.clone().requires_grad_(True)
    per_token = F.clipped_surrogate(lp, old, adv_rows, mask, 0.2, 0.28, 3.0).loss
    loss = F.aggregate_token_losses(per_token, mask, "token-mean")
    (grad,) = torch.autograd.grad(loss, lp)

    def loop_loss(values):
        per_token = loop_clipped_surrogate(values, old, adv_rows, mask, 0.2, 0.28, 3.0)[0]
        return loop_aggregate(per_token, mask, "token-mean")

    assert loss.item() == approx(loop_loss(logprobs), rel=1e-12)
    base = logprobs.tolist()
    h = 1e-6
    for b in range(6):
        for t in range(5):
            plus = [row[:] for row in base]
            minus = [row[:] for row in base]
            plus[b][t] += h
            minus[b][t] -= h
            numeric = (loop_loss(plus) - loop_loss(minus)) / (2 * h)
            assert grad[b, t].item() == approx(numeric, rel=1e-5, abs=1e-7), (b, t)
    assert (grad[~mask] == 0).all()


def test_garbage_at_masked_positions_leaks_into_no_value_or_gradient():
    logprobs, old, adv_rows, adv_tokens, mask = policy_batch(4, 10, 6)
    lp_clean = logprobs.clone().requires_grad_(True)
    lp_dirty = with_garbage(logprobs, mask).requires_grad_(True)
    old_dirty = with_garbage(old, mask, float("-inf"))
    adv_dirty = with_garbage(adv_tokens, mask, float("inf"))
    cases = [
        lambda lp, o, a: F.clipped_surrogate(lp, o, a, mask, dual_clip=2.0).loss,
        lambda lp, o, a: F.sequence_token_surrogate(lp, o, a, mask).loss,
        lambda lp, o, a: F.cispo_surrogate(lp, o, a, mask).loss,
    ]
    for make in cases:
        for mode in F.AGGREGATIONS:
            clean = F.aggregate_token_losses(make(lp_clean, old, adv_tokens), mask, mode, max_length=6)
            dirty = F.aggregate_token_losses(make(lp_dirty, old_dirty, adv_dirty), mask, mode, max_length=6)
            (g_clean,) = torch.autograd.grad(clean, lp_clean)
            (g_dirty,) = torch.autograd.grad(dirty, lp_dirty)
            assert torch.isfinite(dirty) and dirty.item() == approx(clean.item(), rel=1e-12, abs=1e-15)
            assert torch.isfinite(g_dirty).all() and torch.allclose(g_dirty, g_clean)
            assert (g_dirty[~mask] == 0).all()
    seq = F.sequence_ratio_surrogate(lp_dirty, old_dirty, adv_rows, mask)
    assert torch.isfinite(seq.loss).all()
    (g,) = torch.autograd.grad(F.aggregate_sequence_losses(seq.loss, mask.any(-1)), lp_dirty)
    assert torch.isfinite(g).all() and (g[~mask] == 0).all()
    for out in (F.clipped_surrogate(lp_dirty, old_dirty, adv_dirty, mask, dual_clip=2.0),
                F.sequence_token_surrogate(lp_dirty, old_dirty, adv_dirty, mask),
                F.cispo_surrogate(lp_dirty, old_dirty, adv_dirty, mask, epsilon_high=1.0)):
        assert (out.loss[~mask] == 0).all() and torch.isfinite(out.ratio).all()
        for flags in out[2:]:
            assert flags.dtype == torch.bool and not flags[~mask].any()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,_,width", SHAPES)
def test_sequence_surrogates_match_the_loops(seed, batch, _, width):
    logprobs, old, adv_rows, adv_tokens, mask = policy_batch(seed, batch, width)
    # Tiny log-ratios so that the GSPO clip range (3e-4, 4e-4) sees both sides.
    old = logprobs + (old - logprobs) * 2e-3
    old[0, 0] = logprobs[0, 0] + 25  # beyond the clamp
    expected = loop_sequence_surrogate(logprobs, old, adv_rows, mask)
    got = F.sequence_ratio_surrogate(with_garbage(logprobs, mask), with_garbage(old, mask), adv_rows, mask)
    assert got.loss.tolist() == approx(expected[0], rel=1e-12, abs=1e-12)
    assert got.ratio.tolist() == approx(expected[1], rel=1e-12)
    assert (got.clipped_low.tolist(), got.clipped_high.tolist()) == (expected[2], expected[3])
    assert not got.clipped_low[~mask.any(-1)].any() and (got.loss[~mask.any(-1)] == 0).all()
    for adv in (adv_rows, adv_tokens):
        tok = F.sequence_token_surrogate(with_garbage(logprobs, mask), old, adv, mask)
        expected_tok = loop_sequence_token_surrogate(logprobs, old, adv, mask)
        assert tok.loss.tolist() == [approx(r, rel=1e-12, abs=1e-12) for r in expected_tok]
        seq_ratio = torch.tensor(expected[1], dtype=torch.float64).unsqueeze(-1).expand_as(mask)
        torch.testing.assert_close(tok.ratio, torch.where(mask, seq_ratio, torch.ones_like(seq_ratio)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale", [1e-3, 1.0])
def test_gspo_token_with_row_advantages_equals_gspo_in_value_and_gradient(seed, scale):
    logprobs, old, adv_rows, _, mask = policy_batch(seed, 10, 6)
    old = logprobs + (old - logprobs) * scale  # near 1: unclipped; far: mostly clipped
    old[0, 1] = logprobs[0, 1] - 40  # a clamped token too: it must get no gradient in either form
    adv_rows[0] = -1.0  # so that row 0 is not clipped and its other tokens do get gradient
    lp_seq = logprobs.clone().requires_grad_(True)
    lp_tok = logprobs.clone().requires_grad_(True)
    seq = F.sequence_ratio_surrogate(lp_seq, old, adv_rows, mask)
    seq_loss = F.aggregate_sequence_losses(seq.loss, mask.any(-1))
    tok = F.sequence_token_surrogate(lp_tok, old, adv_rows, mask)
    tok_loss = F.aggregate_token_losses(tok.loss, mask, "seq-mean-token-mean")
    assert tok_loss.item() == approx(seq_loss.item(), rel=1e-12, abs=1e-15)
    loop_losses = loop_sequence_surrogate(logprobs, old, adv_rows, mask)[0]
    assert tok_loss.item() == approx(loop_aggregate_sequences(loop_losses, mask.any(-1)), rel=1e-12)
    (g_seq,) = torch.autograd.grad(seq_loss, lp_seq)
    (g_tok,) = torch.autograd.grad(tok_loss, lp_tok)
    assert g_seq.abs().sum() > 0 and g_seq[0, 1] == 0 and (g_seq[0, 2:] != 0).all()
    torch.testing.assert_close(g_tok, g_seq, rtol=1e-12, atol=1e-15)
    assert tok.clipped_low.any(-1).tolist() == seq.clipped_low.tolist()
    assert tok.clipped_high.any(-1).tolist() == seq.clipped_high.tolist()


def test_gspo_worked_case():
    # log-ratios (0.001, 0.003) -> s = exp(0.002) ~ 1.002 > 1 + 4e-4: with A=+1 clipped, loss -1.0004;
    # with A=-1 not clipped (the clip binds only on the helping side): loss +s.
    lp = torch.tensor([[0.001, 0.003], [0.001, 0.003]])
    full = torch.ones(2, 2, dtype=torch.bool)
    out = F.sequence_ratio_surrogate(lp, torch.zeros(2, 2), torch.tensor([1.0, -1.0]), full)
    assert out.loss.tolist() == approx([-1.0004, math.exp(0.002)])
    assert out.clipped_high.tolist() == [True, False] and out.clipped_low.tolist() == [False, False]
    # an all-masked row: loss 0, ratio 1, no flags
    half = torch.tensor([[1, 1], [0, 0]])
    out = F.sequence_ratio_surrogate(lp, torch.zeros(2, 2), torch.tensor([1.0, float("nan")]), half)
    assert out.loss[1].item() == 0.0 and out.ratio[1].item() == 1.0 and not out.clipped_high[1]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("token_adv", [False, True])
def test_cispo_matches_the_loop_in_value_and_gradient(seed, token_adv):
    logprobs, old, adv_rows, adv_tokens, mask = policy_batch(seed, 9, 5)
    old = logprobs + 1.5 * (old - logprobs)  # some ratios above 1.2
    adv = adv_tokens if token_adv else adv_rows
    losses, grads, flags = loop_cispo(logprobs, old, adv, mask, eps_high=1.2)
    lp = with_garbage(logprobs, mask).requires_grad_(True)
    out = F.cispo_surrogate(lp, old, adv, mask, epsilon_high=1.2)
    assert out.loss.tolist() == [approx(r, rel=1e-12, abs=1e-12) for r in losses]
    assert out.clipped_high.tolist() == flags and any(any(r) for r in flags)
    assert not out.clipped_low.any() and not out.dual_clipped.any()
    (g,) = torch.autograd.grad(out.loss.sum(), lp)
    assert g.tolist() == [approx(r, rel=1e-12, abs=1e-12) for r in grads]


def test_cispo_worked_case():
    # ratio 7, eps 5, A=2: the weight is min(7, 5) = 5, so d loss / d logprob = -5 * 2 = -10
    # (the token still learns, unlike a PPO-clipped one); the weight itself gets no gradient.
    lp = torch.tensor([[math.log(7.0) - 1.0]], requires_grad=True)
    out = F.cispo_surrogate(lp, torch.full((1, 1), -1.0), torch.tensor([2.0]), torch.ones(1, 1, dtype=torch.bool))
    assert out.ratio.item() == approx(7.0) and out.clipped_high.item()
    assert out.loss.item() == approx(-5 * 2 * (math.log(7.0) - 1.0))
    (g,) = torch.autograd.grad(out.loss.sum(), lp)
    assert g.item() == approx(-10.0)
    # negative advantage, weight capped too: flag set for either sign
    out = F.cispo_surrogate(lp.detach(), torch.full((1, 1), -1.0), torch.tensor([-2.0]), torch.ones(1, 1))
    assert out.clipped_high.item()


def test_surrogates_take_bf16_and_return_float32():
    logprobs, old, adv_rows, adv_tokens, mask = policy_batch(5, 8, 6, dtype=torch.float32)
    bf = [t.bfloat16() for t in (logprobs, old, adv_tokens)]
    back = [t.float() for t in bf]
    for fn in (lambda *a: F.clipped_surrogate(*a, mask, dual_clip=3.0), lambda *a: F.sequence_token_surrogate(*a, mask),
               lambda *a: F.cispo_surrogate(*a, mask)):
        got, ref = fn(*bf), fn(*back)
        assert got.loss.dtype == torch.float32 and got.ratio.dtype == torch.float32
        torch.testing.assert_close(got.loss, ref.loss)
    got = F.sequence_ratio_surrogate(bf[0], bf[1], adv_rows.bfloat16(), mask)
    assert got.loss.dtype == torch.float32
    ref = F.sequence_ratio_surrogate(back[0], back[1], adv_rows.bfloat16().float(), mask)
    torch.testing.assert_close(got.loss, ref.loss)
    per_token = F.clipped_surrogate(*bf, mask).loss
    for mode in F.AGGREGATIONS:
        loss = F.aggregate_token_losses(per_token.bfloat16(), mask, mode, max_length=6)
        assert loss.dtype == torch.float32


def test_surrogate_arguments_are_checked():
    lp, mask = torch.zeros(2, 3), torch.ones(2, 3)
    adv = torch.ones(2)
    bad = ({"epsilon_low": 1.0}, {"epsilon_low": -0.1}, {"epsilon_high": -0.1}, {"dual_clip": 1.0}, {"dual_clip": 0.5})
    for kw in bad:
        with pytest.raises(ValueError):
            F.clipped_surrogate(lp, lp, adv, mask, **kw)
    with pytest.raises(ValueError, match="advantages"):
        F.clipped_surrogate(lp, lp, torch.ones(3), mask)
    with pytest.raises(ValueError, match="advantages"):
        F.sequence_ratio_surrogate(lp, lp, torch.ones(2, 3), mask)
    with pytest.raises(ValueError):
        F.cispo_surrogate(lp, lp, adv, mask, epsilon_high=0.0)
    with pytest.raises(ValueError):
        F.sequence_token_surrogate(lp, lp, adv, mask, epsilon_low=1.5)


# ====================================================================== aggregation


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch,_,width", SHAPES)
@pytest.mark.parametrize("mode", F.AGGREGATIONS)
def test_aggregation_matches_the_loop(seed, batch, _, width, mode):
    g = torch.Generator().manual_seed(seed)
    per_token = torch.randn(batch, width, generator=g, dtype=torch.float64)
    mask = any_mask(g, batch, width)
    expected = loop_aggregate(per_token, mask, mode, max_length=width + 3)
    got = F.aggregate_token_losses(with_garbage(per_token, mask), mask, mode, max_length=width + 3)
    assert got.dim() == 0 and got.item() == approx(expected, rel=1e-12, abs=1e-15)
    explicit = F.aggregate_token_losses(
        per_token, mask.int(), mode, token_total=50.0, sequence_total=torch.tensor(7), max_length=width + 3
    )
    assert explicit.item() == approx(loop_aggregate(per_token, mask, mode, 50, 7, width + 3), rel=1e-12, abs=1e-15)
    totals = F.step_totals(mask)
    assert totals == (float(mask.sum()), float(mask.any(-1).sum()))
    assert isinstance(totals.tokens, float) and isinstance(totals.sequences, float)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", F.AGGREGATIONS)
def test_aggregation_is_additive_over_micro_batches_with_step_totals(seed, mode):
    g = torch.Generator().manual_seed(seed)
    per_token = torch.randn(11, 6, generator=g, dtype=torch.float64)
    mask = any_mask(g, 11, 6)
    totals = F.step_totals(mask)
    kw = dict(token_total=totals.tokens, sequence_total=totals.sequences, max_length=6)
    whole = F.aggregate_token_losses(per_token, mask, mode, **kw)
    assert whole.item() == approx(F.aggregate_token_losses(per_token, mask, mode, max_length=6).item(), rel=1e-12)
    for cut in (1, 4, 10):
        halves = (slice(0, cut), slice(cut, None))
        parts = [F.aggregate_token_losses(per_token[rows], mask[rows], mode, **kw) for rows in halves]
        assert (parts[0] + parts[1]).item() == approx(whole.item(), rel=1e-12, abs=1e-15)
    # the per-sequence (GSPO) reduction too
    per_seq = torch.randn(11, generator=g, dtype=torch.float64)
    rows_ok = mask.any(-1)
    whole = F.aggregate_sequence_losses(per_seq, rows_ok)
    assert whole.item() == approx(loop_aggregate_sequences(per_seq, rows_ok), rel=1e-12)
    halves = (slice(0, 5), slice(5, None))
    parts = [F.aggregate_sequence_losses(per_seq[s], rows_ok[s], totals.sequences) for s in halves]
    assert (parts[0] + parts[1]).item() == approx(whole.item(), rel=1e-12)


def test_aggregation_edge_cases():
    per_token = torch.full((3, 4), float("nan"), requires_grad=True)
    empty = torch.zeros(3, 4, dtype=torch.bool)
    for mode in F.AGGREGATIONS:
        loss = F.aggregate_token_losses(per_token, empty, mode, max_length=4)
        assert loss.item() == 0.0 and loss.requires_grad
        (g,) = torch.autograd.grad(loss, per_token)
        assert (g == 0).all()
    assert F.aggregate_sequence_losses(torch.full((3,), float("nan")), torch.zeros(3, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="seq-mean-token-mean"):
        F.aggregate_token_losses(torch.zeros(2, 2), torch.ones(2, 2), "mean")
    with pytest.raises(ValueError, match="max_length"):
        F.aggregate_token_losses(torch.zeros(2, 2), torch.ones(2, 2), "seq-mean-token-sum-norm")
    # Worked case: row 0 = (1, 2, 3) all valid, row 1 = (_, 4, _) one valid token.
    per_token = torch.tensor([[1.0, 2.0, 3.0], [9.0, 4.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 0]])
    # token-mean: (1 + 2 + 3 + 4) / 4 = 2.5; seq-mean-token-mean: (2 + 4) / 2 = 3;
    # Dr.GRPO with max_length 5: 10 / (2 * 5) = 1.
    got = [F.aggregate_token_losses(per_token, mask, m, max_length=5).item() for m in F.AGGREGATIONS]
    assert got == approx([3.0, 2.5, 1.0])
