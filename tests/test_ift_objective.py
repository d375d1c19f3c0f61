"""The IFT objective on tiny GPT-2 (tied embeddings) and tiny Llama (untied) models.

docs/objectives.md, IFT: lam = 0 and gamma = 0 is SFT (loss and gradients); prompt positions keep
the ground truth; the prediction carries no gradient; lam = 0 with gamma > 0 is SFT with
the relation-propagation weights.
"""

import itertools

import pytest
import torch

from ift.modules import build_policy
from ift.objectives import IFT, SFT
from ift.objectives import functional as Fn
from reference_impls import ref_ift_token_weights, ref_sft_loss, ref_weighted_token_loss

IGNORE = Fn.IGNORE_INDEX
MODELS = ["tiny-gpt2", "tiny-llama"]
FIRST_ID = 4  # ids below are the char tokenizer's specials (pad 0, eos 1, bos 2, unk 3)
# ``tokenizer`` (the character tokenizer) is a fixture of conftest.py.


def make_policy(name, tokenizer, seed=0, dtype=None):
    torch.manual_seed(seed)
    policy = build_policy(name, tokenizer, dtype)
    policy.train()
    return policy


def make_batch(prompt_lens, response_lens, side="right", seed=0, low=FIRST_ID, high=60, pad_id=0):
    """Random prompt + response rows padded on ``side``; labels only on the response."""
    g = torch.Generator().manual_seed(seed)
    width = max(p + r for p, r in zip(prompt_lens, response_lens))
    rows = len(prompt_lens)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(rows, width, dtype=torch.long)
    labels = torch.full((rows, width), IGNORE, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        ids = torch.randint(low, high, (p + r,), generator=g)
        start = 0 if side == "right" else width - (p + r)
        input_ids[b, start:start + p + r] = ids
        attention_mask[b, start:start + p + r] = 1
        labels[b, start + p:start + p + r] = ids[p:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


BATCHES = {
    # right padding, every position after the first supervised (no prompt mask beyond token 0)
    "right_padding": dict(prompt_lens=[1, 1, 1], response_lens=[11, 7, 4], side="right"),
    # right padding with prompts
    "right_padding_prompt": dict(prompt_lens=[3, 6, 2], response_lens=[8, 5, 4], side="right"),
    # left padding with prompts
    "left_padding_prompt": dict(prompt_lens=[4, 2, 7], response_lens=[6, 9, 3], side="left"),
}


def loss_and_grads(objective, policy, batch):
    policy.zero_grad(set_to_none=True)
    loss, metrics = objective.loss(policy, batch)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in policy.named_parameters() if p.grad is not None}
    policy.zero_grad(set_to_none=True)
    return loss.detach(), grads, metrics


def assert_same_grads(a, b, atol=1e-6, rtol=0.0):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def max_grad_difference(a, b):
    return max((a[name] - b[name]).abs().max().item() for name in a)


# ------------------------------------------------------------------------------ SFT identity
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("batch_name", list(BATCHES))
def test_lambda_zero_gamma_zero_is_sft_loss_and_gradients(tokenizer, model, batch_name):
    policy = make_policy(model, tokenizer)
    batch = make_batch(**BATCHES[batch_name])
    sft_loss, sft_grads, _ = loss_and_grads(SFT(), policy, batch)
    ift_loss, ift_grads, metrics = loss_and_grads(IFT(lam=0.0, gamma=0.0), policy, batch)
    assert torch.isfinite(sft_loss)
    assert ift_loss.item() == pytest.approx(sft_loss.item(), abs=1e-6)
    assert_same_grads(sft_grads, ift_grads, atol=1e-6)
    assert len(sft_grads) == len(list(policy.parameters()))  # every parameter is trained
    assert metrics["lambda"].item() == 0.0
    # And SFT itself is the loss of docs/objectives.md, checked against the loop reference.
    with torch.no_grad():
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=Fn.position_ids_from_mask(batch["attention_mask"])).logits
    assert sft_loss.item() == pytest.approx(ref_sft_loss(logits, batch["labels"]), rel=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_padding_side_does_not_change_the_loss(tokenizer, model):
    """Position ids skip padding, so left- and right-padded copies of a batch agree."""
    policy = make_policy(model, tokenizer)
    spec = dict(prompt_lens=[4, 2, 7], response_lens=[6, 9, 3], seed=5)
    right, left = make_batch(side="right", **spec), make_batch(side="left", **spec)
    for objective in (SFT(), IFT(lam=0.2, gamma=0.95)):
        a, _ = objective.loss(policy, right)
        b, _ = objective.loss(policy, left)
        assert a.item() == pytest.approx(b.item(), rel=1e-5)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("batch_name", ["right_padding_prompt", "left_padding_prompt"])
def test_teacher_forced_predictions_give_sft_loss_and_scaled_embedding_gradient(tokenizer, model, batch_name, monkeypatch):
    """With predictions equal to the truth the mixed input is E(x): SFT's loss and, since
    only the (1 - lam) E(x) part is live, SFT's gradients except for the input embeddings."""
    policy = make_policy(model, tokenizer)
    batch = make_batch(**BATCHES[batch_name])
    lam = 0.3
    objective = IFT(lam=lam, gamma=0.0)
    monkeypatch.setattr(objective, "predict_next_tokens", lambda policy, ids, mask, labels=None: ids[:, 1:].clone())
    ift_loss, ift_grads, _ = loss_and_grads(objective, policy, batch)
    sft_loss, sft_grads, _ = loss_and_grads(SFT(), policy, batch)
    assert ift_loss.item() == pytest.approx(sft_loss.item(), abs=1e-5)
    embed_name = next(n for n, p in policy.named_parameters() if p is policy.get_input_embeddings().weight)
    others = [n for n in sft_grads if n != embed_name]
    assert_same_grads({n: sft_grads[n] for n in others}, {n: ift_grads[n] for n in others}, atol=1e-5, rtol=1e-4)
    if model == "tiny-llama":  # untied: the input embedding only gets the live (1 - lam) share
        torch.testing.assert_close(ift_grads[embed_name], (1 - lam) * sft_grads[embed_name], atol=1e-6, rtol=1e-4)
    else:  # tied: the same matrix also gets the full output-layer gradient
        assert (ift_grads[embed_name] - sft_grads[embed_name]).abs().max() > 1e-6


# ------------------------------------------------------------------------------ residual inputs
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("batch_name", ["right_padding_prompt", "left_padding_prompt"])
def test_masked_positions_keep_ground_truth_embeddings(tokenizer, model, batch_name, monkeypatch):
    policy = make_policy(model, tokenizer)
    batch = make_batch(**BATCHES[batch_name])
    lam = 0.4
    objective = IFT(lam=lam, gamma=0.95)
    seen = {}
    real_predict, real_residual = objective.predict_next_tokens, objective.residual_inputs

    def spy_predict(*args):
        seen["predictions"] = real_predict(*args)
        return seen["predictions"]

    def spy_residual(*args):
        seen["residual"] = real_residual(*args)
        return seen["residual"]

    monkeypatch.setattr(objective, "predict_next_tokens", spy_predict)
    monkeypatch.setattr(objective, "residual_inputs", spy_residual)
    calls = []
    handle = policy.register_forward_pre_hook(lambda module, args, kwargs: calls.append(dict(kwargs)), with_kwargs=True)
    try:
        loss, _ = objective.loss(policy, batch)
    finally:
        handle.remove()
    assert torch.isfinite(loss)

    input_ids, labels = batch["input_ids"], batch["labels"]
    masked = labels == IGNORE
    supervised = ~masked
    residual, predictions = seen["residual"], seen["predictions"]
    assert residual.shape == input_ids.shape
    # Ground truth wherever the label is masked (prompt and padding) ...
    assert torch.equal(residual[masked], input_ids[masked])
    # ... and the prediction of token t (made at t-1) wherever it is supervised.
    shifted = torch.cat([input_ids[:, :1], predictions], dim=1)
    assert torch.equal(residual[supervised], shifted[supervised])
    assert (shifted[supervised] != input_ids[supervised]).any(), "an untrained model should mispredict somewhere"

    # Pass 1 reads ids without gradient; pass 2 reads the mixed embeddings.
    assert len(calls) == 2
    assert calls[0]["input_ids"] is not None and calls[0].get("inputs_embeds") is None
    mixed = calls[1]["inputs_embeds"].detach()
    assert calls[1].get("input_ids") is None
    with torch.no_grad():
        table = policy.get_input_embeddings().weight
        truth, predicted = table[input_ids], table[shifted]
    torch.testing.assert_close(mixed[masked], truth[masked], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mixed[supervised], ((1 - lam) * truth + lam * predicted)[supervised], atol=1e-6, rtol=1e-6)
    wrong = supervised & (shifted != input_ids)
    assert (mixed[wrong] - truth[wrong]).abs().max() > 1e-3


def test_predictions_get_no_gradient_untied_llama(tokenizer, monkeypatch):
    """An id that occurs only as a prediction: its input-embedding row gets no gradient."""
    policy = make_policy("tiny-llama", tokenizer)
    batch = make_batch(**BATCHES["left_padding_prompt"], high=60)
    only_predicted = 77
    assert not (batch["input_ids"] == only_predicted).any() and not (batch["labels"] == only_predicted).any()
    objective = IFT(lam=0.5, gamma=0.95)
    monkeypatch.setattr(objective, "predict_next_tokens",
                        lambda policy, ids, mask, labels=None: torch.full_like(ids[:, 1:], only_predicted))
    loss, grads, _ = loss_and_grads(objective, policy, batch)
    embed = grads["model.embed_tokens.weight"]
    assert torch.all(embed[only_predicted] == 0)
    # every real token except the last one of a row (its output is never scored) feeds a loss
    used = batch["input_ids"][:, :-1][batch["attention_mask"][:, :-1].bool()].unique()
    assert (embed[used].abs().sum(-1) > 0).all()  # the live ground-truth rows do train
    assert grads["lm_head.weight"][only_predicted].abs().sum() > 0  # (the output layer is another matrix)
    # The prediction does enter the forward pass: another predicted id changes the loss.
    monkeypatch.setattr(objective, "predict_next_tokens",
                        lambda policy, ids, mask, labels=None: torch.full_like(ids[:, 1:], only_predicted + 1))
    other_loss, _ = objective.loss(policy, batch)
    assert abs(other_loss.item() - loss.item()) > 1e-5


def test_tied_embeddings_keep_training_with_lambda(tokenizer, monkeypatch):
    """The live (tied) embedding is used, not a frozen copy. With teacher-forced
    predictions, GPT-2's shared matrix gets ``G_out + (1 - lam) G_in`` where SFT gets
    ``G_out + G_in``: so ``(G_sft - G_ift) / lam`` is the same non-zero input-side
    gradient ``G_in`` for every lam (it would be ``G_in / lam`` with a frozen copy)."""
    policy = make_policy("tiny-gpt2", tokenizer)
    batch = make_batch(**BATCHES["right_padding_prompt"])
    name = "transformer.wte.weight"
    assert policy.get_output_embeddings().weight is policy.get_input_embeddings().weight
    _, sft_grads, _ = loss_and_grads(SFT(), policy, batch)
    input_side = []
    for lam in (0.2, 0.6):
        objective = IFT(lam=lam, gamma=0.0)
        monkeypatch.setattr(objective, "predict_next_tokens", lambda policy, ids, mask, labels=None: ids[:, 1:].clone())
        _, grads, _ = loss_and_grads(objective, policy, batch)
        input_side.append((sft_grads[name] - grads[name]) / lam)
    torch.testing.assert_close(input_side[0], input_side[1], atol=1e-5, rtol=1e-3)
    used = batch["input_ids"][:, :-1][batch["attention_mask"][:, :-1].bool()].unique()
    assert (input_side[0][used].abs().sum(-1) > 1e-6).all()


# ------------------------------------------------------------------------------ relation propagation
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("side,norm,kind", [("left", "L1", "loss"), ("right", "L2", "logps"), ("left", "softmax", "mask")])
def test_lambda_zero_with_gamma_is_weighted_sft(tokenizer, model, side, norm, kind):
    policy = make_policy(model, tokenizer)
    batch = make_batch(**BATCHES["left_padding_prompt"])
    gamma = 0.9
    objective = IFT(lam=0.0, gamma=gamma, propagation_side=side, propagation_norm=norm,
                    propagation_type=kind, propagation_grad=False)
    ift_loss, ift_grads, _ = loss_and_grads(objective, policy, batch)

    # SFT with constant reference weights: same value and gradients.
    policy.zero_grad(set_to_none=True)
    logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=Fn.position_ids_from_mask(batch["attention_mask"])).logits
    nll = -Fn.label_logprobs(logits, batch["labels"])
    mask = batch["labels"][:, 1:] != IGNORE
    weights = torch.tensor(ref_ift_token_weights(nll, mask, gamma, side, norm, kind), dtype=torch.float32)
    assert ift_loss.item() == pytest.approx(ref_weighted_token_loss(nll, mask, weights), rel=1e-5)
    expected = (torch.where(mask, weights * nll, 0.0).sum(-1) / mask.sum(-1)).mean()
    expected.backward()
    expected_grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    assert_same_grads(ift_grads, expected_grads, atol=1e-6, rtol=1e-4)
    # The weights are not uniform, so this is not plain SFT.
    sft_loss, _ = SFT().loss(policy, batch)
    assert abs(sft_loss.item() - ift_loss.item()) > 1e-4


