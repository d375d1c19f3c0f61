"""The PPO objective on a tiny model: rollouts, reward placement, checkpoints, updates."""

from __future__ import annotations

import math
import warnings

import pytest
import pytorch_lightning as pl
import torch

from factories import quiet_trainer, tiny_arithmetic, tiny_module
from ift.core.tokenizer import build_char_tokenizer
from ift.modules import FineTuneModule
from ift.objectives import PPO, Rollout
from ift.rewards import AnswerMatchReward, Reward




def make_module(tokenizer=None, **ppo_args) -> FineTuneModule:
    ppo_args.setdefault("max_new_tokens", 6)
    ppo_args.setdefault("reward", AnswerMatchReward())
    return tiny_module(PPO(**ppo_args), tokenizer=tokenizer)  # PPO(...) draws no random numbers


def make_batch(module: FineTuneModule, batch_size: int = 4):
    data = tiny_arithmetic(num_train=32, batch_size=batch_size, tokenizer=module.tokenizer)
    data.setup()
    items = sorted(data.datasets["train"].items, key=lambda item: len(item["prompt_ids"]))
    # Short and long prompts alternate, so the left padding is exercised.
    picked = [items[i // 2] if i % 2 == 0 else items[-1 - i // 2] for i in range(batch_size)]
    batch = data.collator()(picked)
    assert (batch["prompt_attention_mask"] == 0).any()
    return batch


def pad_eos_tokenizer():
    tokenizer = build_char_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    return tokenizer


class Constant(Reward):
    """Every response scores ``value``; remembers what it was shown."""

    def __init__(self, value: float = 1.0):
        self.value = value
        self.seen = []

    def __call__(self, prompts, responses, examples):
        self.seen.append(list(responses))
        return [self.value] * len(responses)


class Scripted(PPO):
    """PPO whose sampler returns fixed response ids (to test what happens after sampling)."""

    def __init__(self, responses: torch.Tensor, **kwargs):
        super().__init__(**kwargs)
        self.scripted = responses

    def generate(self, context, prompt_ids, prompt_mask):
        return self.scripted.clone()


def ids(tokenizer, text: str):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------- rollouts
def test_rollout_shapes_masks_and_metrics():
    module = make_module(samples_per_prompt=2)
    batch = make_batch(module)
    module.ensure_reference()
    rollout = module.objective.rollout(module.step_context, batch)
    assert isinstance(rollout, Rollout)
    B, P = 8, batch["prompt_input_ids"].shape[1]
    R = rollout.response_ids.shape[1]
    assert 1 <= R <= 6 and rollout.prompt_length == P and rollout.batch_size == B
    assert rollout.input_ids.shape == rollout.attention_mask.shape == (B, P + R)
    for name in ("response_mask", "old_logprobs", "ref_logprobs", "values", "rewards", "advantages", "returns", "kl"):
        assert getattr(rollout, name).shape == (B, R), name
    assert rollout.scores.shape == rollout.ended_with_eos.shape == (B,)
    # Each prompt is repeated samples_per_prompt times, with its example.
    assert torch.equal(rollout.input_ids[0::2, :P], batch["prompt_input_ids"])
    assert torch.equal(rollout.input_ids[1::2, :P], batch["prompt_input_ids"])
    assert rollout.prompts[0] == rollout.prompts[1] == batch["prompt"][0]
    assert rollout.examples[2]["answer"] == batch["answer"][1]
    # The mask is a prefix ending at the first EOS; attention covers prompt + valid response.
    mask = rollout.response_mask
    assert not (mask[:, 1:] & ~mask[:, :-1]).any()
    eos = module.tokenizer.eos_token_id
    for row in range(B):
        tokens = rollout.response_ids[row].tolist()
        end = tokens.index(eos) + 1 if eos in tokens else R
        assert mask[row].tolist() == [True] * end + [False] * (R - end)
        assert bool(rollout.ended_with_eos[row]) == (eos in tokens)
    assert torch.equal(rollout.attention_mask[:, P:].bool(), mask)
    assert torch.equal(rollout.attention_mask[:, :P], batch["prompt_attention_mask"].repeat_interleave(2, 0))
    # Nothing leaks onto masked positions.
    for name in ("rewards", "advantages", "returns", "kl", "values"):
        assert (getattr(rollout, name)[~mask] == 0).all(), name
    assert torch.isfinite(rollout.old_logprobs[mask]).all() and (rollout.old_logprobs[mask] <= 0).all()
    # Whitened advantages: mean 0, variance 1 over valid tokens.
    valid = rollout.advantages[mask]
    assert abs(float(valid.mean())) < 1e-5 and abs(float(valid.var()) - 1) < 1e-3
    for key in ("score", "kl", "kl_coef", "response_length", "eos_rate", "reward_nan",
                "time/generation", "time/scoring", "time/logprobs"):
        assert key in rollout.metrics, key


def test_old_and_reference_logprobs_equal_the_policy_before_any_update():
    module = make_module(samples_per_prompt=2)
    batch = make_batch(module)
    module.ensure_reference()
    rollout = module.objective.rollout(module.step_context, batch)
    mask = rollout.response_mask
    assert torch.allclose(rollout.old_logprobs, rollout.ref_logprobs, atol=1e-6)
    assert (rollout.kl == 0).all() if module.objective.kl_estimator == "k1" else True
    # Each row alone, with no padding at all, gives the same log-probs (positions skip padding).
    for row in range(rollout.batch_size):
        keep = rollout.attention_mask[row].bool()
        alone = rollout.input_ids[row][keep].unsqueeze(0)
        with torch.no_grad():
            logits = module.policy(alone).logits[0].float()
        prompt_len = int(rollout.attention_mask[row, : rollout.prompt_length].sum())
        n = int(mask[row].sum())
        targets = alone[0, prompt_len:prompt_len + n]
        predictions = logits[prompt_len - 1:prompt_len - 1 + n].log_softmax(-1)
        expected = predictions.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(rollout.old_logprobs[row, :n], expected, atol=1e-5), row


def test_sampling_is_reproducible_and_leaves_the_global_rng_alone():
    module = make_module(samples_per_prompt=2, seed=7)
    batch = make_batch(module)
    module.ensure_reference()
    state = torch.get_rng_state()
    first = module.objective.rollout(module.step_context, batch)
    assert torch.equal(torch.get_rng_state(), state)
    second = module.objective.rollout(module.step_context, batch)
    module.objective.load_state_dict({"rollouts": 0})
    again = module.objective.rollout(module.step_context, batch)
    assert torch.equal(first.response_ids, again.response_ids)
    assert not torch.equal(first.response_ids, second.response_ids)  # a new stream per rollout


# ---------------------------------------------------------------------------- reward placement
@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_score_lands_on_eos_or_last_token_and_nothing_after_eos_counts(pad_is_eos):
    tokenizer = pad_eos_tokenizer() if pad_is_eos else build_char_tokenizer()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    # Row 0: "42" EOS, then garbage the sampler might leave (must be ignored, even digits).
    # Row 1: no EOS (hit max_new_tokens). Row 2: EOS first (empty answer). Row 3: "7" EOS, pad.
    rows = [
        ids(tokenizer, "42") + [eos] + ids(tokenizer, "99"),
        ids(tokenizer, "12345"),
        [eos] + [pad] * 4,
        ids(tokenizer, "7") + [eos] + [pad] * 3,
    ]
    responses = torch.tensor(rows)
    reward = Constant(1.0)
    objective = Scripted(responses, reward=reward, kl_coef=0.0, max_new_tokens=5)
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", tokenizer=tokenizer, objective=objective)
    batch = make_batch(module)
    module.ensure_reference()
    rollout = objective.rollout(module.step_context, batch)

    expected_mask = torch.tensor([
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
    ], dtype=torch.bool)
    assert torch.equal(rollout.response_mask, expected_mask)
    assert rollout.ended_with_eos.tolist() == [True, False, True, True]
    # The reward saw the responses up to EOS only.
    assert reward.seen[-1] == ["42", "12345", "", "7"]
    # With beta = 0 the reward is exactly the score, on the EOS token (or the last one).
    expected_rewards = torch.zeros(4, 5)
    expected_rewards[0, 2] = expected_rewards[1, 4] = expected_rewards[2, 0] = expected_rewards[3, 1] = 1.0
    assert torch.equal(rollout.rewards, expected_rewards)
    # The prompts were left-padded and the response columns still line up.
    assert (batch["prompt_attention_mask"][:, 0] == 0).any()
    assert torch.equal(rollout.input_ids[:, rollout.prompt_length:], responses)


def test_kl_penalty_on_every_valid_token_and_score_on_top():
    tokenizer = build_char_tokenizer()
    eos = tokenizer.eos_token_id
    responses = torch.tensor([ids(tokenizer, "3") + [eos, 0, 0], ids(tokenizer, "1234")])
    objective = Scripted(responses, reward=Constant(0.5), kl_coef=0.1, kl_estimator="k3", max_new_tokens=4)
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", tokenizer=tokenizer, objective=objective)
    batch = make_batch(module, batch_size=2)
    module.ensure_reference()
    with torch.no_grad():  # make the reference differ from the policy
        for parameter in module.reference_policy.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    rollout = objective.rollout(module.step_context, batch)
    mask = rollout.response_mask
    assert (rollout.kl[mask] > 0).all()  # k3 is positive when the policies differ
    expected = torch.where(mask, -0.1 * rollout.kl, 0.0)
    expected[0, 1] += 0.5
    expected[1, 3] += 0.5
    assert torch.allclose(rollout.rewards, expected, atol=1e-6)
    assert rollout.kl_coef == pytest.approx(0.1)
    assert float(rollout.metrics["kl"]) == pytest.approx(float(rollout.kl.sum(-1).mean()), rel=1e-5)


def test_pad_equal_to_eos_real_sampling():
    tokenizer = pad_eos_tokenizer()
    module = make_module(tokenizer=tokenizer, samples_per_prompt=4, max_new_tokens=8)
    batch = make_batch(module)
    module.ensure_reference()
    rollout = module.objective.rollout(module.step_context, batch)
    eos = tokenizer.eos_token_id
    for row in range(rollout.batch_size):
        tokens = rollout.response_ids[row].tolist()
        n = int(rollout.response_mask[row].sum())
        if eos in tokens:  # valid up to and including the FIRST eos, padding (= eos) after it
            assert n == tokens.index(eos) + 1
        else:
            assert n == len(tokens)
        assert (rollout.rewards[row, n:] == 0).all() and (rollout.advantages[row, n:] == 0).all()


# ---------------------------------------------------------------------------- rewards that misbehave
def test_a_reward_that_raises_names_the_reward_and_the_example():
    class Broken(Reward):
        def __call__(self, prompts, responses, examples):
            raise ZeroDivisionError("boom")

    module = make_module(reward=Broken())
    batch = make_batch(module)
    module.ensure_reference()
    with pytest.raises(RuntimeError, match=r"Reward Broken raised ZeroDivisionError: boom.*prompt '"):
        module.objective.rollout(module.step_context, batch)


def test_nan_rewards_are_counted_scored_zero_and_warned_about():
    class HalfNan(Reward):
        def __call__(self, prompts, responses, examples):
            return [math.nan if i % 2 else 1.0 for i in range(len(responses))]

    module = make_module(reward=HalfNan(), kl_coef=0.0)
    batch = make_batch(module)
    module.ensure_reference()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rollout = module.objective.rollout(module.step_context, batch)
    assert any("non-finite" in str(w.message) for w in caught)
    assert rollout.n_nan_rewards == 2 and float(rollout.metrics["reward_nan"]) == 2
    assert rollout.scores.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert torch.isfinite(rollout.rewards).all() and torch.isfinite(rollout.advantages).all()


# ---------------------------------------------------------------------------- training
def tiny_trainer(**kwargs) -> pl.Trainer:
    """One epoch, no validation."""
    kwargs.setdefault("max_epochs", 1)
    return quiet_trainer(limit_val_batches=0, **kwargs)


def test_a_ppo_iteration_updates_policy_and_value_head_but_not_the_reference():
    module = make_module(samples_per_prompt=2, mini_batch_size=4, ppo_epochs=2)
    assert not module.automatic_optimization
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = tiny_trainer(limit_train_batches=1)
    seen = {}

    class Grab(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer.callbacks.append(Grab())
    trainer.fit(module, tiny_arithmetic())
    # 8 rollouts, mini-batches of 4, 2 epochs: 4 optimizer steps.
    assert trainer.global_step == 4 and seen["train/ppo_updates_step"] == 4
    after = module.state_dict()
    changed = [k for k in before if k.startswith("policy.") and not torch.equal(before[k], after[k])]
    assert changed
    assert not torch.equal(before["extras.value_head.linear.bias"], after["extras.value_head.linear.bias"])
    for key, value in after.items():
        if key.startswith("reference_policy."):
            assert torch.equal(value, before["policy." + key[len("reference_policy."):]]), key
    for key in ("train/score", "train/kl", "train/kl_coef", "train/entropy", "train/clipfrac", "train/approx_kl",
                "train/response_length", "train/eos_rate", "train/reward_nan", "time/generation",
                "time/scoring", "time/update", "train/loss"):
        assert key + "_step" in seen, key


def test_value_head_and_reference_and_kl_controller_are_in_the_checkpoint(tmp_path):
    module = make_module(adaptive_kl=True, kl_coef=0.1, target_kl=0.01, kl_horizon=100)
    trainer = tiny_trainer(limit_train_batches=2)
    trainer.fit(module, tiny_arithmetic())
    path = tmp_path / "ppo.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    state = checkpoint["state_dict"]
    assert "extras.value_head.linear.weight" in state and "extras.value_head.linear.bias" in state
    assert any(k.startswith("reference_policy.") for k in state)
    saved_coef = checkpoint["objective_state"]["kl_controller"]["value"]
    assert saved_coef != 0.1 and checkpoint["objective_state"]["rollouts"] == 2  # it adapted
    # Loads back with torch.load's default weights_only=True (objects in the hyper-parameters).
    restored = FineTuneModule.load_from_checkpoint(path)
    assert torch.equal(restored.extras["value_head"].linear.weight, module.extras["value_head"].linear.weight)
    assert restored.reference_policy is not None


def test_separate_critic_model():
    module = make_module(critic="tiny-llama", samples_per_prompt=2)
    assert "critic" in module.extras and "value_head" not in module.extras
    trainer = tiny_trainer(limit_train_batches=1)
    before = module.extras["critic"].head.linear.bias.clone()
    trainer.fit(module, tiny_arithmetic())
    assert not torch.equal(before, module.extras["critic"].head.linear.bias)


def test_early_stop_on_approx_kl_cuts_the_epochs():
    module = make_module(samples_per_prompt=2, mini_batch_size=2, ppo_epochs=4, early_stop_kl=1e-9)
    trainer = tiny_trainer(limit_train_batches=1)
    trainer.fit(module, tiny_arithmetic())
    # The first update leaves approx-KL at 0 (ratio 1); the second one measures a change and stops.
    assert trainer.global_step == 2


def test_ppo_rejects_bad_settings():
    with pytest.raises(ValueError, match="kl_estimator"):
        PPO(kl_estimator="k9")
    with pytest.raises(ValueError, match="clip_eps"):
        PPO(clip_eps=0)
    with pytest.raises(ValueError, match="top_p"):
        PPO(top_p=0)
    with pytest.raises(KeyError, match="prompt_input_ids"):
        module = make_module()
        module.objective.rollout(module.step_context, {"input_ids": torch.zeros(1, 2, dtype=torch.long)})


def test_lam_is_a_deprecated_alias_of_gae_lambda():
    with pytest.warns(FutureWarning, match="gae_lambda"):
        objective = PPO(reward=AnswerMatchReward(), lam=0.9)
    assert objective.gae_lambda == 0.9
    with pytest.warns(FutureWarning, match="gae_lambda"), pytest.raises(ValueError, match="gae_lambda"):
        PPO(reward=AnswerMatchReward(), lam=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PPO(reward=AnswerMatchReward(), gae_lambda=0.8).gae_lambda == 0.8


def test_a_ppo_pickled_before_the_rollout_loop_still_loads():
    state = dict(vars(PPO(reward=AnswerMatchReward(), gae_lambda=0.7, ppo_epochs=3)))
    state["lam"], state["ppo_epochs"] = state.pop("gae_lambda"), state.pop("epochs")
    del state["sampler"]
    old = PPO.__new__(PPO)
    old.__setstate__(state)
    assert (old.gae_lambda, old.ppo_epochs, type(old.sampler).__name__) == (0.7, 3, "HFSampler")
