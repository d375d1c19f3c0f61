"""FineTuneModule: every way of naming a model, drop-in use in a plain Trainer, logging,
reproducibility and checkpoints."""

import math
import pytest
import pytorch_lightning as pl
import torch

from factories import quiet_trainer
from ift.callbacks import AnswerAccuracy
from ift.data import build_char_tokenizer
from ift.tasks.arithmetic import ArithmeticDataModule
from ift.modules import FineTuneModule, build_policy
from ift.objectives import IFT, SFT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tiny_data(module, **kwargs):
    base = dict(num_train=48, num_val=16, num_test=16, batch_size=16, max_operand=20, tokenizer=module.tokenizer)
    base.update(kwargs)
    return ArithmeticDataModule(**base)


def make_trainer(tmp_path, callbacks=(), **kwargs):
    """Three steps and one validation batch by default; writes (if anything) under ``tmp_path``."""
    kwargs = {"max_steps": 3, "limit_val_batches": 1, **kwargs}
    return quiet_trainer(tmp_path, callbacks, **kwargs)


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


def batch_loss(module, batch):
    with torch.no_grad():
        return SFT().loss(module.policy, batch)[0].item()


def arithmetic_batch(module):
    dm = tiny_data(module)
    dm.setup("fit")
    return next(iter(dm.val_dataloader()))


# ------------------------------------------------------------------------------ model specs
def test_preset(tmp_path):
    module = FineTuneModule(model="tiny-llama")
    assert module.policy.config.model_type == "llama"
    assert module.policy.config.vocab_size == len(module.tokenizer)
    assert not module.policy.config.tie_word_embeddings
    assert module.hparams.model == "tiny-llama"
    assert isinstance(module.objective, SFT)  # the default objective
    assert torch.isfinite(torch.tensor(batch_loss(module, arithmetic_batch(module))))


def test_dict_config():
    config = dict(model_type="llama", num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                  num_attention_heads=2, num_key_value_heads=1)
    module = FineTuneModule(model=config, objective=IFT())
    cfg = module.policy.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("llama", 1, 32)
    assert cfg.vocab_size == len(module.tokenizer)
    assert cfg.pad_token_id == module.tokenizer.pad_token_id and cfg.eos_token_id == module.tokenizer.eos_token_id
    loss, _ = module.objective.loss(module.policy, arithmetic_batch(module))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="model_type"):
        FineTuneModule(model=dict(n_layer=1))


def test_saved_folder_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    policy = build_policy("tiny-gpt2", tokenizer)
    folder = tmp_path / "saved"
    policy.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    module = FineTuneModule(model=str(folder))  # no tokenizer given: the folder's own
    assert module.tokenizer("17+25=")["input_ids"] == tokenizer("17+25=")["input_ids"]
    assert module.tokenizer.pad_token_id == tokenizer.pad_token_id
    saved = policy.state_dict()
    for name, value in module.policy.state_dict().items():
        assert torch.equal(value, saved[name]), name
    batch = arithmetic_batch(module)
    assert batch_loss(module, batch) == pytest.approx(SFT().loss(policy, batch)[0].item(), rel=1e-6)


def test_missing_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="no folder .*nowhere.* exists"):
        FineTuneModule(model=str(tmp_path / "nowhere"), tokenizer="char")


def test_ready_module_is_used_as_is():
    tokenizer = build_char_tokenizer()
    policy = build_policy("tiny-gpt2", tokenizer)
    module = FineTuneModule(model=policy, tokenizer=tokenizer, objective=IFT())
    assert module.policy is policy
    assert module.tokenizer is tokenizer
    assert "model" not in module.hparams  # an nn.Module is not a hyper-parameter
    # Without a tokenizer a ready module gets the built-in character tokenizer.
    assert FineTuneModule(model=build_policy("tiny-gpt2", tokenizer)).tokenizer.pad_token == tokenizer.pad_token


