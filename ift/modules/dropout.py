"""``FineTuneModule(disable_dropout=...)``: turn the policy's dropout off when it is built.

Objectives that compare two forward passes over the same tokens want the policy
deterministic: IFT's pass 1 predicts the tokens that pass 2 trains on, DPO and ORPO compare
the chosen and the rejected response (and DPO the frozen reference, which never uses
dropout), the RL objectives divide the probabilities of the update by those of the rollout.
Under dropout each pass draws its own mask, so the same batch gives another loss at every
call. The IFT authors' code turns the policy's dropout off, as TRL's DPO, ORPO and PPO
trainers do; plain SFT and reward modelling keep the model's dropout, as the Hugging Face
Trainer does. Each objective says which it wants (``Objective.disables_dropout``; a recipe:
any of its stages or parts), and ``disable_dropout`` true or false overrides it.

Turning it off sets every ``torch.nn.Dropout`` (and subclass) to ``p = 0``, every float
``*dropout*`` / ``*pdrop*`` field of the Hugging Face config (nested configs too) to 0, and
every float ``*dropout*`` attribute of a submodule to 0 (attention implementations that read
their dropout from such an attribute, e.g. Llama's ``attention_dropout``). LoRA's
``lora_dropout`` is left as the user set it: it is a separate choice made in ``lora``, and
the adapters are added after this runs (a ready peft model's ``lora_dropout`` layers are
skipped too).
"""

from __future__ import annotations

from typing import Any, List, Optional

import torch

#: Names of the modules (and ModuleDicts) of peft's LoRA dropout, which stays as configured.
LORA_DROPOUT = "lora_dropout"


def wants_disabled_dropout(setting: Optional[bool], objective: Any) -> bool:
    """``setting`` when given, else the objective's default (``disables_dropout``)."""
    if setting is not None:
        return bool(setting)
    return bool(getattr(objective, "disables_dropout", False))


def active_dropout(model: torch.nn.Module) -> List[str]:
    """Where ``model`` would drop activations in train mode: its dropout layers with ``p > 0``
    and its submodules' float dropout attributes above 0 (LoRA's left out). Config fields are
    not counted: a config may carry fields its model never reads (GPT-2's
    ``summary_first_dropout`` outside the double-heads model)."""
    found = [f"{name or 'model'} (p={module.p:g})" for name, module in model.named_modules()
             if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0 and LORA_DROPOUT not in name]
    found += [f"{type(owner).__name__}.{attribute} = {getattr(owner, attribute):g}"
              for owner, attribute in _float_field_owners(model, configs=False) if getattr(owner, attribute) > 0]
    return found


def disable_dropout(model: torch.nn.Module) -> List[str]:
    """Set every dropout of ``model`` (layers, module attributes, config fields) to 0, except
    LoRA's; returns the dropout that was active (:func:`active_dropout`; empty for a model
    without dropout)."""
    changed = active_dropout(model)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and LORA_DROPOUT not in name:
            module.p = 0.0
    for owner, attribute in _float_field_owners(model):
        setattr(owner, attribute, 0.0)
    return changed


def _float_field_owners(model: torch.nn.Module, configs: bool = True):
    """(object, attribute) of every float dropout field: submodules' attributes and (``configs``)
    the Hugging Face configs (nested ones included) of the model and its submodules."""
    seen = set()
    for name, module in model.named_modules():
        if LORA_DROPOUT in name:
            continue
        for attribute, value in vars(module).items():
            if _is_dropout_field(attribute, value):
                yield module, attribute
        config = getattr(module, "config", None)
        if configs and config is not None and id(config) not in seen:
            seen.add(id(config))
            yield from _config_fields(config, seen)


def _config_fields(config: Any, seen: set):
    for attribute, value in list(vars(config).items()):
        if _is_dropout_field(attribute, value):
            yield config, attribute
        elif hasattr(value, "to_dict") and hasattr(value, "model_type") and id(value) not in seen:
            seen.add(id(value))  # a nested config (text_config, vision_config...)
            yield from _config_fields(value, seen)


def _is_dropout_field(attribute: str, value: Any) -> bool:
    name = attribute.lower()
    return (isinstance(value, float) and not isinstance(value, bool)
            and ("dropout" in name or "pdrop" in name) and not name.startswith("_"))


def summarize_dropout(found: List[str]) -> str:
    """``found`` (from :func:`active_dropout`) in one line: how many dropout layers with which
    probabilities, and the fields by name."""
    layers = [entry for entry in found if entry.endswith(")") and " (p=" in entry]
    fields = list(dict.fromkeys(entry for entry in found if entry not in layers))  # one line per field name
    parts = []
    if layers:
        probabilities = sorted({entry.rsplit("(p=", 1)[1].rstrip(")") for entry in layers}, key=float)
        parts.append(f"{len(layers)} dropout layer{'s' if len(layers) > 1 else ''} (p={', '.join(probabilities)})")
    parts.extend(fields)
    return ", ".join(parts)
