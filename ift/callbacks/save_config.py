"""Save the resolved LightningCLI config in the run's own folder and log it to W&B once."""

from __future__ import annotations

import os
from typing import Any, Dict

import yaml
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from ift.callbacks.paths import run_dir

WANDB_CONFIG_FILE = "lightning_config.yaml"


def flatten(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"model": {"lr": 1}}`` -> ``{"model.lr": 1}``: the names a W&B sweep uses."""
    flat: Dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


#: Where :class:`SaveRunConfig` keeps the run's ``model`` config in a checkpoint.
RUN_CONFIG_KEY = "ift_run_config"


class SaveRunConfig(SaveConfigCallback):
    """Like Lightning's ``SaveConfigCallback``, but the config goes to
    :func:`~ift.callbacks.paths.run_dir` (a folder of this run only, also with W&B or no
    logger), so runs sharing a folder never overwrite or refuse each other's config; a
    resumed run that finds its config there writes ``config_1.yaml`` beside it.

    With a ``WandbLogger`` the resolved config is also put in the W&B run config, flattened
    to the CLI names (``model.objective.init_args.lam``) that sweeps use, and written as
    ``lightning_config.yaml`` among the W&B run's files (uploaded with the run).

    Every checkpoint also carries the run's resolved ``model`` config (under
    :data:`RUN_CONFIG_KEY`), the optimizer and tokenizer included, so that
    ``ift fit --ckpt_path`` can tell which settings a resumed run changes.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: Dict[str, Any]) -> None:
        if getattr(self, "_model_config", None) is None:
            resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False)) or {}
            self._model_config = resolved.get("model") or {}
        checkpoint[RUN_CONFIG_KEY] = {"model": self._model_config}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            directory = run_dir(trainer)
            if trainer.is_global_zero:
                fs = get_filesystem(directory)
                fs.makedirs(directory, exist_ok=True)
                stem, suffix = os.path.splitext(self.config_filename)
                path, number = os.path.join(directory, self.config_filename), 0
                while fs.isfile(path) and not self.overwrite:
                    number += 1
                    path = os.path.join(directory, f"{stem}_{number}{suffix}")
                self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=self.multifile)
                self.config_path = path
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not wandb_loggers:
            return
        text = self.parser.dump(self.config, skip_none=False)
        resolved = yaml.safe_load(text) or {}
        for logger in wandb_loggers:
            run = logger.experiment
            run.config.update(flatten(resolved), allow_val_change=True)
            # The YAML itself travels with the run's files (W&B keeps its own config.yaml there).
            run_files = getattr(run, "dir", None)
            if run_files and os.path.isdir(run_files):
                with open(os.path.join(run_files, WANDB_CONFIG_FILE), "w", encoding="utf-8") as handle:
                    handle.write(text)
