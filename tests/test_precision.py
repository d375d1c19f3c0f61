"""Memory and precision: ``precision="bf16-mixed"`` trains every objective on CPU (autocast
really on inside the objective), and gradient checkpointing gives the same loss and gradients."""

from __future__ import annotations

import importlib

import pytest
import torch

from eco_helpers import write_jsonl
from factories import quiet_trainer
from ift.data import PreferenceDataModule
from ift.tasks.arithmetic import ArithmeticDataModule
from ift.modules import FineTuneModule
from ift.objectives import IFT, SFT
from ift.rewards import AnswerMatchReward


def objective_class(name):
    module = importlib.import_module("ift.objectives")
    if not hasattr(module, name):
        pytest.skip(f"objective {name} is not available yet")
    return getattr(module, name)


def spy(objective):
    """Wrap ``objective.training_step`` to record whether bf16 autocast is on inside it."""
    seen = []
    original = objective.training_step

    def training_step(module, batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(module, batch)

    objective.training_step = training_step
    return seen


def preference_data(tmp_path):
    rows = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(8)]
    return PreferenceDataModule(train_data=write_jsonl(tmp_path / "pref.jsonl", rows), batch_size=4)


CASES = {
    "SFT": (lambda: SFT(), "arithmetic"),
    "IFT": (lambda: IFT(lam=0.2, gamma=0.95), "arithmetic"),
    "DPO": (lambda: objective_class("DPO")(), "preference"),
    "ORPO": (lambda: objective_class("ORPO")(), "preference"),
    "PPO": (lambda: objective_class("PPO")(reward=AnswerMatchReward(), max_new_tokens=3, samples_per_prompt=2, ppo_epochs=1), "arithmetic"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bf16_mixed_trains_every_objective_on_cpu(name, tmp_path):
    make_objective, data_kind = CASES[name]
    objective = make_objective()
    seen = spy(objective)
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", objective=objective)
    data = (ArithmeticDataModule(num_train=16, num_val=4, num_test=4, batch_size=8) if data_kind == "arithmetic"
            else preference_data(tmp_path))
    before = [p.detach().clone() for p in module.trainable_parameters()]
    trainer = quiet_trainer(max_steps=2, precision="bf16-mixed", limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    assert seen and all(enabled and dtype == torch.bfloat16 for enabled, dtype in seen)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, module.trainable_parameters()))
    assert all(p.dtype == torch.float32 for p in module.policy.parameters())  # mixed: weights stay fp32


def count_checkpoint_calls(policy):
    """Count the calls of the checkpointing function the model's layers use."""
    calls = [0]
    for layer in policy.modules():
        original = getattr(layer, "_gradient_checkpointing_func", None)
        if original is not None:
            def counted(*args, _original=original, **kwargs):
                calls[0] += 1
                return _original(*args, **kwargs)

            layer._gradient_checkpointing_func = counted
    return calls


@pytest.mark.parametrize("preset", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("objective", [SFT(), IFT(lam=0.2, gamma=0.95)], ids=["SFT", "IFT"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(preset, objective):
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        module = FineTuneModule(model=preset, objective=objective, gradient_checkpointing=checkpointing)
        calls = count_checkpoint_calls(module.policy)
        data = ArithmeticDataModule(num_train=8, num_val=2, num_test=2, batch_size=8, tokenizer=module.tokenizer)
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
        module.train()
        loss, _ = objective.loss(module.policy, batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in module.policy.named_parameters()}))
        # Every layer of the pass with gradient really ran under checkpointing.
        assert (calls[0] >= module.policy.config.num_hidden_layers) == checkpointing, calls
    (loss_plain, grads_plain), (loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss_plain, rtol=0, atol=1e-6)
    assert grads_plain.keys() == grads_ckpt.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=1e-5, atol=1e-7, msg=name)
