"""Sequential and Mix recipes: stage switches, the reference at the switch, weights, resume."""

from __future__ import annotations

from typing import Dict, List

import pytest
import pytorch_lightning as pl
import torch

from factories import MetricsLog, ppo_settings, quiet_trainer, tiny_arithmetic, tiny_module
from ift.modules import FineTuneModule
from ift.objectives import IFT, PPO, SFT, Mix, Sequential, Stage
from ift.rewards import AnswerMatchReward




class Recorder(SFT):
    """SFT that writes its tag into a shared log at every training batch."""

    def __init__(self, tag: str, log: List[str]):
        super().__init__()
        self.tag = tag
        self.log = log

    def training_step(self, context, batch):
        self.log.append(self.tag)
        return super().training_step(context, batch)


def tiny_trainer(**kwargs) -> pl.Trainer:
    """No validation."""
    return quiet_trainer(limit_val_batches=0, **kwargs)




def ppo(**kwargs) -> PPO:
    return PPO(reward=AnswerMatchReward(), **ppo_settings(**kwargs))


# ---------------------------------------------------------------------------- Sequential
def test_sequential_switches_after_the_given_steps():
    log: List[str] = []
    recipe = Sequential(stages=[
        {"objective": Recorder("a", log), "steps": 3},
        Stage(objective=Recorder("b", log), steps=2),
        {"objective": Recorder("c", log)},
    ])
    module = tiny_module(recipe)
    assert module.automatic_optimization
    metrics = MetricsLog()
    trainer = tiny_trainer(max_steps=7, callbacks=[metrics])
    trainer.fit(module, tiny_arithmetic())
    assert log == ["a", "a", "a", "b", "b", "c", "c"]
    assert [row["train/stage"] for row in metrics.rows] == [0, 0, 0, 1, 1, 2, 2]
    assert recipe.state_dict()["stage_index"] == 2 and recipe.state_dict()["total_batches"] == 7


def test_sequential_switches_after_the_given_epochs():
    log: List[str] = []
    recipe = Sequential(stages=[
        {"objective": Recorder("a", log), "epochs": 2},
        {"objective": Recorder("b", log), "epochs": 1},
    ])
    module = tiny_module(recipe)
    trainer = tiny_trainer(max_epochs=3)
    trainer.fit(module, tiny_arithmetic(num_train=16, batch_size=4))  # 4 batches per epoch
    assert log == ["a"] * 8 + ["b"] * 4


def test_sequential_rejects_malformed_stages():
    with pytest.raises(ValueError, match="needs 'epochs' or 'steps'"):
        Sequential(stages=[{"objective": SFT()}, {"objective": SFT()}])
    with pytest.raises(ValueError, match="both epochs and steps"):
        Sequential(stages=[{"objective": SFT(), "epochs": 1, "steps": 2}])
    with pytest.raises(ValueError, match="got keys"):
        Sequential(stages=[{"objective": SFT(), "epoch": 1}])
    with pytest.raises(TypeError, match="must be an Objective"):
        Sequential(stages=[{"objective": "SFT", "steps": 1}])
    with pytest.raises(ValueError, match="at least one"):
        Sequential(stages=[])


def test_optimization_mode_follows_the_stages():
    stages = [{"objective": SFT(), "steps": 1}, {"objective": PPO(reward=AnswerMatchReward())}]
    sft_then_ppo = Sequential(stages=stages).capabilities
    assert sft_then_ppo.manual_optimization and sft_then_ppo.reads_reference
    assert sft_then_ppo.idle_trainable_parts  # the value head has no gradient in the SFT stage
    assert not Sequential(stages=[{"objective": SFT(), "steps": 1}, {"objective": IFT()}]).capabilities.manual_optimization
    mixed = Mix(objectives=[SFT(), PPO(reward=AnswerMatchReward())]).capabilities
    assert not mixed.manual_optimization  # one step per batch
    assert mixed.reads_reference and not Mix(objectives=[SFT()]).capabilities.reads_reference
    ppo_objective = PPO(reward=AnswerMatchReward())
    assert not ppo_objective.capabilities.idle_trainable_parts and ppo_objective.capabilities.manual_optimization


