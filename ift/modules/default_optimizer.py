"""The module's optimizer when the config names none: ``torch.optim.AdamW`` with torch's own
defaults.

Why ``FineTuneModule(optimizer=None)`` and not ``optimizer=torch.optim.AdamW``: jsonargparse
(LightningCLI) fills a default class's ``init_args`` with that class's defaults and, when a
config names another class, keeps every one of them the new class also accepts. With AdamW
as the default, ``{class_path: torch.optim.RMSprop, init_args: {lr: 0.01}}`` became RMSprop
with AdamW's ``weight_decay: 0.01`` (and, without ``lr``, AdamW's ``lr: 0.001``): a setting
nobody wrote. With no default class there is nothing to carry over, so a named optimizer gets
exactly the ``init_args`` the config gives plus that class's own defaults.

The price: ``--model.optimizer.lr 0.01`` alone does not say which optimizer it belongs to;
name the class (``--model.optimizer torch.optim.AdamW --model.optimizer.lr 0.01``).

:func:`with_default_optimizer` spells the default out for comparisons of run configs
(``ift fit --ckpt_path``), so that ``optimizer: null`` and AdamW with its defaults compare
as the same optimizer, and another class as another one.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterable, Optional

import torch

#: The optimizer of ``optimizer: null`` (the module's default).
DEFAULT_OPTIMIZER = torch.optim.AdamW


def build_optimizer(factory: Optional[Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]],
                    parameters: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """``factory(parameters)``, or :data:`DEFAULT_OPTIMIZER` with its own defaults when None."""
    return (factory if factory is not None else DEFAULT_OPTIMIZER)(parameters)


def class_defaults(cls: type) -> Dict[str, Any]:
    """The keyword defaults of ``cls.__init__`` (``params`` and other required arguments left
    out), as a dumped config records them: a tuple (AdamW's ``betas``) as a list."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: list(p.default) if isinstance(p.default, tuple) else p.default for p in parameters
            if p.name != "self" and p.default is not inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def default_optimizer_config() -> Dict[str, Any]:
    """``optimizer: null`` as the config of the optimizer it builds (class path and init_args)."""
    cls = DEFAULT_OPTIMIZER
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": class_defaults(cls)}


def with_default_optimizer(model_config: Dict[str, Any]) -> Dict[str, Any]:
    """``model_config`` (a run's ``model`` section) with ``optimizer: null`` spelled out as
    :func:`default_optimizer_config`. A config without an ``optimizer`` key (an old checkpoint
    that did not record it) is returned as it is."""
    if not isinstance(model_config, dict) or "optimizer" not in model_config or model_config["optimizer"] is not None:
        return model_config
    return {**model_config, "optimizer": default_optimizer_config()}