# ------------------------------------------------------------------------------ training
def test_fit_logs_loss_and_lambda_for_ift(tmp_path):
    pl.seed_everything(0)
    module = FineTuneModule(model="tiny-gpt2", objective=IFT(lam=0.3, gamma=0.95))
    trainer = make_trainer(tmp_path, [AnswerAccuracy()])
    trainer.fit(module, tiny_data(module))
    assert trainer.global_step == 3
    metrics = trainer.callback_metrics
    for key in ("train/loss", "val/loss", "train/lambda"):
        assert key in metrics, sorted(metrics)
        assert torch.isfinite(metrics[key])
    assert metrics["train/lambda"].item() == pytest.approx(0.3)
    assert "val/accuracy" in metrics and 0.0 <= metrics["val/accuracy"].item() <= 1.0
    assert module.objective.state_dict()["step"] >= 2


def test_drop_in_module_in_a_plain_trainer(tmp_path):
    """The user's own model and Trainer: only the module wraps it."""
    tokenizer = build_char_tokenizer()
    pl.seed_everything(1)
    policy = build_policy("tiny-llama", tokenizer)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    module = FineTuneModule(model=policy, tokenizer=tokenizer, objective=IFT(),
                            optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    trainer = make_trainer(tmp_path, max_steps=2)
    trainer.fit(module, tiny_data(module))
    assert trainer.global_step == 2
    changed = [n for n, p in policy.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before)  # the very object passed in was trained, all of it


def _fit_losses(tmp_path, seed):
    pl.seed_everything(seed)
    objective = IFT(lam=0.3, lam_noise_std=0.5, prediction="sample")
    module = FineTuneModule(model="tiny-gpt2", objective=objective)
    recorder = LossRecorder()
    trainer = make_trainer(tmp_path, callbacks=[recorder], limit_val_batches=0)
    trainer.fit(module, tiny_data(module))
    return recorder.losses


def test_same_seed_same_losses(tmp_path):
    first = _fit_losses(tmp_path / "a", seed=0)
    second = _fit_losses(tmp_path / "b", seed=0)
    other = _fit_losses(tmp_path / "c", seed=1)
    assert len(first) == 3
    assert first == second
    assert first != other


def test_checkpoint_restores_weights_and_objective_step(tmp_path):
    pl.seed_everything(0)
    settings = dict(lam=0.4, min_lam=0.0, lam_schedule="linear", lam_warmup_steps=10)
    module = FineTuneModule(model="tiny-gpt2", objective=IFT(**settings))
    trainer = make_trainer(tmp_path, limit_val_batches=0)
    trainer.fit(module, tiny_data(module))
    step = module.objective.state_dict()["step"]
    assert step > 0
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=False)["objective_state"] == {"step": step}

    fresh = IFT(**settings)
    assert fresh.current_lambda() == 0.0
    # Plain load_from_checkpoint: torch.load's weights_only default must accept the objective.
    restored = FineTuneModule.load_from_checkpoint(path, objective=fresh)
    assert isinstance(FineTuneModule.load_from_checkpoint(path).objective, IFT)
    assert restored.objective is fresh
    assert fresh.state_dict()["step"] == step
    assert fresh.current_lambda() == pytest.approx(module.objective.current_lambda())
    assert fresh.current_lambda() > 0
    original = module.policy.state_dict()
    for name, value in restored.policy.state_dict().items():
        assert torch.equal(value, original[name]), name

    # Resuming a fit continues from the saved step.
    resumed = FineTuneModule(model="tiny-gpt2", objective=IFT(**settings))
    trainer = make_trainer(tmp_path, max_steps=5, limit_val_batches=0)
    trainer.fit(resumed, tiny_data(resumed), ckpt_path=str(path))
    assert trainer.global_step == 5
    assert resumed.objective.state_dict()["step"] == 4  # set at the start of the 5th step


def test_preference_objective_reports_a_validation_loss(tmp_path):
    """Preference batches carry no `labels`: DPO's own held-out loss must still be logged."""
    import json

    from ift.data import PreferenceDataModule
    from ift.objectives import DPO

    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": str(i + 2)} for i in range(8)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    pl.seed_everything(0)
    module = FineTuneModule(model="tiny-gpt2", objective=DPO(beta=0.1))
    data = PreferenceDataModule(train_data=str(path), val_data=str(path), batch_size=4, tokenizer=module.tokenizer)
    trainer = quiet_trainer()
    module.ensure_reference()
    metrics = trainer.validate(module, data, verbose=False)[0]
    # Before any training the policy equals its reference, so DPO's loss is exactly log 2.
    assert abs(metrics["val/loss"] - math.log(2)) < 1e-5
    assert "val/reward_margin" in metrics
