"""The rollout loop of :class:`RolloutObjective`, without any PPO part: a critic-free objective
written here in a few lines trains through FineTuneModule; the loop's skipped-update
accounting, KL early stop, shuffling, counters and the sampling seam, unit by unit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import pytest
import pytorch_lightning as pl
import torch

from factories import quiet_trainer, tiny_arithmetic, tiny_module
from ift.core.sampling import HFSampler, SampledTokens, Sampler, SamplingSettings
from ift.modules import FineTuneModule
from ift.objectives import PPO, Rollout, RolloutLoss, RolloutObjective
from ift.objectives import functional as Fn
from ift.objectives import rollout_steps
from ift.rewards import AnswerMatchReward, Reward


# ---------------------------------------------------------------------------- a critic-free objective
def group_baseline_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """``B`` advantages: each score minus the mean score of its prompt's group of samples."""
    groups = scores.view(-1, group_size)
    return (groups - groups.mean(-1, keepdim=True)).flatten()


@dataclass(kw_only=True)
class ReinforceRollout(Rollout):
    #: ``B`` score minus its group's mean.
    advantages: torch.Tensor


class GroupReinforce(RolloutObjective):
    """REINFORCE with the group-mean baseline: ``-A_b * mean_t log p(y_bt)``, no critic."""

    def __init__(self, reward=None, samples_per_prompt: int = 4, max_new_tokens: int = 4, epochs: int = 1,
                 mini_batch_size=None, early_stop_kl=None, seed=None, sampler=None):
        super().__init__(reward, samples_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens, epochs=epochs,
                         mini_batch_size=mini_batch_size, early_stop_kl=early_stop_kl, seed=seed, sampler=sampler)

    def evaluate_rollout(self, context, scored):
        old, ref = self.policy_and_reference_logprobs(context, scored)
        advantages = group_baseline_advantages(scored.scores, self.samples_per_prompt)
        return ReinforceRollout(**scored.rollout_fields(), old_logprobs=old, ref_logprobs=ref, advantages=advantages)

    def rollout_metrics(self, rollout):
        return {"advantage_abs": rollout.advantages.abs().mean()}

    def loss_on_rollout(self, context, rollout):
        rollout = rollout_steps.trim_right(rollout)
        logprobs = rollout_steps.policy_logprobs(context, rollout.input_ids, rollout.attention_mask,
                                                 rollout.response_ids, self.temperature, self.share_prompts)
        mask = rollout.response_mask
        loss = -(rollout.advantages * Fn.sequence_mean(logprobs, mask)).mean()
        approx_kl = Fn.masked_mean(0.5 * (logprobs.detach() - rollout.old_logprobs).square(), mask)
        return RolloutLoss(loss, {"pg_loss": loss.detach(), "approx_kl": approx_kl})


class Digits(Reward):
    """How many digits a response has: scores that differ within a group from the start."""

    def __call__(self, prompts, responses, examples):
        return [float(sum(c.isdigit() for c in response)) for response in responses]


