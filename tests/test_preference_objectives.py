"""DPO and ORPO: the pure formulas against slow Python loops, then the objectives on a
tiny GPT-2 (reference handling, padding on either side, bf16, pickling)."""

import copy
import math
import pickle

import pytest
import torch

from factories import PREFERENCE_PAIRS, encode, preference_batch
from ift.modules import FineTuneModule, build_policy
from ift.objectives import DPO, ORPO
from ift.objectives import functional as Fn
from ift.objectives.preference import pair_logprobs

IGNORE = Fn.IGNORE_INDEX


# ------------------------------------------------------------------ loop references
def loop_log_softmax_at(row, index):
    top = max(row)
    return row[index] - top - math.log(sum(math.exp(v - top) for v in row))


def loop_sequence_logprobs(logits, labels, average):
    logits, labels = logits.double().tolist(), labels.tolist()
    out = []
    for b in range(len(labels)):
        total, count = 0.0, 0
        for t in range(len(labels[b]) - 1):
            target = labels[b][t + 1]
            if target != IGNORE:
                total += loop_log_softmax_at(logits[b][t], target)
                count += 1
        out.append(total / count if average and count else (total if count else 0.0))
    return out


def loop_logsigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def loop_dpo(pc, pr, rc, rr, beta, eps):
    losses, chosen_rewards, rejected_rewards = [], [], []
    for a, b, c, d in zip(pc, pr, rc, rr):
        h = (a - c) - (b - d)
        losses.append(-(1 - eps) * loop_logsigmoid(beta * h) - eps * loop_logsigmoid(-beta * h))
        chosen_rewards.append(beta * (a - c))
        rejected_rewards.append(beta * (b - d))
    return losses, chosen_rewards, rejected_rewards


def loop_log_odds(logp):
    p = math.exp(logp)
    return math.log(p / (1 - p))


def loop_orpo(chosen, rejected, beta):
    out = []
    for w, l in zip(chosen, rejected):
        ratio = loop_log_odds(w) - loop_log_odds(l)
        out.append(-w - beta * loop_logsigmoid(ratio))
    return out