@pytest.mark.parametrize("model", MODELS)
def test_propagation_grad_changes_gradients_not_the_loss(tokenizer, model):
    policy = make_policy(model, tokenizer)
    batch = make_batch(**BATCHES["right_padding_prompt"])
    with_grad = loss_and_grads(IFT(lam=0.2, gamma=0.95, propagation_grad=True), policy, batch)
    without = loss_and_grads(IFT(lam=0.2, gamma=0.95, propagation_grad=False), policy, batch)
    assert with_grad[0].item() == pytest.approx(without[0].item(), abs=1e-7)
    assert max_grad_difference(with_grad[1], without[1]) > 1e-5


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "side,norm,kind", list(itertools.product(Fn.PROPAGATION_SIDES, Fn.PROPAGATION_NORMS, Fn.PROPAGATION_TYPES))
)
def test_every_propagation_variant_runs_end_to_end(tokenizer, model, side, norm, kind):
    policy = make_policy(model, tokenizer)
    batch = make_batch(**BATCHES["left_padding_prompt"])
    objective = IFT(lam=0.2, gamma=0.95, propagation_side=side, propagation_norm=norm, propagation_type=kind)
    loss, grads, metrics = loss_and_grads(objective, policy, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert metrics["lambda"].item() == pytest.approx(0.2)
    assert 0.0 <= metrics["prediction_accuracy"].item() <= 1.0
    assert metrics["weight_max"].item() >= 1.0  # rows sum to their length: the largest weight is >= 1


def test_ift_rejects_bad_options():
    for kwargs, word in [
        (dict(lam=1.5), "lam"),
        (dict(gamma=-0.1), "gamma"),
        (dict(propagation_side="up"), "propagation_side"),
        (dict(propagation_norm="L3"), "propagation_norm"),
        (dict(propagation_type="probs"), "propagation_type"),
        (dict(prediction="beam"), "prediction"),
        (dict(temperature=0.0), "temperature"),
        (dict(lam_schedule="cosine"), "schedule"),
    ]:
        with pytest.raises(ValueError, match=word):
            IFT(**kwargs)


# ------------------------------------------------------------------------------ lambda
def test_lambda_follows_the_step_and_evaluation_is_noise_free(tokenizer):
    policy = make_policy("tiny-gpt2", tokenizer)
    batch = make_batch(**BATCHES["right_padding_prompt"])
    objective = IFT(lam=0.4, min_lam=0.0, lam_schedule="linear", lam_warmup_steps=4)
    seen = []
    for step in range(6):
        objective.set_step(step)
        seen.append(objective.loss(policy, batch)[1]["lambda"].item())
    assert seen == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    noisy = IFT(lam=0.4, lam_noise_std=0.5, lam_noise_seed=1)
    noisy.set_step(3)
    assert noisy.current_lambda(training=True) != pytest.approx(0.4)
    policy.eval()
    assert noisy.loss(policy, batch)[1]["lambda"].item() == pytest.approx(0.4)
    state = noisy.state_dict()
    restored = IFT(lam=0.4, lam_noise_std=0.5, lam_noise_seed=1)
    restored.load_state_dict(state)
    assert restored.current_lambda() == noisy.current_lambda()


# ------------------------------------------------------------------------------ sampling, precision
@pytest.mark.parametrize("model", MODELS)
def test_sampled_prediction_is_reproducible_with_a_seed(tokenizer, model):
    policy = make_policy(model, tokenizer)
    batch = make_batch(**BATCHES["right_padding_prompt"])
    objective = IFT(lam=0.3, prediction="sample", temperature=1.0)

    def run(seed):
        torch.manual_seed(seed)
        preds = objective.predict_next_tokens(policy, batch["input_ids"], batch["attention_mask"])
        torch.manual_seed(seed)
        loss, _ = objective.loss(policy, batch)
        return preds, loss.item()

    preds_a, loss_a = run(0)
    preds_b, loss_b = run(0)
    preds_c, loss_c = run(1)
    assert torch.equal(preds_a, preds_b) and loss_a == loss_b
    assert not torch.equal(preds_a, preds_c) and loss_a != loss_c
    greedy = IFT(lam=0.3).predict_next_tokens(policy, batch["input_ids"], batch["attention_mask"])
    assert not torch.equal(preds_a, greedy)  # sampling at temperature 1 is not argmax
    cold = IFT(lam=0.3, prediction="sample", temperature=1e-4)
    torch.manual_seed(2)
    cold_preds = cold.predict_next_tokens(policy, batch["input_ids"], batch["attention_mask"])
    assert (cold_preds == greedy).float().mean().item() > 0.95


@pytest.mark.parametrize("model", MODELS)
def test_bf16_policy_runs_and_weights_are_float32(tokenizer, model, monkeypatch):
    policy = make_policy(model, tokenizer, dtype="bfloat16")
    assert next(policy.parameters()).dtype == torch.bfloat16
    batch = make_batch(**BATCHES["left_padding_prompt"])
    captured = []
    real = Fn.ift_token_weights

    def spy(token_losses, *args, **kwargs):
        out = real(token_losses, *args, **kwargs)
        captured.append((token_losses.dtype, out))
        return out

    monkeypatch.setattr(Fn, "ift_token_weights", spy)
    objective = IFT(lam=0.2, gamma=0.95)
    loss, metrics = objective.loss(policy, batch)
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)
    (loss_dtype, weights), = captured
    assert loss_dtype == torch.float32 and weights.dtype == torch.float32
    mask = batch["labels"][:, 1:] != IGNORE
    torch.testing.assert_close(weights.sum(-1), mask.sum(-1).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("batch_name", sorted(BATCHES))
def test_pass_one_on_supervised_columns_only_matches_the_full_pass(tokenizer, model, batch_name, monkeypatch):
    """Running the LM head only where some row is supervised changes no prediction that is
    used, hence neither the loss nor the gradients."""
    policy = make_policy(model, tokenizer)
    batch = make_batch(**BATCHES[batch_name])
    objective = IFT(lam=0.4, gamma=0.95)
    mask = batch["labels"][:, 1:] != -100
    full = objective.predict_next_tokens(policy, batch["input_ids"], batch["attention_mask"])
    partial = objective.predict_next_tokens(policy, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert torch.equal(full[mask], partial[mask])
    loss, grads, _ = loss_and_grads(objective, policy, batch)
    real_predict = objective.predict_next_tokens
    monkeypatch.setattr(objective, "predict_next_tokens", lambda policy, ids, mask, labels=None: real_predict(policy, ids, mask))
    full_loss, full_grads, _ = loss_and_grads(objective, policy, batch)
    assert torch.allclose(loss, full_loss, atol=1e-6)
    for name in grads:
        assert torch.allclose(grads[name], full_grads[name], atol=1e-6), name