def test_a_critic_free_objective_trains_on_the_loop_alone(tmp_path):
    objective = GroupReinforce(reward=Digits(), samples_per_prompt=4, mini_batch_size=4, epochs=2, seed=3)
    module = tiny_module(objective)
    assert not module.automatic_optimization and len(module.extras) == 0  # no value head, no critic
    before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    seen: List[dict] = []

    class Grab(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = quiet_trainer(callbacks=[Grab()], max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, tiny_arithmetic())
    # 4 prompts x 4 samples in mini-batches of 4, 2 epochs: 8 updates per batch.
    assert trainer.global_step == 16 and [row["train/updates_step"] for row in seen] == [8, 8]
    for key in ("train/score", "train/advantage_abs", "train/pg_loss", "train/approx_kl", "train/loss",
                "train/eos_rate", "train/response_length", "time/generation", "time/update"):
        assert key + "_step" in seen[-1], key
    assert not any("ppo" in key or "value" in key or "kl_coef" in key for key in seen[-1])
    assert any(not torch.equal(before[k], v) for k, v in module.policy.state_dict().items())
    assert objective.state_dict() == {"rollouts": 2, "reward_timeouts": 0}

    # The counters travel in the checkpoint; the sampling streams replay from them.
    path = tmp_path / "reinforce.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=False)["objective_state"] == {"rollouts": 2, "reward_timeouts": 0}
    fresh = GroupReinforce(reward=Digits(), samples_per_prompt=4, seed=3)
    restored = FineTuneModule.load_from_checkpoint(path, objective=fresh)
    assert fresh.rollouts_taken == 2 and restored.objective is fresh


def test_the_critic_free_rollout_is_seeded_and_leaves_the_global_rng_alone():
    objective = GroupReinforce(reward=Digits(), samples_per_prompt=2, seed=5)
    module = tiny_module(objective)
    data = tiny_arithmetic(tokenizer=module.tokenizer)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    module.ensure_reference()
    state = torch.get_rng_state()
    first = objective.rollout(module.step_context, batch)
    assert torch.equal(torch.get_rng_state(), state)
    second = objective.rollout(module.step_context, batch)
    objective.load_state_dict({"rollouts": 0})
    again = objective.rollout(module.step_context, batch)
    assert isinstance(first, ReinforceRollout) and objective.rollouts_taken == 1
    assert torch.equal(first.response_ids, again.response_ids) and not torch.equal(first.response_ids, second.response_ids)
    # The group baseline: advantages sum to 0 within every prompt's samples.
    assert torch.allclose(first.advantages.view(-1, 2).sum(-1), torch.zeros(4))
    # Nothing trained yet: the policy is the reference.
    assert torch.allclose(first.old_logprobs, first.ref_logprobs, atol=1e-6)
    # select keeps the subclass and its fields; list fields follow the rows.
    picked = first.select(torch.tensor([3, 0]))
    assert type(picked) is ReinforceRollout and torch.equal(picked.advantages, first.advantages[[3, 0]])
    assert picked.responses == [first.responses[3], first.responses[0]]


# ---------------------------------------------------------------------------- the update loop, unit by unit
class FakeContext:
    """Only what the update loop calls: ``optimizer_step``, skipping the scripted calls."""

    def __init__(self, skip=()):
        self.skip = set(skip)
        self.calls = 0

    def optimizer_step(self, loss):
        self.calls += 1
        return self.calls - 1 not in self.skip


class Scripted(RolloutObjective):
    """Losses and approx-KLs from a script; records the rows of every mini-batch."""

    def __init__(self, losses=(), approx_kls=None, **kwargs):
        super().__init__(reward=AnswerMatchReward(), **kwargs)
        self.losses, self.approx_kls, self.rows = list(losses), approx_kls, []

    def loss_on_rollout(self, context, rollout):
        index = len(self.rows)
        self.rows.append(rollout.response_ids[:, 0].tolist())
        metrics = {"seen": torch.tensor(float(index))}
        if self.approx_kls is not None:
            metrics["approx_kl"] = torch.tensor(self.approx_kls[index])
        return RolloutLoss(torch.tensor(self.losses[index]), metrics)


def fake_rollout(size: int) -> Rollout:
    ids = torch.arange(size).unsqueeze(-1)
    return Rollout(input_ids=ids, attention_mask=torch.ones_like(ids), response_ids=ids,
                   response_mask=torch.ones(size, 1, dtype=torch.bool), old_logprobs=torch.zeros(size, 1),
                   ref_logprobs=torch.zeros(size, 1), scores=torch.zeros(size), ended_with_eos=torch.ones(size, dtype=torch.bool),
                   metrics={"score": torch.tensor(0.5)})


def run_step(objective: Scripted, context: FakeContext, size: int = 6):
    objective.rollout = lambda context, batch: fake_rollout(size)  # the loop only, no model
    objective._rollouts = 1
    return objective.training_step(context, {})


def test_skipped_updates_are_counted_and_left_out_of_the_means():
    objective = Scripted(losses=[1.0, 10.0, 2.0, 3.0, 20.0, 4.0], epochs=2, mini_batch_size=2)
    result = run_step(objective, FakeContext(skip=(1, 4)))
    assert result.stepped and float(result.metrics["updates"]) == 4 and float(result.metrics["skipped_updates"]) == 2
    assert float(result.loss) == pytest.approx((1 + 2 + 3 + 4) / 4)  # the skipped 10 and 20 left out
    assert float(result.metrics["seen"]) == pytest.approx((0 + 2 + 3 + 5) / 4)
    assert float(result.metrics["score"]) == 0.5 and "time/update" in result.metrics
    # Every epoch is a permutation of the rollout, in mini-batches of 2.
    assert [len(rows) for rows in objective.rows] == [2] * 6
    for epoch in (objective.rows[:3], objective.rows[3:]):
        assert sorted(sum(epoch, [])) == list(range(6))


def test_a_step_whose_every_update_was_skipped_has_a_nan_loss():
    objective = Scripted(losses=[1.0, 2.0], epochs=1, mini_batch_size=3)
    result = run_step(objective, FakeContext(skip=(0, 1)))
    assert torch.isnan(result.loss) and float(result.metrics["updates"]) == 0
    assert float(result.metrics["skipped_updates"]) == 2 and "seen" not in result.metrics


def test_without_skips_there_is_no_skipped_counter():
    result = run_step(Scripted(losses=[1.0, 2.0], mini_batch_size=3), FakeContext())
    assert float(result.metrics["updates"]) == 2 and "skipped_updates" not in result.metrics


def test_early_stop_on_approx_kl_ends_every_epoch():
    objective = Scripted(losses=[1.0] * 9, approx_kls=[0.0, 0.1, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                         epochs=3, mini_batch_size=2, early_stop_kl=1.0)
    result = run_step(objective, FakeContext())
    assert float(result.metrics["updates"]) == 3 and len(objective.rows) == 3  # stopped after the third


def test_early_stop_counts_a_skipped_update_and_needs_approx_kl():
    objective = Scripted(losses=[1.0, 1.0, 1.0], approx_kls=[0.0, 5.0, 0.0], mini_batch_size=2, early_stop_kl=1.0)
    result = run_step(objective, FakeContext(skip=(1,)))
    assert float(result.metrics["updates"]) == 1 and float(result.metrics["skipped_updates"]) == 1
    with pytest.raises(KeyError, match="approx_kl"):
        run_step(Scripted(losses=[1.0] * 3, mini_batch_size=2, early_stop_kl=1.0), FakeContext())


def test_the_shuffle_follows_the_seed_and_the_rollout_index():
    def order(seed, index):
        objective = Scripted(losses=[1.0] * 8, mini_batch_size=1, seed=seed)
        objective.rollout = lambda context, batch: fake_rollout(8)
        objective._rollouts = index
        objective.training_step(FakeContext(), {})
        return sum(objective.rows, [])

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(1, 1) and order(0, 1) != order(0, 2)


def test_counters_round_trip_through_state_dict():
    objective = Scripted()
    objective.load_state_dict({"rollouts": 7, "reward_timeouts": 2})
    assert objective.state_dict() == {"rollouts": 7, "reward_timeouts": 2}
    assert (objective.rollouts_taken, objective.reward_timeouts) == (7, 2)
    objective.load_state_dict({})
    assert objective.state_dict() == {"rollouts": 0, "reward_timeouts": 0}


def test_a_rollout_objective_needs_a_reward_and_names_the_rewards_there_are():
    for make in (lambda: GroupReinforce(), lambda: PPO(), lambda: PPO(kl_coef=0.1)):
        with pytest.raises(ValueError, match=r"no reward given.*AnswerMatchReward.*CodeTestsReward.*RewardModelScore"):
            make()
    with pytest.raises(ValueError, match="ift.rewards.AnswerMatchReward"):
        PPO()


# ---------------------------------------------------------------------------- the sampling seam
class FixedSampler(Sampler):
    """Answers every prompt with the same tokens; records its calls."""

    def __init__(self, text: str = "12"):
        self.text, self.settings, self.loads = text, [], 0

    def load_weights(self, policy):
        self.loads += 1

    def sample(self, policy, tokenizer, prompt_ids, prompt_mask, settings):
        self.settings.append(settings)
        row = tokenizer(self.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([row] * prompt_ids.shape[0])
        return SampledTokens(ids=ids, logprobs=None, finished=torch.ones(prompt_ids.shape[0], dtype=torch.bool))


@pytest.mark.parametrize("objective_class", [GroupReinforce, PPO])
def test_another_sampler_plugs_in_through_the_constructor(objective_class):
    sampler = FixedSampler("12")
    objective = objective_class(reward=Digits(), samples_per_prompt=2, max_new_tokens=5, seed=4, sampler=sampler)
    module = tiny_module(objective)
    data = tiny_arithmetic(tokenizer=module.tokenizer)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    module.ensure_reference()
    rollout = objective.rollout(module.step_context, batch)
    assert rollout.responses == ["12"] * 8 and rollout.scores.tolist() == [2.0] * 8 and bool(rollout.ended_with_eos.all())
    assert sampler.loads == 1 and sampler.settings[0] == SamplingSettings(
        max_new_tokens=5, temperature=1.0, top_p=1.0, seed=objective.stream_seed(0), use_cache=True)


def test_the_default_sampler_is_hugging_face_generate():
    assert isinstance(GroupReinforce(reward=Digits()).sampler, HFSampler)
    assert isinstance(PPO(reward=Digits()).sampler, HFSampler)