# ------------------------------------------------------------------ fixtures
def random_labels(batch, width, vocab, side, seed):
    """Labels with a prompt mask and padding on ``side``; one row has a single label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (batch, width), generator=g)
    lengths = [width, width - 3, 4, 2][:batch]
    for b, n in enumerate(lengths):
        keep = torch.full((width,), IGNORE)
        if side == "right":
            keep[1:n] = labels[b, 1:n]  # token 0 is the prompt
        else:
            keep[width - n + 1:] = labels[b, width - n + 1:]
        labels[b] = keep
    return labels


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("average", [False, True])
def test_sequence_logprobs_matches_loop(side, average):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 9, 11, generator=g, dtype=torch.float64) * 3
    labels = random_labels(4, 9, 11, side, seed=2)
    got = Fn.sequence_logprobs(logits, labels, average=average)
    want = torch.tensor(loop_sequence_logprobs(logits, labels, average), dtype=torch.float64)
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_sequence_logprobs_row_without_labels_and_length_one():
    logits = torch.randn(2, 1, 5)
    labels = torch.full((2, 1), IGNORE)
    assert torch.equal(Fn.sequence_logprobs(logits, labels), torch.zeros(2))
    logits = torch.randn(2, 4, 5)
    labels = torch.full((2, 4), IGNORE)
    assert torch.equal(Fn.sequence_logprobs(logits, labels, average=True), torch.zeros(2))


def test_sequence_logprobs_bf16_close_to_float32():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 8, 13, generator=g)
    labels = random_labels(3, 8, 13, "right", seed=4)
    got = Fn.sequence_logprobs(logits.bfloat16(), labels)
    assert got.dtype == torch.float32
    want = torch.tensor(loop_sequence_logprobs(logits.bfloat16().float(), labels, False), dtype=torch.float32)
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (0.5, 0.0), (0.1, 0.2), (2.0, 0.1)])
def test_dpo_loss_matches_loop(beta, eps):
    g = torch.Generator().manual_seed(5)
    pc, pr, rc, rr = (torch.randn(6, generator=g, dtype=torch.float64) * 20 - 30 for _ in range(4))
    losses, chosen_rewards, rejected_rewards = Fn.dpo_loss(pc, pr, rc, rr, beta, eps)
    want = loop_dpo(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), beta, eps)
    for got, expected in zip((losses, chosen_rewards, rejected_rewards), want):
        assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-10)


def test_dpo_loss_identical_pair_is_log2_and_extreme_margins_are_finite():
    x = torch.tensor([-3.0, -40.0])
    losses, _, _ = Fn.dpo_loss(x, x, x - 1, x - 1, beta=0.1)
    assert torch.allclose(losses, torch.full((2,), math.log(2.0)))
    big = torch.tensor([1e4, -1e4], requires_grad=True)
    zero = torch.zeros(2)
    losses, _, _ = Fn.dpo_loss(big, zero, zero, zero, beta=1.0)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(big.grad).all()
    assert losses[0] < 1e-6 and abs(losses[1] - 1e4) < 1e-2


def test_dpo_loss_bf16_inputs_computed_in_float32():
    g = torch.Generator().manual_seed(6)
    pc, pr, rc, rr = (torch.randn(5, generator=g) * 5 for _ in range(4))
    losses, _, _ = Fn.dpo_loss(pc.bfloat16(), pr.bfloat16(), rc.bfloat16(), rr.bfloat16(), 0.1)
    assert losses.dtype == torch.float32
    want = loop_dpo(*(t.bfloat16().float().tolist() for t in (pc, pr, rc, rr)), 0.1, 0.0)[0]
    assert torch.allclose(losses, torch.tensor(want), atol=1e-6)


def test_dpo_loss_rejects_bad_hyper_parameters():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        Fn.dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        Fn.dpo_loss(x, x, x, x, beta=0.1, label_smoothing=0.5)


def test_log_odds_matches_loop_and_is_stable():
    logps = torch.tensor([-1e-5, -0.01, -0.3, -0.6931, -0.7, -2.0, -30.0, -200.0], dtype=torch.float64)
    got = Fn.log_odds(logps)
    want = torch.tensor([loop_log_odds(v) for v in logps.tolist()[:-1]] + [-200.0], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
    # p = 1 exactly (and float32 values that round exp(logp) to 1): large but finite, finite gradient.
    x = torch.tensor([0.0, -1e-9, -1e-3, -3.0], requires_grad=True)
    out = Fn.log_odds(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert out[0] == out[1] and abs(out[0] - math.log((1 - 1e-6) / 1e-6)) < 1e-2
    # float32 accuracy near 0, where the naive log(1 - exp(x)) loses every digit.
    near = Fn.log_odds(torch.tensor([-1e-4], dtype=torch.float32))
    assert abs(near.item() - loop_log_odds(-1e-4)) < 1e-3


@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0])
def test_orpo_loss_matches_loop(beta):
    g = torch.Generator().manual_seed(7)
    chosen = -torch.rand(6, generator=g, dtype=torch.float64) * 3 - 1e-3
    rejected = -torch.rand(6, generator=g, dtype=torch.float64) * 3 - 1e-3
    losses, ratio_losses, ratio = Fn.orpo_loss(chosen, rejected, beta)
    want = loop_orpo(chosen.tolist(), rejected.tolist(), beta)
    assert torch.allclose(losses, torch.tensor(want, dtype=torch.float64), atol=1e-9)
    want_ratio = [loop_log_odds(w) - loop_log_odds(l) for w, l in zip(chosen.tolist(), rejected.tolist())]
    assert torch.allclose(ratio, torch.tensor(want_ratio, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(ratio_losses, torch.tensor([-loop_logsigmoid(r) for r in want_ratio], dtype=torch.float64))


def test_orpo_identical_pair_and_bf16():
    x = torch.tensor([-0.5, -2.0])
    losses, ratio_losses, _ = Fn.orpo_loss(x, x, beta=0.25)
    assert torch.allclose(ratio_losses, torch.full((2,), math.log(2.0)))
    assert torch.allclose(losses, -x + 0.25 * math.log(2.0))
    losses_bf16, _, _ = Fn.orpo_loss(x.bfloat16(), (x - 1).bfloat16(), beta=0.25)
    assert losses_bf16.dtype == torch.float32
    want = loop_orpo(x.bfloat16().float().tolist(), (x - 1).bfloat16().float().tolist(), 0.25)
    assert torch.allclose(losses_bf16, torch.tensor(want), atol=1e-6)


# ------------------------------------------------------------------ objectives on a model
# ``tokenizer`` (the character tokenizer) is a fixture of conftest.py.


PAIRS = PREFERENCE_PAIRS


def one_by_one_logprobs(policy, tokenizer, index, average):
    """Each sequence alone, unpadded: the ground truth for batched log-probs."""
    out = []
    for pair in PAIRS:
        ids, labels = encode(tokenizer, pair[0], pair[index])
        logits = policy(torch.tensor([ids])).logits
        out.append(float(Fn.sequence_logprobs(logits, torch.tensor([labels]), average)[0]))
    return torch.tensor(out)


@pytest.mark.parametrize("side,extra", [("right", 0), ("left", 0), ("right", 3), ("left", 2)])
@pytest.mark.parametrize("average", [False, True])
def test_pair_logprobs_padding_either_side(tokenizer, side, extra, average):
    torch.manual_seed(0)
    policy = build_policy("tiny-gpt2", tokenizer).eval()
    batch = preference_batch(tokenizer, side=side, extra=extra)
    with torch.no_grad():
        chosen, rejected = pair_logprobs(policy, batch, average)
        want_chosen = one_by_one_logprobs(policy, tokenizer, 1, average)
        want_rejected = one_by_one_logprobs(policy, tokenizer, 2, average)
    assert torch.allclose(chosen, want_chosen, atol=1e-5)
    assert torch.allclose(rejected, want_rejected, atol=1e-5)


def test_dpo_objective_starts_at_log2_and_learns(tokenizer):
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", objective=DPO(beta=0.1), tokenizer=tokenizer)
    module.objective.begin(module.step_context)  # what on_train_start does
    batch = preference_batch(tokenizer, side="right")

    def dpo_step():  # what the module's training step runs: the reference's log-probs, then the loss
        result = module.objective.training_step(module.step_context, batch)
        return result.loss, result.metrics

    loss, metrics = dpo_step()
    assert abs(loss.item() - math.log(2.0)) < 1e-5  # policy == reference at the start
    assert metrics["reward_margin"].abs() < 1e-5
    optimizer = torch.optim.AdamW(module.policy.parameters(), lr=1e-2)
    for _ in range(15):
        optimizer.zero_grad()
        loss, metrics = dpo_step()
        loss.backward()
        optimizer.step()
    assert loss.item() < math.log(2.0) - 0.05
    assert metrics["reward_accuracy"] == 1.0
    # The reference did not move.
    for p, q in zip(module.reference_policy.parameters(), module.policy.parameters()):
        assert not p.requires_grad
    with torch.no_grad(), module.reference_model() as reference:
        ref_chosen, _ = pair_logprobs(reference, batch, False)
    assert ref_chosen.mean() < metrics["logp_chosen"] - 0.1  # the policy moved, the reference did not


def test_dpo_reference_from_batch_matches_reference_model(tokenizer):
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", objective=DPO(beta=0.3, label_smoothing=0.1), tokenizer=tokenizer)
    module.objective.begin(module.step_context)
    batch = preference_batch(tokenizer, side="left")
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    loss = module.objective.training_step(module.step_context, batch).loss
    with torch.no_grad(), module.reference_model() as reference:
        ref_chosen, ref_rejected = pair_logprobs(reference, batch, False)
    standalone = DPO(beta=0.3, label_smoothing=0.1)
    loss2, _ = standalone.loss(module.policy, dict(batch, reference_chosen_logps=ref_chosen, reference_rejected_logps=ref_rejected))
    assert torch.allclose(loss, loss2, atol=1e-7)
    chosen, rejected = pair_logprobs(module.policy, batch, False)
    want = loop_dpo(chosen.tolist(), rejected.tolist(), ref_chosen.tolist(), ref_rejected.tolist(), 0.3, 0.1)[0]
    assert abs(loss.item() - sum(want) / len(want)) < 1e-5


def test_dpo_without_reference_is_a_clear_error(tokenizer):
    with pytest.raises(RuntimeError, match="reference"):
        DPO().loss(build_policy("tiny-gpt2", tokenizer), preference_batch(tokenizer, side="right"))
    with pytest.raises(KeyError, match="chosen_input_ids"):
        DPO().loss(build_policy("tiny-gpt2", tokenizer), {"input_ids": torch.zeros(1, 2, dtype=torch.long)})


def test_dpo_holds_no_module(tokenizer):
    # DPO reads the reference through the step context it is handed, never through a
    # pointer of its own: pickling or copying it carries no module along.
    module = FineTuneModule(model="tiny-gpt2", objective=DPO(beta=0.2), tokenizer=tokenizer)
    objective = module.objective
    assert not any(isinstance(value, torch.nn.Module) for value in vars(objective).values())
    clone = pickle.loads(pickle.dumps(objective))
    assert clone.beta == 0.2 and vars(clone) == vars(objective)
    assert vars(copy.deepcopy(objective)) == vars(objective)
    assert "module" not in repr(objective)
    # The objective is not registered as a submodule: the module's parameters are the policy's.
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in module.policy.parameters())


def test_dpo_keeps_reference_when_resuming(tokenizer):
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", objective=DPO(), tokenizer=tokenizer)
    module.objective.load_state_dict({"started": True})  # as after loading a mid-DPO checkpoint
    module.ensure_reference()
    reference_weight = module.reference_policy.transformer.wte.weight.clone()
    with torch.no_grad():
        module.policy.transformer.wte.weight.add_(1.0)
    module.objective.begin(module.step_context)
    assert torch.equal(module.reference_policy.transformer.wte.weight, reference_weight)
    fresh = DPO()
    module.objective = fresh
    fresh.begin(module.step_context)  # a new DPO stage takes the policy as it stands
    assert torch.equal(module.reference_policy.transformer.wte.weight, module.policy.transformer.wte.weight)


def test_orpo_objective_matches_formula_and_learns(tokenizer):
    torch.manual_seed(0)
    policy = build_policy("tiny-gpt2", tokenizer)
    batch = preference_batch(tokenizer, side="left", extra=1)
    objective = ORPO(beta=0.25)
    loss, metrics = objective.loss(policy, batch)
    with torch.no_grad():
        chosen = one_by_one_logprobs(policy.eval(), tokenizer, 1, True)
        rejected = one_by_one_logprobs(policy, tokenizer, 2, True)
    want = loop_orpo(chosen.tolist(), rejected.tolist(), 0.25)
    assert abs(loss.item() - sum(want) / len(want)) < 1e-5
    policy.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    first = loss.item()
    for _ in range(15):
        optimizer.zero_grad()
        loss, metrics = objective.loss(policy, batch)
        loss.backward()
        optimizer.step()
    assert loss.item() < first - 0.5
    assert metrics["log_odds_ratio"] > 0


@pytest.mark.parametrize("objective", [DPO(), ORPO()])
def test_preference_objectives_run_in_bf16(tokenizer, objective):
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", objective=objective, tokenizer=tokenizer, torch_dtype="bfloat16")
    module.objective.begin(module.step_context)
    loss = module.objective.training_step(module.step_context, preference_batch(tokenizer, side="right")).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in module.policy.parameters() if p.grad is not None)
