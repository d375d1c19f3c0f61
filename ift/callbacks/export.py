"""Export the policy and tokenizer as a Hugging Face folder (``save_pretrained``); a reward
model as a sequence-classification folder (:mod:`ift.callbacks.reward_export`)."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from ift.callbacks.paths import run_dir


def export_pretrained(
    module: pl.LightningModule, path: str, merge_lora: bool = True, state_dict: Optional[Dict[str, Any]] = None,
    reward_model: Optional[bool] = None,
) -> str:
    """Write ``module.policy`` and ``module.tokenizer`` to ``path`` with ``save_pretrained``.

    A module holding a reward head (trained with :class:`~ift.objectives.RewardModeling`) is
    written as an ``AutoModelForSequenceClassification`` reward model instead
    (:func:`~ift.callbacks.reward_export.export_reward_model`); ``reward_model`` True insists
    on that, False writes the causal LM whatever the module holds, None (default) decides by
    the head.

    A LoRA policy is written merged (a plain model for ``AutoModelForCausalLM``) when
    ``merge_lora``, else as adapters only (``adapter_config.json`` +
    ``adapter_model.safetensors``, for ``peft.AutoPeftModelForCausalLM`` or
    ``PeftModel.from_pretrained(base, path)``). The training model is not modified.
    ``state_dict``: the policy's full weights when the module itself holds only shards
    (FSDP; see :func:`gather_policy_state`).
    """
    from ift.callbacks.reward_export import export_reward_model, reward_head_of
    from ift.core.lora import is_peft_model, save_merged

    if reward_model or (reward_model is None and reward_head_of(module) is not None):
        return export_reward_model(module, path, state_dict=state_dict)
    policy = module.policy
    if not hasattr(policy, "save_pretrained"):
        raise TypeError(f"cannot export a {type(policy).__name__}: the policy has no save_pretrained (not a Hugging Face model)")
    os.makedirs(path, exist_ok=True)
    if is_peft_model(policy) and state_dict is not None:
        raise NotImplementedError("exporting a LoRA policy trained under a sharding strategy is not supported; "
                                  "train LoRA with DDP, or export from a checkpoint after training")
    if is_peft_model(policy) and merge_lora:
        save_merged(policy, path)
    else:
        # A copy: save_pretrained renames and drops keys of the dict it is given.
        policy.save_pretrained(path, state_dict=dict(state_dict) if state_dict is not None else None)
    tokenizer = getattr(module, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def gather_policy_state(trainer: pl.Trainer) -> Optional[Dict[str, Any]]:
    """Under a sharding strategy (FSDP), the policy's full weights on CPU, gathered on rank 0
    (every rank must call this: it is a collective). None when the module holds full weights.
    """
    from ift.core.constants import REFERENCE_PREFIX
    from ift.core.distributed import is_sharded

    if not is_sharded(trainer.strategy):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(trainer.strategy.model, options=options)
    prefix = "policy."
    assert not REFERENCE_PREFIX.startswith(prefix)
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


class ExportPretrained(Callback):
    """Save the policy and tokenizer with ``save_pretrained`` at the end of fit and every time
    a recipe switches stage (e.g. the SFT warm-up model of ReFT before PPO starts).

    Folders: ``<dirpath>/final`` and ``<dirpath>/switch-<k>-before-<name>`` (``k`` counts
    the switches, ``name`` is the stage being entered, so ``switch-1-before-stage1-ppo``
    holds the SFT warm-up policy of ReFT). Reload with
    ``AutoModelForCausalLM.from_pretrained(folder)`` and ``AutoTokenizer.from_pretrained(folder)``.
    A module trained with :class:`~ift.objectives.RewardModeling` is exported as a reward model
    (``AutoModelForSequenceClassification``, one label), for :class:`~ift.rewards.RewardModelScore`.

    Args:
        dirpath: folder of the exports; None: ``export/`` in the run's own folder
            (``lightning_logs/version_N/export``, or ``<save_dir>/<project>/<run id>/export`` with W&B).
        merge_lora: with LoRA, export the merged model (True) or the adapters only (False).
        at_fit_end: export when fit ends.
        at_stage_switch: export at every recipe stage switch.
        reward_model: export an ``AutoModelForSequenceClassification`` reward model (True), the
            causal LM (False), or decide by whether the module holds a reward head (None).
    """

    def __init__(
        self,
        dirpath: Optional[str] = None,
        merge_lora: bool = True,
        at_fit_end: bool = True,
        at_stage_switch: bool = True,
        reward_model: Optional[bool] = None,
    ):
        self.dirpath = dirpath
        self.reward_model = reward_model
        self.merge_lora = merge_lora
        self.at_fit_end = at_fit_end
        self.at_stage_switch = at_stage_switch
        self.exports: List[str] = []
        self._switches = 0

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_fit_end and not trainer.sanity_checking:
            self.export(trainer, pl_module, "final")

    def on_stage_switch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage_name: str) -> None:
        """Called by :meth:`~ift.modules.FineTuneModule.notify_stage_switch` (recipes)."""
        self._switches += 1
        if self.at_stage_switch:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(stage_name)) or "stage"
            self.export(trainer, pl_module, f"switch-{self._switches}-before-{safe}")

    def export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str) -> str:
        """Export now to ``<dirpath>/<name>``; returns the folder (every rank calls it)."""
        directory = self.dirpath or os.path.join(run_dir(trainer), "export")
        path = os.path.join(directory, name)
        state = gather_policy_state(trainer)  # every rank takes part under FSDP
        if trainer.is_global_zero:
            with torch.no_grad():
                export_pretrained(pl_module, path, merge_lora=self.merge_lora, state_dict=state,
                                  reward_model=self.reward_model)
        trainer.strategy.barrier("ExportPretrained")
        self.exports.append(path)
        return path

    def state_dict(self):
        return {"switches": self._switches}

    def load_state_dict(self, state_dict) -> None:
        self._switches = int(state_dict.get("switches", 0))
