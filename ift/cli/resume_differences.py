"""Which settings of ``ift fit --ckpt_path`` may differ from the checkpoint's run, and which may not.

The checkpoint's ``model`` config (:func:`checkpoint_model_config`) and this run's are walked
side by side (:func:`config_differences`); each difference is either

* **refused**, with the reason shown beside it (:func:`refusal_reason`): what the weights
  are (:data:`FIXED_KEYS`, an objective's ``fixed_on_resume`` arguments such as PPO's
  ``critic``), a class whose state the checkpoint holds (the objective's, also a recipe
  part's; the optimizer's), the scheduler (its state is restored), the parts of a recipe
  (their states are in the checkpoint), an optimizer argument that shapes the optimizer's
  state (:data:`OPTIMIZER_STATE_ARGUMENTS`), or a stage of a ``Sequential`` recipe that had
  finished before the checkpoint (:func:`resume_differences`);
* or **honoured**: every other objective, module and optimizer setting. The objective and
  the module are built from this run's config, and no state loaded from the checkpoint
  overrides them (PPO's KL controller: :func:`~ift.objectives.kl_control.resume_kl_controller`;
  a ``Sequential`` stage's ``lr``), and the optimizer's arguments are put back after its
  state is loaded (:class:`~ift.callbacks.resume_settings.OptimizerSettingsOnResume`).
  ``tests/test_resume_honoured.py`` changes every one of them on resume and reads the
  value the resumed run used.

``null`` for a default class is compared as that class: ``objective: null`` is SFT and
``optimizer: null`` AdamW, each with its defaults. A key on one side only is no difference
(the checkpoint did not record it, or it belongs to a class change reported by its
``class_path``). Last, :func:`weight_differences` compares the checkpoint's weights with the
module's, by name and shape, for a change that no key names.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from ift.callbacks.save_config import RUN_CONFIG_KEY
from ift.core.constants import REFERENCE_PREFIX
from ift.modules.default_optimizer import class_defaults, with_default_optimizer

#: Module arguments that fix what the weights are: they cannot change on resume.
FIXED_KEYS = ("model", "tokenizer", "torch_dtype", "lora", "output_tokens", "output_eos")

#: Optimizer arguments that decide which state the optimizer keeps, so that the checkpoint's
#: state does not fit another value (AdamW keeps ``max_exp_avg_sq`` only with ``amsgrad``).
OPTIMIZER_STATE_ARGUMENTS = ("amsgrad",)

Difference = Tuple[str, Any, Any]  # (model.<key>, checkpoint's value, config's value)
Refusal = Tuple[str, Any, Any, str]  # a Difference and why it cannot change

# An objective's own class (also a recipe's stage or Mix part) and the optimizer's class.
_FIXED_CLASS = re.compile(r"(^|\.)(objective|objectives\.\d+|optimizer)\.class_path$")
# A recipe's list of parts: another number of stages or objectives is another recipe.
_RECIPE_PARTS = re.compile(r"(^|\.)init_args\.(stages|objectives)$")
_STAGE = re.compile(r"^objective\.init_args\.stages\.(\d+)(\.|$)")


def flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a.b.0": 1, "a.b.1": 2}``; empty dicts and lists stay leaves."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, (list, tuple)) and value:
        items = enumerate(value)
    else:
        return {prefix.rstrip("."): value}
    flat: Dict[str, Any] = {}
    for key, inner in items:
        flat.update(flatten(inner, f"{prefix}{key}."))
    return flat


def checkpoint_model_config(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The ``model`` config of the run that wrote ``checkpoint``: the recorded one, else the
    module's hyper-parameters (an objective object there is known by its class only)."""
    recorded = (checkpoint.get(RUN_CONFIG_KEY) or {}).get("model")
    if isinstance(recorded, dict):
        return recorded
    hparams = {key: value for key, value in dict(checkpoint.get("hyper_parameters") or {}).items()
               if not key.startswith("_")}
    objective = hparams.get("objective")
    if objective is not None and not isinstance(objective, dict):
        hparams["objective"] = {"class_path": f"{type(objective).__module__}.{type(objective).__qualname__}"}
    return hparams