class SwitchWatcher(FineTuneModule):
    """Records the policy weights and the stage name at every recipe switch."""

    def notify_stage_switch(self, stage_name: str) -> None:
        self.switches = getattr(self, "switches", [])
        policy = {k: v.clone() for k, v in self.policy.state_dict().items()}
        reference = {k: v.clone() for k, v in self.reference_policy.state_dict().items()}
        self.switches.append((stage_name, policy, reference))
        super().notify_stage_switch(stage_name)


def test_reference_is_the_policy_at_the_switch_even_when_one_existed():
    recipe = Sequential(stages=[
        {"objective": ppo(), "steps": 1, "name": "first-ppo"},
        {"objective": SFT(), "steps": 2},
        {"objective": ppo(), "name": "second-ppo"},
    ])
    module = tiny_module(recipe, cls=SwitchWatcher)
    initial = {k: v.clone() for k, v in module.policy.state_dict().items()}
    assert not module.automatic_optimization
    trainer = tiny_trainer(max_epochs=1)  # 4 batches: PPO, SFT, SFT, PPO
    trainer.fit(module, tiny_arithmetic())
    names = [name for name, _, _ in module.switches]
    assert names == ["stage1-sft", "second-ppo"]
    _, policy_at_switch, reference_at_switch = module.switches[-1]
    final_reference = module.reference_policy.state_dict()
    for key, value in policy_at_switch.items():
        assert torch.equal(reference_at_switch[key], value), key  # refreshed at the switch
        assert torch.equal(final_reference[key], value), key  # and frozen afterwards
    assert any(not torch.equal(initial[k], policy_at_switch[k]) for k in initial)  # it had trained
    assert any(not torch.equal(module.policy.state_dict()[k], final_reference[k]) for k in initial)


# ---------------------------------------------------------------------------- Mix
def test_mix_is_the_weighted_sum_of_losses_and_gradients():
    module = tiny_module(Mix(objectives=[SFT(), SFT(token_mean=True)], weights=[0.3, 0.7]))
    data = tiny_arithmetic()
    data.tokenizer = module.tokenizer
    data.setup()
    batch = next(iter(data.train_dataloader()))
    result = module.objective.training_step(module.step_context, batch)
    loss, metrics = result.loss, result.metrics
    assert not result.stepped
    a, _ = SFT().loss(module.policy, batch)
    b, _ = SFT(token_mean=True).loss(module.policy, batch)
    assert torch.allclose(loss, 0.3 * a + 0.7 * b)
    assert {"sft0_loss", "sft1_loss", "sft0_nll", "sft1_nll"} <= set(metrics)
    grads = torch.autograd.grad(loss, list(module.policy.parameters()), allow_unused=True)
    ga = torch.autograd.grad(a, list(module.policy.parameters()), allow_unused=True)
    gb = torch.autograd.grad(b, list(module.policy.parameters()), allow_unused=True)
    for g, x, y in zip(grads, ga, gb):
        if g is not None:
            # float32 sums of two backward passes agree to ~1e-7 relative; 1e-6 absolute covers it.
            assert torch.allclose(g, 0.3 * x + 0.7 * y, rtol=1e-5, atol=1e-6)


def test_mix_with_ppo_uses_one_rollout_and_one_loss_on_it():
    objective = ppo(kl_coef=0.1)
    mix = Mix(objectives=[SFT(), objective], weights=[1.0, 0.5])
    module = tiny_module(mix)
    data = tiny_arithmetic()
    data.tokenizer = module.tokenizer
    data.setup()
    batch = next(iter(data.train_dataloader()))
    mix.begin(module.step_context)
    result = mix.training_step(module.step_context, batch)
    loss, metrics = result.loss, result.metrics
    assert loss.requires_grad
    assert {"sft_loss", "ppo_loss", "ppo_score", "ppo_clipfrac", "time/generation"} <= set(metrics)
    # Replaying the same sampling stream gives the same rollout and PPO loss.
    objective.load_state_dict({"rollouts": 0})
    rollout = objective.rollout(module.step_context, batch)
    ppo_loss, _ = objective.loss_on_rollout(module.step_context, rollout)
    sft_loss, _ = SFT().loss(module.policy, batch)
    assert torch.allclose(loss, sft_loss + 0.5 * ppo_loss, atol=1e-6)
    assert float(metrics["ppo_clipfrac"]) == 0  # the first update: ratio 1


