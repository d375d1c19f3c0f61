"""PPO maths of ift.objectives.functional against loop references and hand-worked cases."""

import math
import threading

import pytest
import torch

from ift.objectives import functional as F
from reference_impls import (
    loop_explained_variance,
    loop_gae,
    loop_mask_first_tokens,
    loop_masked_mean,
    loop_masked_var,
    loop_masked_whiten,
    loop_per_token_rewards,
    loop_ppo_policy_loss,
    loop_ppo_value_loss,
    loop_response_mask_after_eos,
)


def prefix_mask(lengths, width):
    """``B x width`` bool mask whose row ``b`` has ``lengths[b]`` leading trues."""
    return torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


LENGTHS = [7, 0, 1, 4, 9, 3]  # full, all-masked, length 1, ...
WIDTH = 9


def random_batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shape = (len(LENGTHS), WIDTH)
    return (
        torch.randn(shape, generator=g, dtype=dtype),
        torch.randn(shape, generator=g, dtype=dtype),
        prefix_mask(LENGTHS, WIDTH),
    )


def with_garbage(x, mask, value=float("nan")):
    """``x`` with masked positions overwritten: results must not depend on them."""
    return torch.where(mask, x, torch.full_like(x, value))


# ---------------------------------------------------------------- masked statistics


@pytest.mark.parametrize("unbiased", [True, False])
def test_masked_mean_and_var_match_loops(unbiased):
    x, _, mask = random_batch(1)
    assert F.masked_mean(with_garbage(x, mask), mask).item() == pytest.approx(loop_masked_mean(x, mask), rel=1e-12)
    got = F.masked_var(with_garbage(x, mask, 1e6), mask, unbiased=unbiased).item()
    assert got == pytest.approx(loop_masked_var(x, mask, unbiased), rel=1e-12)


def test_masked_mean_along_a_dim_and_empty_rows():
    x, _, mask = random_batch(2)
    per_row = F.masked_mean(with_garbage(x, mask), mask, dim=-1)
    for b, row in enumerate(per_row.tolist()):
        assert row == pytest.approx(loop_masked_mean(x[b : b + 1], mask[b : b + 1]), rel=1e-12)
    assert per_row[1].item() == 0.0  # the all-masked row: 0, not nan
    assert F.masked_mean(x, torch.zeros_like(mask)).item() == 0.0
    assert F.masked_var(x, prefix_mask([1, 0, 0, 0, 0, 0], WIDTH)).item() == 0.0  # n = 1, unbiased


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_matches_loop_and_is_standardised(shift_mean):
    x, _, mask = random_batch(3)
    x = 3.0 + 5.0 * x
    got = F.masked_whiten(with_garbage(x, mask, 1e9), mask, shift_mean=shift_mean)
    torch.testing.assert_close(got, torch.tensor(loop_masked_whiten(x, mask, shift_mean), dtype=got.dtype))
    assert (got[~mask] == 0).all()
    valid = got[mask]
    expected_mean = 0.0 if shift_mean else loop_masked_mean(x, mask)
    assert valid.mean().item() == pytest.approx(expected_mean, abs=1e-9)
    assert valid.std().item() == pytest.approx(1.0, rel=1e-6)  # unbiased std, like the default


def test_masked_whiten_half_precision_computes_in_float32():
    # Values ~1000: their squares overflow float16 (max 65504) if summed in half precision.
    x = 1000.0 + 30.0 * torch.randn(4, 16, generator=torch.Generator().manual_seed(4))
    mask = prefix_mask([16, 10, 3, 0], 16)
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        got = F.masked_whiten(xh, mask)
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        expected = torch.tensor(loop_masked_whiten(xh.double(), mask), dtype=torch.float32)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


class FakeProcessGroup:
    """Simulates ``world`` DDP ranks running in threads: ``all_reduce`` sums over all of them."""

    def __init__(self, world, in_place=False):
        self.barrier = threading.Barrier(world, timeout=10)
        self.slots = [None] * world
        self.in_place = in_place
        self.calls = 0

    def for_rank(self, rank):
        def all_reduce(t):
            self.slots[rank] = t.clone()
            self.barrier.wait()
            total = torch.stack(self.slots).sum(0)
            self.barrier.wait()
            if rank == 0:
                self.calls += 1
            if self.in_place:
                t.copy_(total)
                return None
            return total

        return all_reduce