def resolve_class(class_path: Any) -> Any:
    """The class named by the dotted ``class_path``; the text itself when it cannot be imported."""
    if not isinstance(class_path, str) or "." not in class_path:
        return class_path
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return class_path


def with_default_objective(model_config: Dict[str, Any]) -> Dict[str, Any]:
    """``model_config`` with ``objective: null`` spelled out as the objective the module then
    trains with (:func:`ift.objectives.default_objective`: SFT, with its defaults), so that it
    compares equal to that class written out and unequal to any other. A config without an
    ``objective`` key is returned as it is."""
    if not isinstance(model_config, dict) or "objective" not in model_config or model_config["objective"] is not None:
        return model_config
    from ift.objectives import default_objective

    cls = type(default_objective())
    return {**model_config, "objective": {"class_path": f"{cls.__module__}.{cls.__qualname__}",
                                          "init_args": class_defaults(cls)}}


def spelled_out(model_config: Dict[str, Any]) -> Dict[str, Any]:
    """A run's ``model`` config with every ``null`` that stands for a default class written as
    that class (``objective: null`` is SFT, ``optimizer: null`` AdamW)."""
    return with_default_objective(with_default_optimizer(model_config))


# ---------------------------------------------------------------------------- comparing
def _same(saved: Any, current: Any, key: str) -> bool:
    if key.endswith("class_path"):
        if saved is None or current is None:
            return saved == current
        return resolve_class(saved) is resolve_class(current)
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)):  # a tuple default, a YAML list
        return len(saved) == len(current) and all(_same(a, b, key) for a, b in zip(saved, current))
    if isinstance(saved, (int, float)) and isinstance(current, (int, float)) and not isinstance(saved, bool):
        return float(saved) == float(current)
    return saved == current


def _nested(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple))