def test_mix_of_sft_and_ppo_trains_with_automatic_optimization():
    module = tiny_module(Mix(objectives=[SFT(), ppo()], weights=[1.0, 1.0]))
    assert module.automatic_optimization
    before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    trainer = tiny_trainer(max_steps=2, gradient_clip_val=1.0)
    trainer.fit(module, tiny_arithmetic())
    assert trainer.global_step == 2
    assert any(not torch.equal(before[k], v) for k, v in module.policy.state_dict().items())


# ---------------------------------------------------------------------------- resume
def reft_recipe() -> Sequential:
    return Sequential(stages=[
        {"objective": SFT(), "epochs": 1},
        {"objective": ppo(adaptive_kl=True, kl_coef=0.1, target_kl=0.5, kl_horizon=50, seed=3), "lr": 5e-4},
    ])


def run_reft(tmp_path, max_epochs: int, max_steps: int = -1, ckpt_path=None):
    module = tiny_module(reft_recipe(), optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3))
    metrics = MetricsLog()
    trainer = tiny_trainer(max_epochs=max_epochs, max_steps=max_steps, callbacks=[metrics])
    trainer.fit(module, tiny_arithmetic(), ckpt_path=ckpt_path)
    return module, trainer, metrics.rows


def test_resume_mid_ppo_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    # 4 batches per epoch: SFT for one epoch (4 steps), then PPO (8 rollouts x 1 epoch x
    # mini-batches of 4 = 2 optimizer steps per batch) for two more epochs.
    full_module, full_trainer, full_rows = run_reft(tmp_path, max_epochs=3)
    assert full_trainer.global_step == 4 + 8 * 2
    assert [row["train/stage"] for row in full_rows] == [0] * 4 + [1] * 8

    # Stopped after the first PPO epoch (global step 4 + 4 * 2), mid-stage.
    first_module, first_trainer, first_rows = run_reft(tmp_path, max_epochs=3, max_steps=12)
    assert first_module.objective.stage_index == 1 and len(first_rows) == 8
    path = tmp_path / "mid_ppo.ckpt"
    first_trainer.save_checkpoint(path)
    reference = {k: v.clone() for k, v in first_module.reference_policy.state_dict().items()}

    resumed_module, resumed_trainer, resumed_rows = run_reft(tmp_path, max_epochs=3, ckpt_path=str(path))
    assert resumed_trainer.global_step == full_trainer.global_step
    assert [row["train/stage"] for row in resumed_rows] == [1] * 4  # continued in PPO
    for key, value in resumed_module.reference_policy.state_dict().items():
        assert torch.equal(value, reference[key]), key  # the same reference

    keys = ["train/loss", "train/score", "train/kl", "train/kl_coef", "train/policy_loss", "train/value_loss"]
    expected = [row.get(k, 0.0) for row in full_rows for k in keys]
    got = [row.get(k, 0.0) for row in first_rows + resumed_rows for k in keys]
    assert len(got) == len(expected) == 12 * len(keys)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    for key, value in full_module.state_dict().items():
        assert torch.allclose(resumed_module.state_dict()[key], value, atol=1e-6), key
    assert resumed_module.objective.state_dict() == full_module.objective.state_dict()
    # The checkpoint also loads with torch.load's default weights_only=True.
    loaded = FineTuneModule.load_from_checkpoint(path)
    assert isinstance(loaded.objective, Sequential) and loaded.objective.stage_index == 1
    assert loaded.objective.stages[1].lr == 5e-4