@pytest.mark.parametrize("in_place", [False, True])
def test_masked_whiten_across_two_fake_ranks_equals_whitening_the_concatenation(in_place):
    g = torch.Generator().manual_seed(5)
    # Ranks hold different amounts of data with different means; rank 1 has an empty row.
    shards = [(torch.randn(3, 6, generator=g, dtype=torch.float64), prefix_mask([6, 2, 5], 6)),
              (4 + 2 * torch.randn(2, 6, generator=g, dtype=torch.float64), prefix_mask([0, 3], 6))]
    group = FakeProcessGroup(2, in_place=in_place)
    results = [None, None]

    def run(rank):
        x, m = shards[rank]
        results[rank] = F.masked_whiten(x, m, all_reduce=group.for_rank(rank))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert group.calls == 2  # sums+counts, then squared deviations
    whole = F.masked_whiten(torch.cat([s[0] for s in shards]), torch.cat([s[1] for s in shards]))
    torch.testing.assert_close(torch.cat(results), whole)
    # ... and differs from whitening each shard on its own (the test can tell).
    assert not torch.allclose(results[0], F.masked_whiten(*shards[0]))


# ---------------------------------------------------------------- GAE


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_backward_loop(gamma, lam):
    rewards, values, mask = random_batch(6)
    adv, ret = F.gae(with_garbage(rewards, mask), with_garbage(values, mask), mask, gamma, lam)
    ref_adv, ref_ret = loop_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(ref_adv, dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor(ref_ret, dtype=torch.float64))
    assert (adv[1] == 0).all() and (ret[1] == 0).all()  # all-masked row


def test_gae_hand_case():
    # One row, 3 valid tokens, gamma = 1, lam = 0.5; V after the last token is 0.
    # rewards [0, 0, 1], values [0.5, 0.25, 0.75]:
    #   delta_2 = 1 + 0 - 0.75 = 0.25               A_2 = 0.25
    #   delta_1 = 0 + 0.75 - 0.25 = 0.5             A_1 = 0.5 + 0.5 * 0.25 = 0.625
    #   delta_0 = 0 + 0.25 - 0.5 = -0.25            A_0 = -0.25 + 0.5 * 0.625 = 0.0625
    # returns = A + V = [0.5625, 0.875, 1.0]; the 4th (padding) position is 0.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0]])
    values = torch.tensor([[0.5, 0.25, 0.75, 9.0]])
    adv, ret = F.gae(rewards, values, prefix_mask([3], 4), 1.0, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.0625, 0.625, 0.25, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.5625, 0.875, 1.0, 0.0]]))


def test_gae_long_sequence_and_bf16_inputs():
    g = torch.Generator().manual_seed(7)
    rewards = torch.randn(3, 300, generator=g, dtype=torch.float64)
    values = torch.randn(3, 300, generator=g, dtype=torch.float64)
    mask = prefix_mask([300, 150, 65], 300)
    ref_adv, _ = loop_gae(rewards, values, mask, 1.0, 0.95)
    adv, _ = F.gae(rewards, values, mask, 1.0, 0.95)
    torch.testing.assert_close(adv, torch.tensor(ref_adv, dtype=torch.float64))
    adv_bf16, ret_bf16 = F.gae(rewards.bfloat16(), values.bfloat16(), mask, 1.0, 0.95)
    assert adv_bf16.dtype == torch.float32 and ret_bf16.dtype == torch.float32
    ref_bf16, _ = loop_gae(rewards.bfloat16().double(), values.bfloat16().double(), mask, 1.0, 0.95)
    torch.testing.assert_close(adv_bf16, torch.tensor(ref_bf16, dtype=torch.float32), atol=1e-4, rtol=1e-4)


def test_gae_rejects_non_prefix_mask_and_bad_hyperparameters():
    rewards, values, _ = random_batch(8)
    holes = torch.ones_like(rewards, dtype=torch.bool)
    holes[2, 3] = False
    with pytest.raises(ValueError, match="contiguous prefix"):
        F.gae(rewards, values, holes, 1.0, 0.95)
    with pytest.raises(ValueError, match="gamma"):
        F.gae(rewards, values, prefix_mask(LENGTHS, WIDTH), 1.5, 0.95)