def _walk(saved: Any, current: Any, key: str) -> Iterator[Difference]:
    """The differences between two config values at ``key``: dicts by their shared keys, lists
    of the same length holding dicts or lists item by item; anything else (a list of numbers,
    None against a dict, lists of other lengths) as one value."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for name in [name for name in current if name in saved]:
            yield from _walk(saved[name], current[name], f"{key}.{name}" if key else str(name))
    elif (isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)) and len(saved) == len(current)
          and any(_nested(item) for item in [*saved, *current])):
        for index, (old, new) in enumerate(zip(saved, current)):
            yield from _walk(old, new, f"{key}.{index}")
    elif key and not _same(saved, current, key):
        yield key, saved, current


def _fixed_objective_arguments(config: Dict[str, Any]) -> Dict[str, str]:
    """``{dotted key: class name}`` of the objective arguments that say what an objective's own
    trainable parts are (each objective class's ``fixed_on_resume``, also inside a recipe)."""
    keys: Dict[str, str] = {}
    for key, value in flatten(config).items():
        if not key.endswith("class_path") or not _FIXED_CLASS.search(key) or key.startswith("optimizer"):
            continue
        cls = resolve_class(value)
        prefix = key[: -len("class_path")] + "init_args."
        for name in getattr(cls, "fixed_on_resume", ()):
            keys[prefix + name] = getattr(cls, "__name__", str(value))
    return keys


def refusal_reason(key: str, fixed_arguments: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Why the setting at dotted ``key`` (under ``model``) cannot change on resume; None: it can."""
    first = key.split(".", 1)[0]
    if first in FIXED_KEYS:
        return "it says what the weights are"
    if first == "lr_scheduler":
        return "the scheduler's state is restored from the checkpoint"
    if _FIXED_CLASS.search(key):
        return ("the optimizer's state is the checkpoint's" if key.startswith("optimizer.")
                else "the objective's state and trainable parts are the checkpoint's")
    for prefix, owner in (fixed_arguments or {}).items():
        if key == prefix or key.startswith(prefix + "."):
            return f"it says what {owner}'s own trainable weights are"
    if _RECIPE_PARTS.search(key):
        return "the recipe's parts: the checkpoint holds each one's state"
    if key.startswith("optimizer.init_args.") and key.split(".")[2] in OPTIMIZER_STATE_ARGUMENTS:
        return "it decides which state the optimizer keeps, and the checkpoint's state was kept without it"
    return None


def config_differences(saved: Dict[str, Any], current: Dict[str, Any]) -> Tuple[List[Refusal], List[Difference]]:
    """(refused, honoured) differences between the checkpoint's ``model`` config and this
    run's, keyed ``model.<dotted key>``; a refusal carries its reason (see the module's docstring)."""
    old, new = spelled_out(saved), spelled_out(current)
    fixed_arguments = {**_fixed_objective_arguments(old), **_fixed_objective_arguments(new)}
    refused: List[Refusal] = []
    honoured: List[Difference] = []
    for key, before, after in _walk(old, new, ""):
        reason = refusal_reason(key, fixed_arguments)
        if reason:
            refused.append((f"model.{key}", before, after, reason))
        else:
            honoured.append((f"model.{key}", before, after))
    return refused, honoured


def finished_stage(key: str, objective_state: Optional[Dict[str, Any]]) -> Optional[int]:
    """The stage index when ``key`` (``model.objective.init_args.stages.<i>...``) is about a
    stage of the top-level ``Sequential`` recipe that had finished before the checkpoint."""
    match = _STAGE.match(key[len("model."):]) if key.startswith("model.") else None
    current = (objective_state or {}).get("stage_index")
    if match is None or not isinstance(current, int):
        return None
    index = int(match.group(1))
    return index if index < current else None


def resume_differences(checkpoint: Dict[str, Any], current: Dict[str, Any]) -> Tuple[List[Refusal], List[Difference]]:
    """(refused, honoured) differences of resuming ``checkpoint`` with the ``model`` config
    ``current``: :func:`config_differences`, with a change to a ``Sequential`` stage that had
    finished before the checkpoint refused (its settings would act on nothing)."""
    refused, honoured = config_differences(checkpoint_model_config(checkpoint), current)
    state = checkpoint.get("objective_state")
    kept: List[Difference] = []
    for key, before, after in honoured:
        stage = finished_stage(key, state)
        if stage is None:
            kept.append((key, before, after))
        else:
            refused.append((key, before, after, f"stage {stage} had finished before the checkpoint"))
    return refused, kept


def weight_differences(saved: Dict[str, Any], module: torch.nn.Module, shown: int = 5) -> List[str]:
    """How the checkpoint's weights (``saved``: its ``state_dict``) differ from ``module``'s,
    one line each (a weight on one side only, or of another shape; ``shown`` of each kind and
    how many more); empty when they fit. The frozen reference is left out (the module builds
    it when a checkpoint has one). Nothing to compare while the module defers building its
    policy (``init_in_configure_model``)."""
    if getattr(module, "policy", True) is None:
        return []
    have = {key: tuple(value.shape) for key, value in module.state_dict().items()
            if not key.startswith(REFERENCE_PREFIX)}
    found = {key: tuple(value.shape) for key, value in saved.items()
             if isinstance(value, torch.Tensor) and not key.startswith(REFERENCE_PREFIX)}
    kinds = (
        ([f"  {key}: in this config's module, not in the checkpoint" for key in sorted(set(have) - set(found))],
         "in this config's module only"),
        ([f"  {key}: in the checkpoint, not in this config's module" for key in sorted(set(found) - set(have))],
         "in the checkpoint only"),
        ([f"  {key}: checkpoint shape {list(found[key])}, this config's {list(have[key])}"
          for key in sorted(set(have) & set(found)) if have[key] != found[key]], "of another shape"),
    )
    lines: List[str] = []
    for rows, kind in kinds:
        lines += rows[:shown] + ([f"  ... and {len(rows) - shown} more {kind}"] if len(rows) > shown else [])
    return lines


def optimizer_keys(honoured: List[Difference]) -> List[str]:
    """The optimizer arguments among ``honoured`` (``model.optimizer.init_args.lr`` -> ``lr``)."""
    prefix = "model.optimizer.init_args."
    return list(dict.fromkeys(key[len(prefix):].split(".", 1)[0] for key, _, _ in honoured if key.startswith(prefix)))
