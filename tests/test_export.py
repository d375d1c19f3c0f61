"""Callbacks: ExportPretrained (end of fit and recipe stage switches, reload -> same logits),
SampleLogger's prompt handling, and the rollout progress API for PPO."""

from __future__ import annotations

import copy

import pytest
import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from transformers import AutoModelForCausalLM, AutoTokenizer

from factories import quiet_trainer
from ift.callbacks import ExportPretrained, RolloutProgress, SampleLogger, rollout_progress
from ift.callbacks.rollout_progress import RolloutBar
from ift.tasks.arithmetic import ArithmeticDataModule
from ift.modules import FineTuneModule
from ift.objectives import IFT, SFT


def small_data(**kwargs):
    return ArithmeticDataModule(num_train=24, num_val=4, num_test=4, batch_size=8, **kwargs)


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_export_at_fit_end_reloads_with_the_same_logits_and_tokenizer(tmp_path):
    export = ExportPretrained()
    module = FineTuneModule(model="tiny-llama")
    trainer = quiet_trainer(max_steps=2, logger=CSVLogger(str(tmp_path)), callbacks=[export], limit_val_batches=0)
    trainer.fit(module, datamodule=small_data())
    folder = tmp_path / "lightning_logs" / "version_0" / "export" / "final"
    assert export.exports == [str(folder)]
    reloaded = AutoModelForCausalLM.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = torch.tensor([tokenizer("12+7=19")["input_ids"]])
    assert ids.tolist() == [module.tokenizer("12+7=19")["input_ids"]]
    torch.testing.assert_close(logits(reloaded, ids), logits(module.policy, ids), rtol=0, atol=1e-5)


class Snapshot(Callback):
    """Keeps the policy as it stands when the second training batch starts."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            self.policy = copy.deepcopy(pl_module.policy)


def test_export_at_every_recipe_stage_switch(tmp_path):
    recipes = pytest.importorskip("ift.objectives.recipes")
    recipe = recipes.Sequential(stages=[{"objective": SFT(), "steps": 1, "name": "warmup"},
                                        {"objective": IFT(lam=0.2), "steps": 2, "name": "ift"}])
    export, snapshot = ExportPretrained(dirpath=str(tmp_path / "exports")), Snapshot()
    module = FineTuneModule(model="tiny-gpt2", objective=recipe)
    trainer = quiet_trainer(max_steps=3, callbacks=[export, snapshot], limit_val_batches=0)
    trainer.fit(module, datamodule=small_data())
    switch = tmp_path / "exports" / "switch-1-before-ift"
    assert export.exports == [str(switch), str(tmp_path / "exports" / "final")]
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    reloaded = AutoModelForCausalLM.from_pretrained(str(switch))
    torch.testing.assert_close(logits(reloaded, ids), logits(snapshot.policy, ids), rtol=0, atol=1e-5)
    assert not torch.allclose(logits(reloaded, ids), logits(module.policy, ids))  # training went on after the switch


def test_notify_stage_switch_reaches_callbacks_with_the_hook(tmp_path):
    seen = []

    class Listener(Callback):
        def on_stage_switch(self, trainer, module, stage_name):
            seen.append((trainer is module.trainer, stage_name))

    module = FineTuneModule(model="tiny-gpt2")
    module.notify_stage_switch("unattached")  # no Trainer yet: nothing to tell, no error
    trainer = quiet_trainer(max_steps=1, callbacks=[Listener()], limit_val_batches=0)
    trainer.fit(module, datamodule=small_data())
    module.notify_stage_switch("ppo")
    assert seen == [(True, "ppo")]


def test_sample_logger_uses_explicit_prompts():
    samples = SampleLogger(prompts=["1+1=", "2+2=", "3+3="], num_samples=2, max_new_tokens=2)
    module = FineTuneModule(model="tiny-gpt2")
    trainer = quiet_trainer(max_steps=1, callbacks=[samples], limit_val_batches=0)
    trainer.fit(module, datamodule=small_data())
    assert [row[1] for row in samples.rows] == ["1+1=", "2+2="] and samples.rows[0][0] == 1


def test_rollout_progress_api(capsys):
    module = FineTuneModule(model="tiny-gpt2")
    with rollout_progress(module, total=4) as bar:  # not attached to a Trainer: a silent no-op
        bar.update(4)
        bar.set_phase("generation")
        assert bar.token_streamer() is None
    seen = {}

    class PeekAtRollout(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            with rollout_progress(pl_module, total=2, desc="rollout") as bar:
                seen["bar"] = type(bar)
                bar.set_phase("generation")
                out = pl_module.policy.generate(input_ids=batch["prompt_input_ids"][:2],
                                                attention_mask=batch["prompt_attention_mask"][:2],
                                                max_new_tokens=3, do_sample=False,
                                                pad_token_id=pl_module.tokenizer.pad_token_id,
                                                streamer=bar.token_streamer())
                bar.update(2)
                bar.set_postfix(score=0.5)
                seen["tokens"] = bar.postfix.get("tokens")
                seen["new"] = out.shape[1] - batch["prompt_input_ids"].shape[1]
                seen["n"] = bar.n

    # The rollout is shown in the postfix of Lightning's training bar (tqdm writes to stdout).
    trainer = quiet_trainer(max_steps=1, callbacks=[PeekAtRollout(), RolloutProgress(enabled=True), TQDMProgressBar()],
                            limit_val_batches=0, enable_progress_bar=True)
    trainer.fit(module, datamodule=small_data())
    assert seen["bar"] is RolloutBar and seen["n"] == 2 and seen["tokens"] == seen["new"]
    assert "rollout=" in capsys.readouterr().out
    hidden = quiet_trainer(max_steps=1, callbacks=[RolloutProgress(enabled=False)], limit_val_batches=0)
    hidden.fit(FineTuneModule(model="tiny-gpt2"), datamodule=small_data())
    assert type(rollout_progress(hidden.lightning_module, total=1)) is not RolloutBar
