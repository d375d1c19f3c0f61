"""``FineTuneModule(disable_dropout=...)``: IFT's two passes (and DPO, ORPO, the RL objectives)
run on a policy without dropout by default, SFT and reward modelling keep the model's
dropout, and an explicit true/false is honoured. The policy is a tiny GPT-2 with dropout 0.1
everywhere (``resid_pdrop``, ``embd_pdrop``, ``attn_pdrop``), as the hub's GPT-2 has."""

from __future__ import annotations

import logging
from typing import Dict, Optional

import pytest
import torch

from ift.modules import FineTuneModule
from ift.modules.dropout import active_dropout, disable_dropout
from ift.objectives import IFT, SFT
from ift.objectives.dpo import DPO
from ift.objectives.orpo import ORPO
from ift.objectives.recipes import Mix, Sequential
from ift.objectives.reward_modeling import RewardModeling

DROPOUT = 0.1
GPT2_WITH_DROPOUT = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64,
                     "resid_pdrop": DROPOUT, "embd_pdrop": DROPOUT, "attn_pdrop": DROPOUT}


def module_with_dropout(objective, disable_dropout: Optional[bool] = None, **kwargs) -> FineTuneModule:
    torch.manual_seed(0)
    return FineTuneModule(model=dict(GPT2_WITH_DROPOUT), objective=objective, disable_dropout=disable_dropout,
                          **kwargs)


def batch_of(module) -> Dict[str, torch.Tensor]:
    rows = [module.tokenizer(text)["input_ids"] for text in ("3+4=7 and 12-5=7", "9+9=18, 18-9=9")]
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), module.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def two_training_losses(module) -> tuple:
    """The objective's loss on the same batch twice, with the policy in train mode."""
    module.train()
    batch = batch_of(module)
    with torch.no_grad():
        return tuple(float(module.objective.loss(module.policy, batch)[0]) for _ in range(2))


def test_ift_default_turns_dropout_off_so_the_same_batch_gives_the_same_loss():
    module = module_with_dropout(IFT(lam=0.2, gamma=0.95))
    assert module.dropout_disabled is True
    first, second = two_training_losses(module)
    assert first == second
    assert not active_dropout(module.policy)
    config = module.policy.config
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)


def test_ift_with_disable_dropout_false_keeps_the_models_dropout():
    module = module_with_dropout(IFT(lam=0.2, gamma=0.95), disable_dropout=False)
    assert module.dropout_disabled is False
    first, second = two_training_losses(module)
    assert first != second  # each pass draws its own masks
    assert module.policy.config.resid_pdrop == DROPOUT


def test_sft_keeps_dropout_by_default_and_honours_true():
    kept = module_with_dropout(SFT())
    assert kept.dropout_disabled is False
    first, second = two_training_losses(kept)
    assert first != second
    off = module_with_dropout(SFT(), disable_dropout=True)
    assert off.dropout_disabled is True
    first, second = two_training_losses(off)
    assert first == second


@pytest.mark.parametrize("objective, off", [
    (lambda: DPO(beta=0.1), True),
    (lambda: ORPO(beta=0.25), True),
    (lambda: RewardModeling(), False),
    (lambda: Sequential(stages=[{"objective": SFT(), "steps": 1}, {"objective": IFT(), "steps": 1}]), True),
    (lambda: Mix(objectives=[SFT(), SFT()], weights=[1.0, 1.0]), False),
    (lambda: Mix(objectives=[SFT(), ORPO()], weights=[1.0, 1.0]), True),
])
def test_each_objectives_default(objective, off):
    module = module_with_dropout(objective())
    assert module.dropout_disabled is off
    assert bool(active_dropout(module.policy)) is not off


def test_the_rl_objectives_turn_dropout_off_by_default():
    from ift.objectives import RolloutObjective
    from ift.objectives.critic_free import CriticFreeRL
    from ift.objectives.ppo import PPO

    for cls in (RolloutObjective, PPO, CriticFreeRL):
        assert cls.disables_dropout is True, cls


class _Records(logging.Handler):
    """The records of one logger, whatever its level, propagation or another test left it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def said_while(build, logger_name="pytorch_lightning.utilities.rank_zero"):
    """The messages mentioning dropout that ``build()`` logs through Lightning's rank-zero logger."""
    logger, handler = logging.getLogger(logger_name), _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        build()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return [message for message in handler.messages if "dropout" in message]


def test_the_choice_is_said_once():
    lines = said_while(lambda: module_with_dropout(IFT()))
    assert len(lines) == 1 and "dropout off in the policy (the default of IFT" in lines[0], lines
    lines = said_while(lambda: module_with_dropout(SFT()))
    assert len(lines) == 1 and "trains with its dropout (the default of SFT" in lines[0], lines


def test_lora_dropout_is_the_users_choice_and_stays():
    pytest.importorskip("peft")
    module = module_with_dropout(IFT(), lora={"r": 4, "alpha": 8, "dropout": 0.3, "target_modules": ["c_attn"]})
    probabilities = {name: m.p for name, m in module.policy.named_modules() if isinstance(m, torch.nn.Dropout)}
    lora = {name: p for name, p in probabilities.items() if "lora_dropout" in name}
    assert lora and set(lora.values()) == {0.3}
    assert {p for name, p in probabilities.items() if name not in lora} == {0.0}


def test_attention_dropout_read_from_a_module_attribute_is_turned_off_too():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64, vocab_size=64,
                                         num_attention_heads=2, num_key_value_heads=2, attention_dropout=0.2))
    assert active_dropout(model)
    disable_dropout(model)
    assert model.model.layers[0].self_attn.attention_dropout == 0.0 and model.config.attention_dropout == 0.0
    assert not active_dropout(model)
