"""LoRA: only the adapters train and the loss goes down; the reference is the policy with its
adapters disabled (the base model's logits, no second copy); export merges or saves adapters."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from eco_helpers import save_tiny_model
from factories import quiet_trainer
from ift.callbacks import AnswerAccuracy, export_pretrained
from ift.tasks.arithmetic import ArithmeticDataModule
from ift.modules import FineTuneModule
from ift.objectives import IFT, SFT
from ift.rewards import AnswerMatchReward

peft = pytest.importorskip("peft")

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn", "c_proj"]}


def batch_of(module, size=8):
    data = ArithmeticDataModule(num_train=size, num_val=2, num_test=2, batch_size=size, tokenizer=module.tokenizer)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def base_and_lora(seed=0, **kwargs):
    """The same initial base weights, plain and with LoRA adapters."""
    torch.manual_seed(seed)
    base = FineTuneModule(model="tiny-gpt2", **kwargs)
    torch.manual_seed(seed)
    lora = FineTuneModule(model="tiny-gpt2", lora=LORA, **kwargs)
    return base, lora


def train(module, batch, steps=20, lr=1e-2):
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=lr)
    losses = []
    module.train()
    for _ in range(steps):
        loss, _ = module.objective.loss(module.policy, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("objective", [SFT(), IFT(lam=0.2, gamma=0.95)], ids=["SFT", "IFT"])
def test_lora_policy_trains_and_reference_is_the_base_model(objective):
    base, module = base_and_lora(objective=objective)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    frozen_before = {n: p.detach().clone() for n, p in module.policy.named_parameters() if not p.requires_grad}
    batch = batch_of(module)
    losses = train(module, batch, steps=20)
    assert losses[-1] < losses[0] - 0.5, losses
    # The frozen base never moved; the reference is it, served by the policy itself.
    for name, p in module.policy.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[name]), name
    base.policy.eval()
    with module.reference_model() as reference:
        assert reference is module.policy
        torch.testing.assert_close(logits(reference, batch), logits(base.policy, batch), rtol=0, atol=1e-6)
    assert module.reference_policy is None and module.ensure_reference() is module.policy  # no copy
    assert module.policy.training  # the mode is restored after reading the reference
    module.eval()
    assert not torch.allclose(logits(module.policy, batch), logits(base.policy, batch), atol=1e-3)
    # Memory: the module holds the base weights once plus the adapters.
    base_count = sum(p.numel() for p in base.parameters())
    adapter_count = sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in module.parameters()) == base_count + adapter_count


def test_lora_with_trainer_and_gradient_checkpointing():
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", lora=LORA, gradient_checkpointing=True)
    data = ArithmeticDataModule(num_train=16, num_val=4, num_test=4, batch_size=8)
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1, callbacks=[AnswerAccuracy(max_new_tokens=3)])
    trainer.fit(module, datamodule=data)
    assert all(not torch.equal(p, before[n]) for n, p in module.named_parameters() if p.requires_grad)
    assert "val/loss" in trainer.callback_metrics


def test_dpo_reference_with_lora_is_the_base_model_without_a_copy():
    dpo = pytest.importorskip("ift.objectives.dpo")
    base, module = base_and_lora(objective=dpo.DPO())
    from ift.objectives.preference import pair_logprobs

    module.objective.begin(module.step_context)
    assert module.reference_policy is None
    tokenizer = module.tokenizer
    prompt, chosen, rejected = tokenizer("2+2=")["input_ids"], tokenizer("4")["input_ids"], tokenizer("5")["input_ids"]
    eos = [tokenizer.eos_token_id]
    batch = {}
    for side, response in (("chosen", chosen), ("rejected", rejected)):
        ids = torch.tensor([prompt + response + eos])
        batch[f"{side}_input_ids"] = ids
        batch[f"{side}_attention_mask"] = torch.ones_like(ids)
        batch[f"{side}_labels"] = torch.tensor([[-100] * len(prompt) + response + eos])
    for p in module.policy.parameters():  # move the adapters away from zero
        if p.requires_grad:
            p.data.normal_(0, 0.2)
    with_reference = module.objective.with_reference_logprobs(module.step_context, batch)
    reference = [with_reference[key] for key in dpo.REFERENCE_KEYS]
    expected = pair_logprobs(base.policy.eval(), batch, average=False)
    for got, want in zip(reference, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    loss = module.objective.training_step(module.step_context, batch).loss
    assert torch.isfinite(loss)


def test_export_merged_or_adapters(tmp_path):
    base_dir = save_tiny_model(tmp_path / "base")
    torch.manual_seed(0)
    module = FineTuneModule(model=base_dir, lora=LORA)
    for p in module.policy.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.2)
    module.eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        adapted = module.policy(input_ids=ids).logits
    # Merged: a plain model for AutoModelForCausalLM; the training model keeps its adapters.
    merged = export_pretrained(module, str(tmp_path / "merged"), merge_lora=True)
    reloaded = AutoModelForCausalLM.from_pretrained(merged).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted, rtol=0, atol=1e-5)
        torch.testing.assert_close(module.policy(input_ids=ids).logits, adapted, rtol=0, atol=0)
    # Adapters only: adapter files that peft loads on top of the base folder.
    adapters = export_pretrained(module, str(tmp_path / "adapters"), merge_lora=False)
    assert (tmp_path / "adapters" / "adapter_config.json").is_file()
    assert not (tmp_path / "adapters" / "model.safetensors").exists()
    restored = peft.AutoPeftModelForCausalLM.from_pretrained(adapters).eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(input_ids=ids).logits, adapted, rtol=0, atol=1e-5)


def test_reft_recipe_with_lora_keeps_no_reference_copy():
    objectives = pytest.importorskip("ift.objectives")
    if not hasattr(objectives, "PPO") or not hasattr(objectives, "Sequential"):
        pytest.skip("PPO / Sequential are not available yet")
    recipe = objectives.Sequential(stages=[{"objective": SFT(), "steps": 1},
                                           {"objective": objectives.PPO(reward=AnswerMatchReward(), max_new_tokens=4, samples_per_prompt=2), "steps": 2}])
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", objective=recipe, lora={"r": 4, "alpha": 8, "target_modules": ["c_attn"]})
    trainer = quiet_trainer(max_epochs=3, limit_val_batches=0)
    trainer.fit(module, datamodule=ArithmeticDataModule(num_train=16, num_val=4, num_test=4, batch_size=8))
    assert type(recipe.current).__name__ == "PPO"
    assert module.reference_policy is None  # the reference was the policy with adapters disabled
    assert torch.isfinite(trainer.callback_metrics["train/kl"])
    assert all("lora_" in n or n.startswith("extras.") for n, p in module.named_parameters() if p.requires_grad)