# ---------------------------------------------------------------- KL and rewards


def test_kl_penalty_estimators():
    logp = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64)
    ref = torch.tensor([-1.5, -1.0, -0.5], dtype=torch.float64)
    d = [0.5, -1.0, 0.0]
    torch.testing.assert_close(F.kl_penalty(logp, ref, "k1"), torch.tensor(d, dtype=torch.float64))
    torch.testing.assert_close(F.kl_penalty(logp, ref, "k2"), torch.tensor([0.5 * v * v for v in d], dtype=torch.float64))
    k3 = [(math.exp(-v) - 1) - (-v) for v in d]  # (r - 1) - log r, r = exp(ref - logp) = exp(-d)
    torch.testing.assert_close(F.kl_penalty(logp, ref, "k3"), torch.tensor(k3, dtype=torch.float64))
    assert (F.kl_penalty(logp, ref, "k3") >= 0).all()
    assert F.kl_penalty(logp.half(), ref.half(), "k3").dtype == torch.float32
    with pytest.raises(ValueError, match="estimator"):
        F.kl_penalty(logp, ref, "k4")


def test_per_token_rewards_match_loop():
    kl, _, mask = random_batch(9)
    scores = [1.0, 0.1, 0.0, 1.0, -2.0, 0.5]
    got = F.per_token_rewards(torch.tensor(scores), with_garbage(kl, mask), mask, 0.05)
    torch.testing.assert_close(got, torch.tensor(loop_per_token_rewards(scores, kl, mask, 0.05), dtype=got.dtype))
    assert (got[1] == 0).all()  # no valid token: no KL, no score


def test_reward_lands_on_eos_or_last_token():
    eos, pad = 1, 0
    ids = torch.tensor([
        [5, 6, eos, pad, pad],  # EOS at 2: score on position 2
        [5, 6, 7, 8, 9],        # hit max length without EOS: score on the last token
        [eos, pad, pad, pad, pad],  # immediate EOS: score on position 0
    ])
    mask = F.response_mask_after_eos(ids, eos, pad)
    rewards = F.per_token_rewards([10.0, 20.0, 30.0], torch.zeros(3, 5), mask, 0.1)
    expected = torch.tensor([
        [0, 0, 10.0, 0, 0],
        [0, 0, 0, 0, 20.0],
        [30.0, 0, 0, 0, 0],
    ])
    torch.testing.assert_close(rewards, expected)
    assert F.ended_with_eos(ids, eos).tolist() == [True, False, True]


def test_response_mask_with_pad_equal_to_eos():
    eos = pad = 1
    ids = torch.tensor([
        [5, eos, eos, eos],  # first EOS ends it; the rest is padding
        [5, 6, 7, 8],        # no EOS: all valid
        [eos, eos, eos, eos],
    ])
    mask = F.response_mask_after_eos(ids, eos, pad)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True], [True, False, False, False]]
    assert F.ended_with_eos(ids, eos).tolist() == [True, False, True]
    rewards = F.per_token_rewards(torch.tensor([1.0, 2.0, 3.0]), torch.ones(3, 4), mask, 0.5)
    # KL part -0.5 on each valid token, the score added on the last valid one.
    assert rewards.tolist() == [[-0.5, 0.5, 0.0, 0.0], [-0.5, -0.5, -0.5, 1.5], [2.5, 0.0, 0.0, 0.0]]


def test_response_mask_matches_loop_on_random_ids():
    g = torch.Generator().manual_seed(10)
    ids = torch.randint(0, 6, (40, 12), generator=g)
    ids[::3, -4:] = 0  # trailing padding without EOS on some rows
    for eos, pad in [(1, 0), (1, 1), ([1, 2], 0), (1, None)]:
        eos_list = eos if isinstance(eos, list) else [eos]
        got = F.response_mask_after_eos(ids, eos, pad)
        assert got.tolist() == loop_response_mask_after_eos(ids, eos_list, pad), (eos, pad)
        ended = [any(tok in eos_list for tok in row) for row in ids.tolist()]
        assert F.ended_with_eos(ids, eos).tolist() == ended


def test_pad_before_eos_is_a_real_token():
    # pad id 0 sampled mid-response (pad != eos): still valid, since EOS comes later.
    ids = torch.tensor([[4, 0, 5, 1, 0, 0]])
    assert F.response_mask_after_eos(ids, 1, 0).tolist() == [[True, True, True, True, False, False]]


