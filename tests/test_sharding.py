"""FSDP support that can be checked without GPUs: the strategy's choice of FSDP units, its
clear refusal on CPU, building the model in ``configure_model`` (same training as building
it in ``__init__``), the reference created there under sharding, the collective-free
reference refresh, exporting from gathered weights, and the shipped config parsing."""

import types
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.strategies import FSDPStrategy

import ift.modules.finetune as finetune
from ift.callbacks.export import export_pretrained, gather_policy_state
from ift.tasks.arithmetic import ArithmeticDataModule
from ift.modules import FSDP, FineTuneModule
from ift.modules.sharding import decoder_layer_types
from ift.objectives import DPO, PPO, SFT
from ift.rewards import AnswerMatchReward

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")


@pytest.mark.parametrize("preset, layer", [("tiny-gpt2", "GPT2Block"), ("tiny-llama", "LlamaDecoderLayer")])
def test_decoder_layers_of_policy_and_reference_become_the_fsdp_units(preset, layer, monkeypatch):
    module = FineTuneModule(model=preset, objective=PPO(reward=AnswerMatchReward()))
    module.ensure_reference()
    assert {t.__name__ for t in decoder_layer_types(module)} == {layer}
    captured = {}
    monkeypatch.setattr(FSDPStrategy, "_setup_model", lambda self, model: captured.update(self.kwargs) or model)
    FSDP()._setup_model(module)
    policy = captured["auto_wrap_policy"]
    wrapped = [m for m in module.modules() if type(m) in policy._module_classes]
    n_layers = module.policy.config.num_hidden_layers
    assert len(wrapped) == 2 * n_layers  # the policy's layers and the reference's


def test_an_explicit_wrap_policy_is_kept(monkeypatch):
    captured = {}
    monkeypatch.setattr(FSDPStrategy, "_setup_model", lambda self, model: captured.update(self.kwargs) or model)
    FSDP(auto_wrap_policy={torch.nn.Linear})._setup_model(FineTuneModule())
    assert captured["auto_wrap_policy"]._module_classes == {torch.nn.Linear}


def test_fsdp_on_cpu_fails_with_the_fix(tmp_path):
    trainer = pl.Trainer(strategy=FSDP(), accelerator="cpu", devices=1, max_steps=1, logger=False,
                         enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="FSDP needs GPUs.*strategy ddp"):
        trainer.fit(FineTuneModule(), ArithmeticDataModule(num_train=32, num_val=8, batch_size=8))


def _fit_parameters(init_in_configure_model: bool, tmp_path) -> dict:
    pl.seed_everything(3)
    module = FineTuneModule(objective=SFT(), init_in_configure_model=init_in_configure_model)
    assert (module.policy is None) == init_in_configure_model
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, ArithmeticDataModule(num_train=64, num_val=8, batch_size=16))
    return {k: v.detach().clone() for k, v in module.policy.state_dict().items()}


def test_building_in_configure_model_trains_exactly_like_building_in_init(tmp_path):
    eager, deferred = _fit_parameters(False, tmp_path), _fit_parameters(True, tmp_path)
    pl.seed_everything(3)
    untrained = FineTuneModule(objective=SFT()).policy.state_dict()
    assert eager.keys() == deferred.keys()
    for key in eager:
        assert torch.equal(eager[key], deferred[key]), key
    assert any(not torch.equal(eager[k], untrained[k]) for k in eager)


def test_configure_model_builds_value_head_and_under_sharding_the_reference(monkeypatch):
    module = FineTuneModule(objective=PPO(reward=AnswerMatchReward()), init_in_configure_model=True)
    assert module.policy is None and len(module.extras) == 0
    module._trainer = types.SimpleNamespace(strategy=object())
    monkeypatch.setattr(finetune, "is_sharded", lambda strategy: True)
    module.configure_model()
    assert module.policy is not None and "value_head" in module.extras
    assert module.reference_policy is not None
    policy_id = id(module.policy)
    module.configure_model()  # idempotent: Lightning may call it again
    assert id(module.policy) == policy_id


def test_no_reference_is_made_early_without_sharding():
    module = FineTuneModule(objective=DPO(), init_in_configure_model=True)
    module._trainer = types.SimpleNamespace(strategy=object())
    module.configure_model()
    assert module.policy is not None and module.reference_policy is None


def test_reference_refresh_copies_tensor_by_tensor_and_checks_names():
    module = FineTuneModule(objective=DPO())
    reference = module.ensure_reference()
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(1.0)
    module.ensure_reference(refresh=True)
    for (name, p), (_, r) in zip(module.policy.named_parameters(), reference.named_parameters()):
        assert torch.equal(p, r), name
    reference.register_buffer("stray", torch.zeros(1))
    with pytest.raises(RuntimeError, match="differ in their tensors"):
        module.ensure_reference(refresh=True)


def test_export_writes_the_gathered_weights_when_given(tmp_path):
    from transformers import AutoModelForCausalLM

    module = FineTuneModule()
    assert gather_policy_state(types.SimpleNamespace(strategy=object())) is None  # not sharded: nothing to gather
    state = {k: v.clone() + 0.5 for k, v in module.policy.state_dict().items()}
    export_pretrained(module, str(tmp_path / "export"), state_dict=state)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    name = "transformer.h.0.attn.c_attn.weight"
    assert torch.allclose(loaded.state_dict()[name], state[name])
    assert not torch.allclose(loaded.state_dict()[name], module.policy.state_dict()[name])


def test_shipped_fsdp_config_parses_with_a_task_config(capsys):
    from ift.cli import main

    try:
        main(["fit", "--config", str(ROOT / "configs/chat/ift_ultrachat.yaml"),
              "--config", str(ROOT / "configs/strategy/fsdp.yaml"), "--print_config"])
    except SystemExit as stop:
        assert stop.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["strategy"]["class_path"] == "ift.modules.FSDP"
    assert printed["trainer"]["strategy"]["init_args"]["use_orig_params"] is True
    assert printed["model"]["init_in_configure_model"] is True
