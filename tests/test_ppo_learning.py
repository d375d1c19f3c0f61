"""Learning tests (slow): PPO with the answer reward raises held-out greedy accuracy on the
arithmetic task above the SFT warm-up it starts from, both as a second fit and inside a
``Sequential`` SFT -> PPO recipe run as one fit (ReFT).

Task: two operands in [0, 29], ``+`` or ``-`` (1800 distinct problems), 1500 for training,
200 held out. Warm-up: 1500 SFT steps of 64 at lr 3e-3 (~30% held-out accuracy: the
model has learned the format and part of the arithmetic). PPO: 30 iterations of 64
prompts x 4 samples at temperature 1, lr 5e-4, beta 0.05, 2 PPO epochs over
mini-batches of 64.

Measured (torch 2.13 CPU, one thread): SFT warm-up 0.355 -> PPO 0.410 (second fit);
Sequential 0.290 at the switch -> 0.355 after PPO (one fit). About 65 s each.
"""

from __future__ import annotations

import time

import pytest
import pytorch_lightning as pl
import torch

from ift.data import ArithmeticDataModule
from ift.modules import FineTuneModule
from ift.objectives import PPO, SFT, Sequential

pytestmark = pytest.mark.slow

SFT_STEPS = 1500
PPO_ITERATIONS = 30
BATCH = 64
UPDATES = 2 * 4  # optimizer steps per PPO iteration: 2 epochs x (64 x 4 samples / mini-batches of 64)




def arithmetic() -> ArithmeticDataModule:
    return ArithmeticDataModule(num_train=1500, num_val=200, num_test=100, max_operand=29, operators="+-",
                                batch_size=BATCH, eval_batch_size=200)


def reft_ppo() -> PPO:
    return PPO(kl_coef=0.05, samples_per_prompt=4, max_new_tokens=5, ppo_epochs=2, mini_batch_size=BATCH,
               temperature=1.0, seed=0)


def trainer(max_steps: int) -> pl.Trainer:
    return pl.Trainer(max_steps=max_steps, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0)


def held_out_accuracy(policy: torch.nn.Module, tokenizer, data: ArithmeticDataModule) -> float:
    """Greedy exact-match accuracy on the held-out split."""
    probe = FineTuneModule(model=policy, tokenizer=tokenizer, eval_max_new_tokens=5)
    probe.eval()
    hits = 0.0
    for batch in data.val_dataloader():
        hits += float(probe.answer_accuracy(batch)) * len(batch["prompt"])
    return hits / len(data.datasets["val"])


def adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def test_ppo_after_an_sft_warm_up_raises_held_out_accuracy():
    start = time.perf_counter()
    pl.seed_everything(0)
    warm = FineTuneModule(model="tiny-gpt2", objective=SFT(), optimizer=adamw(3e-3))
    data = arithmetic()
    trainer(SFT_STEPS).fit(warm, data)
    before = held_out_accuracy(warm.policy, warm.tokenizer, data)

    module = FineTuneModule(model=warm.policy, tokenizer=warm.tokenizer, objective=reft_ppo(), optimizer=adamw(5e-4))
    ppo_trainer = trainer(PPO_ITERATIONS * UPDATES)
    ppo_trainer.fit(module, data)
    after = held_out_accuracy(module.policy, module.tokenizer, data)
    elapsed = time.perf_counter() - start
    print(f"\nSFT warm-up {before:.3f} -> PPO {after:.3f} held-out accuracy ({elapsed:.0f} s)")
    assert before > 0.1  # a partially trained model: PPO has correct samples to reinforce
    assert after >= before + 0.03


def test_sequential_sft_then_ppo_in_one_fit_raises_held_out_accuracy():
    start = time.perf_counter()
    pl.seed_everything(0)
    recipe = Sequential(stages=[
        {"objective": SFT(), "steps": SFT_STEPS, "name": "sft"},
        {"objective": reft_ppo(), "lr": 5e-4, "name": "ppo"},
    ])
    module = FineTuneModule(model="tiny-gpt2", objective=recipe, optimizer=adamw(3e-3))
    data = arithmetic()
    fit = trainer(SFT_STEPS + PPO_ITERATIONS * UPDATES)
    fit.fit(module, data)
    # (a short last batch of an epoch makes fewer PPO updates, so a few more iterations fit)
    assert recipe.stage_index == 1 and recipe.stage_batches >= PPO_ITERATIONS
    # The reference is the policy as it stood at the switch: the SFT warm-up.
    before = held_out_accuracy(module.reference_policy, module.tokenizer, data)
    after = held_out_accuracy(module.policy, module.tokenizer, data)
    elapsed = time.perf_counter() - start
    print(f"\nSequential: at the switch {before:.3f} -> after PPO {after:.3f} held-out accuracy ({elapsed:.0f} s)")
    assert before > 0.1
    assert after >= before + 0.03
