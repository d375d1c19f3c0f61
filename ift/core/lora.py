"""LoRA adapters on the policy (the ``[peft]`` extra).

``FineTuneModule(lora={"r": 8, "alpha": 16, "target_modules": [...], "dropout": 0.0})``
wraps the policy with :mod:`peft`. Only the adapters train; the frozen base weights are
shared with the reference model, which is the same network with its adapters disabled
(:meth:`~ift.modules.FineTuneModule.reference_model`), so PPO and DPO keep no second copy.
"""

from __future__ import annotations

import copy
import sys
from typing import Any, Dict, List, Mapping

import torch

# Our short names -> peft.LoraConfig names; any other LoraConfig field passes through.
_ALIASES = {"alpha": "lora_alpha", "dropout": "lora_dropout"}


def _require_peft():
    try:
        import peft
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("LoRA needs peft: pip install 'ift[peft]'") from error
    return peft


def lora_config(options: Mapping[str, Any]):
    """A ``peft.LoraConfig`` for a causal LM from a plain dict (``r``, ``alpha``,
    ``dropout``, ``target_modules``, or any other ``LoraConfig`` field)."""
    peft = _require_peft()
    fields: Dict[str, Any] = {"task_type": "CAUSAL_LM"}
    for key, value in dict(options).items():
        fields[_ALIASES.get(key, key)] = value
    known = set(peft.LoraConfig.__dataclass_fields__)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"lora: unknown option(s) {unknown}; use r, alpha, dropout, target_modules or a peft.LoraConfig field")
    return peft.LoraConfig(**fields)


def wrap_with_lora(policy: torch.nn.Module, options: Mapping[str, Any]) -> torch.nn.Module:
    """The policy wrapped as a ``peft.PeftModel`` with fresh LoRA adapters (base frozen)."""
    peft = _require_peft()
    if is_peft_model(policy):
        raise ValueError("the policy already carries peft adapters; pass lora=None")
    options = dict(options)
    if "fan_in_fan_out" not in options and _uses_conv1d(policy):
        options["fan_in_fan_out"] = True  # GPT-2 style Conv1D layers store weights transposed
    config = lora_config(options)
    checkpointing = _is_checkpointing(policy)
    try:
        wrapped = peft.get_peft_model(policy, config)
    except ValueError as error:  # peft's NoMatchingPeftModuleError is a ValueError
        if "not found in the base model" not in str(error):
            raise
        raise ValueError(f"model.lora target_modules {options.get('target_modules')!r}: no such layer in "
                         f"{type(policy).__name__}; layers LoRA can adapt here: {', '.join(adaptable_layer_names(policy))} "
                         f"(set model.lora.target_modules to some of them)") from error
    if checkpointing:
        # Checkpointed blocks need an input that requires grad when the embeddings are frozen.
        wrapped.enable_input_require_grads()
    return wrapped


def adaptable_layer_names(policy: torch.nn.Module) -> List[str]:
    """The last name part of each linear (or GPT-2 Conv1D) layer, once each: what
    ``target_modules`` may name."""
    names = {name.rsplit(".", 1)[-1] for name, module in policy.named_modules()
             if name and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D")}
    return sorted(names)


def _uses_conv1d(policy: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(module, Conv1D) for module in policy.modules())


def _is_checkpointing(policy: torch.nn.Module) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(policy), name):
            return bool(getattr(policy, name))
    return False


def is_peft_model(policy: torch.nn.Module) -> bool:
    """Whether ``policy`` is a peft ``PeftModel``. A PeftModel exists only once peft has been
    imported, so peft (slow to import) is not imported to answer no."""
    peft = sys.modules.get("peft")
    model_class = getattr(peft, "PeftModel", None) if peft is not None else None
    return model_class is not None and isinstance(policy, model_class)


def _is_vanilla_lora(base: torch.nn.Module) -> bool:
    """True when every adapter is plain LoRA (no DoRA-like variant, LoRA bias or modules_to_save)."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    for module in base.modules():
        if isinstance(module, ModulesToSaveWrapper):
            return False
        if isinstance(module, LoraLayer):
            if getattr(module, "lora_variant", None) or any(getattr(module, "lora_bias", {}).values()):
                return False
    return True


@torch.no_grad()
def merged_state_dict(policy: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Weights of the base model with the active adapters added, under the base model's
    own parameter names, without touching the training model.

    Only the adapted weights are copied (``W + scale * B @ A``); for adapter kinds other
    than plain LoRA a temporary copy of the model is merged with peft instead.
    """
    from peft.tuners.lora import LoraLayer

    base = policy.get_base_model()
    if not _is_vanilla_lora(base):
        merged = copy.deepcopy(policy).merge_and_unload()
        return merged.state_dict()
    state: Dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if any(part.startswith("lora_") for part in key.split(".")):
            continue
        state[key.replace(".base_layer.", ".")] = value
    for name, module in base.named_modules():
        if not isinstance(module, LoraLayer) or module.merged or module.disable_adapters:
            continue
        key = f"{name}.weight"
        for adapter in module.active_adapters:
            if adapter in module.lora_A or adapter in getattr(module, "lora_embedding_A", {}):
                state[key] = state[key] + module.get_delta_weight(adapter).to(state[key].dtype)
    return state


def save_merged(policy: torch.nn.Module, path: str) -> None:
    """``save_pretrained`` of the base model with the adapters merged in (a plain HF model)."""
    base = policy.get_base_model()
    base.save_pretrained(path, state_dict=merged_state_dict(policy))