# ---------------------------------------------------------------- PPO losses


def test_policy_loss_hand_case():
    eps = 0.2
    # Row 0 (2 valid tokens + 1 masked one carrying garbage):
    #   t0: rho = 1.5, A = +2: unclipped -A rho = -3.0; clipped -A * 1.2 = -2.4
    #       max = -2.4 -> clipped branch active (ratio above 1+eps, positive advantage).
    #   t1: rho = 0.5, A = -1: unclipped 0.5; clipped -(-1) * 0.8 = 0.8
    #       max = 0.8 -> clipped (ratio below 1-eps, negative advantage).
    #   row mean = (-2.4 + 0.8) / 2 = -0.8
    # Row 1 (3 valid tokens):
    #   t0: rho = 1.5, A = -1: unclipped 1.5; clipped 1.2 -> max 1.5, NOT clipped (pessimistic side).
    #   t1: rho = 0.5, A = +2: unclipped -1.0; clipped -1.6 -> max -1.0, NOT clipped.
    #   t2: rho = 1.1, A = +3: inside [0.8, 1.2], both -3.3 -> not clipped (ties do not count).
    #   row mean = (1.5 - 1.0 - 3.3) / 3 = -2.8 / 3
    # Row 2: no valid token -> ignored by the batch mean.
    # loss = (-0.8 - 2.8 / 3) / 2 = -0.8666...; clipfrac = 2 clipped / 5 valid = 0.4
    # approx_kl = mean over the 5 valid tokens of 0.5 * log(rho)^2.
    log = math.log
    old = torch.zeros(3, 3, dtype=torch.float64)
    logp = torch.tensor([[log(1.5), log(0.5), 50.0], [log(1.5), log(0.5), log(1.1)], [7.0, 7.0, 7.0]],
                        dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[2.0, -1.0, 1e6], [-1.0, 2.0, 3.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    mask = prefix_mask([2, 3, 0], 3)
    loss, clipfrac, approx_kl = F.ppo_policy_loss(logp, old, adv, mask, eps)
    assert loss.item() == pytest.approx((-0.8 - 2.8 / 3) / 2, rel=1e-12)
    assert clipfrac.item() == pytest.approx(0.4)
    assert approx_kl.item() == pytest.approx(0.5 * (2 * log(1.5) ** 2 + 2 * log(0.5) ** 2 + log(1.1) ** 2) / 5)
    loss.backward()
    # d loss / d logp on an unclipped token = (-A rho) * (1 / n_row) * (1 / n_rows):
    #   row 1: -(-1)(1.5)/6 = 0.25, -(2)(0.5)/6 = -1/6, -(3)(1.1)/6 = -0.55; clipped or masked: 0.
    expected_grad = torch.tensor([[0.0, 0.0, 0.0], [0.25, -1 / 6, -0.55], [0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, expected_grad)


def test_policy_loss_matches_loop_random():
    g = torch.Generator().manual_seed(11)
    logp, adv, mask = random_batch(12)
    old = logp + 0.3 * torch.randn(logp.shape, generator=g, dtype=torch.float64)
    loss, clipfrac, approx_kl = F.ppo_policy_loss(logp, with_garbage(old, mask), with_garbage(adv, mask), mask, 0.2)
    ref = loop_ppo_policy_loss(logp, old, adv, mask, 0.2)
    assert (loss.item(), clipfrac.item(), approx_kl.item()) == pytest.approx(ref, rel=1e-10)
    assert 0 < clipfrac.item() < 1


def test_policy_loss_bf16_inputs_and_all_masked_batch():
    logp, adv, mask = random_batch(13, dtype=torch.float32)
    old = logp.detach() + 0.1
    logp_bf16 = logp.bfloat16().requires_grad_(True)
    loss, _, _ = F.ppo_policy_loss(logp_bf16, old.bfloat16(), adv.bfloat16(), mask, 0.2)
    assert loss.dtype == torch.float32
    ref, _, _ = loop_ppo_policy_loss(logp_bf16.double(), old.bfloat16().double(), adv.bfloat16().double(), mask, 0.2)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    loss.backward()
    assert logp_bf16.grad.dtype == torch.bfloat16
    empty = torch.zeros_like(mask)
    loss0, clip0, kl0 = F.ppo_policy_loss(logp.requires_grad_(True), old, adv, empty, 0.2)
    assert loss0.item() == 0.0 and clip0.item() == 0.0 and kl0.item() == 0.0
    loss0.backward()
    assert (logp.grad == 0).all()


def test_value_loss_hand_case():
    eps = 0.2
    # Row 0:
    #   a: V_old 0, V 0.5, R 1: unclipped (0.5-1)^2 = 0.25; V clipped to 0.2: (0.2-1)^2 = 0.64
    #      -> max 0.64, clipped branch active; 0.5 * 0.64 = 0.32
    #   b: V_old 0, V 0.5, R 0: unclipped 0.25; clipped (0.2)^2 = 0.04 -> 0.25, not clipped; 0.125
    #   row mean = (0.32 + 0.125) / 2 = 0.2225
    # Row 1:
    #   c: V_old 1, V 0.9, R 2: inside the band, both 1.1^2 = 1.21 -> 0.605, not clipped
    #   d: V_old 0, V -1, R -0.5: unclipped 0.25; clipped to -0.2: 0.3^2 = 0.09 -> 0.25; 0.125
    #   row mean = (0.605 + 0.125) / 2 = 0.365
    # (a third position of row 1 is masked and holds garbage)
    # loss = (0.2225 + 0.365) / 2 = 0.29375; clipfrac = 1 / 4
    values = torch.tensor([[0.5, 0.5, 0.0], [0.9, -1.0, 1e6]], dtype=torch.float64)
    old = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, -1e6]], dtype=torch.float64)
    returns = torch.tensor([[1.0, 0.0, 0.0], [2.0, -0.5, 3.0]], dtype=torch.float64)
    mask = prefix_mask([2, 2], 3)
    loss, clipfrac = F.ppo_value_loss(values, old, returns, mask, eps)
    assert loss.item() == pytest.approx(0.29375, rel=1e-12)
    assert clipfrac.item() == pytest.approx(0.25)
    # Without clipping: 0.5 (V - R)^2 -> row 0: (0.125 + 0.125) / 2, row 1: (0.605 + 0.125) / 2
    loss_plain, clip_plain = F.ppo_value_loss(values, old, returns, mask, None)
    assert loss_plain.item() == pytest.approx((0.125 + 0.365) / 2, rel=1e-12)
    assert clip_plain.item() == 0.0


def test_value_loss_matches_loop_random():
    g = torch.Generator().manual_seed(14)
    values, returns, mask = random_batch(15)
    old = values + 0.4 * torch.randn(values.shape, generator=g, dtype=torch.float64)
    loss, clipfrac = F.ppo_value_loss(values, with_garbage(old, mask), with_garbage(returns, mask), mask, 0.2)
    assert (loss.item(), clipfrac.item()) == pytest.approx(loop_ppo_value_loss(values, old, returns, mask, 0.2), rel=1e-10)


def test_explained_variance():
    values, returns, mask = random_batch(16)
    got = F.explained_variance(with_garbage(values, mask), with_garbage(returns, mask), mask)
    assert got.item() == pytest.approx(loop_explained_variance(values, returns, mask), rel=1e-10)
    assert F.explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    # A constant predictor equal to the mean return explains nothing: 0.
    mean_pred = torch.full_like(returns, loop_masked_mean(returns, mask))
    assert F.explained_variance(mean_pred, returns, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(F.explained_variance(values, torch.ones_like(returns), mask).item())


@pytest.mark.parametrize("counts", [
    [3, 0, 1, 9, 20, None],  # inside, zero, length 1, the whole row, past its end, uncut
    [None] * 6,
])
def test_mask_first_tokens_matches_the_loop(counts):
    _, _, mask = random_batch()
    got = F.mask_first_tokens(mask, counts)
    assert got.dtype == torch.bool
    assert got.tolist() == loop_mask_first_tokens(mask, counts)


def test_mask_first_tokens_refuses_bad_counts():
    _, _, mask = random_batch()
    with pytest.raises(ValueError, match=">= 0"):
        F.mask_first_tokens(mask, [-1] + [None] * 5)
    with pytest.raises(ValueError, match="B counts"):
        F.mask_first_tokens(mask, [1, 2])
