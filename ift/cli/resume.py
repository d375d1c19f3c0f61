"""``ift fit --ckpt_path``: which file, whether it is whole, and which settings may change.

LightningCLI lays the hyper-parameters saved in a checkpoint over the user's config, without
a word: a run asked for another model or objective trained the checkpoint's, and
``--model.objective.init_args.lam 0.9`` went on with the saved 0.2. ``ift fit`` instead
keeps the user's config and compares it with the checkpoint's run config
(:data:`RUN_CONFIG_KEY`, written by :class:`~ift.callbacks.SaveRunConfig`; for older
checkpoints the module's saved hyper-parameters):

* **honoured**: objective hyper-parameters (``lam``, ``gamma``, ``beta``, ``kl_coef``, ...),
  optimizer arguments (``lr``, ``weight_decay``, ...: re-applied after the optimizer state is
  loaded, see :class:`~ift.callbacks.resume_settings.OptimizerSettingsOnResume`) and the
  module's other settings (``max_grad_norm``, ...). Each is printed with both values, and
  the resumed run uses the new one (no state loaded from the checkpoint overrides it);
* **refused**: what the weights are, a class whose state the checkpoint holds, the
  scheduler, a recipe's parts, a finished stage: the error lists every such key with the
  checkpoint's value, the config's and why, and how to go on. ``objective: null`` is
  compared as SFT, ``optimizer: null`` as AdamW. The weights must also fit the module.

Which is which: :mod:`ift.cli.resume_differences`.

``--ckpt_path last`` means the newest checkpoint of an earlier run under this run's logger
root (Lightning looks in the new run's own, empty, version folder and starts from step 0):
see :func:`find_last_checkpoint`. A file that ``torch.load`` cannot read (cut short by a
crash or a full disk) stops with its name and that it is not a complete checkpoint.
"""

from __future__ import annotations

import glob
import os
import pickle
from typing import Any, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

# Which settings may differ from the checkpoint's run: ift.cli.resume_differences.
from ift.cli.resume_differences import Refusal

#: What a Lightning training checkpoint holds besides the weights.
TRAINING_KEYS = ("state_dict", "loops", "optimizer_states")


class ResumeError(SystemExit):
    """``ift fit --ckpt_path`` cannot resume as asked; the message says why and what to do."""

    def __init__(self, message: str):
        super().__init__(f"ift: error: {message}")


# ---------------------------------------------------------------------------- the file
def read_checkpoint(path: str) -> Optional[Dict[str, Any]]:
    """The checkpoint at ``path`` (tensors memory-mapped, not read), or a :class:`ResumeError`
    naming the file when it is missing, cut short or not a training checkpoint. None when it
    holds objects that only a full unpickling could read (Lightning decides then)."""
    if not os.path.isfile(path):
        raise ResumeError(f"--ckpt_path {path}: no such file")
    size = os.path.getsize(path)
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip file
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            return None  # whole, but with objects outside torch's allow-list
        raise _incomplete(path, size, error) from None
    except Exception as error:  # truncated zip, bad header, EOF
        raise _incomplete(path, size, error) from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in TRAINING_KEYS):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ResumeError(
            f"--ckpt_path {path} is not a complete training checkpoint: it lacks "
            f"{', '.join(k for k in TRAINING_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint)} "
            f"(found: {found}). A weights-only file cannot resume a fit: load its weights with --model.model "
            "pointing at an export, or start without --ckpt_path"
        )
    return checkpoint


def _incomplete(path: str, size: int, error: Exception) -> ResumeError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ResumeError(
        f"--ckpt_path {path} is not a complete checkpoint ({size} bytes; torch.load: {reason}). It was probably "
        "cut short by a crash, a kill or a full disk while it was written; resume from an earlier checkpoint, "
        "or start without --ckpt_path"
    )


# ---------------------------------------------------------------------------- "last"
def checkpoint_folders(trainer: pl.Trainer) -> List[str]:
    """Where earlier runs of this Trainer's set-up wrote checkpoints, this run's own folder excluded:
    an explicit ``ModelCheckpoint`` dirpath (shared by runs), else every other version folder's
    ``checkpoints`` under the first logger's root (or ``default_root_dir/checkpoints``
    without a logger), and ``default_root_dir`` (the interrupt checkpoint without ModelCheckpoint)."""
    folders: List[str] = []
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        folders.append(str(callback.dirpath))
    elif trainer.loggers and getattr(trainer.loggers[0], "name", None) is not None:
        logger = trainer.loggers[0]
        root = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name))
        current = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        if os.path.isdir(root):
            for entry in sorted(os.listdir(root)):
                if entry != current and os.path.isdir(os.path.join(root, entry)):
                    folders.append(os.path.join(root, entry, "checkpoints"))
        if not folders:
            folders.append(os.path.join(root, "<earlier version>", "checkpoints"))
    else:
        folders.append(os.path.join(trainer.default_root_dir, "checkpoints"))
    for other in trainer.callbacks:
        dirpath = getattr(other, "dirpath", None)
        if type(other).__name__ == "InterruptCheckpoint" and dirpath:
            folders.append(str(dirpath))
    folders.append(str(trainer.default_root_dir))
    return list(dict.fromkeys(folders))


def find_last_checkpoint(trainer: pl.Trainer) -> Tuple[Optional[str], List[str]]:
    """(the newest ``*.ckpt`` in :func:`checkpoint_folders`, the folders looked in)."""
    folders = checkpoint_folders(trainer)
    found = [path for folder in folders for path in glob.glob(os.path.join(glob.escape(folder), "*.ckpt"))
             if os.path.isfile(path)]
    return (max(found, key=os.path.getmtime) if found else None), folders


def resolve_ckpt_path(trainer: pl.Trainer, ckpt_path: str) -> str:
    """``ckpt_path`` itself, or for ``last`` the file :func:`find_last_checkpoint` finds (a
    :class:`ResumeError` saying where it looked when there is none)."""
    if ckpt_path != "last":
        return ckpt_path
    path, folders = find_last_checkpoint(trainer)
    if path is None:
        raise ResumeError(
            "--ckpt_path last: no checkpoint of an earlier run; looked in " + ", ".join(folders)
            + ". Give the file (--ckpt_path PATH), or start without --ckpt_path"
        )
    return path


# ---------------------------------------------------------------------------- the messages
def run_config_file(ckpt_path: str) -> Optional[str]:
    """The ``config.yaml`` that :class:`~ift.callbacks.SaveRunConfig` wrote for the checkpoint's
    run (``version_N/checkpoints/x.ckpt`` -> ``version_N/config.yaml``), if it is there."""
    folder = os.path.dirname(os.path.abspath(ckpt_path))
    for candidate in (os.path.join(os.path.dirname(folder), "config.yaml"), os.path.join(folder, "config.yaml")):
        if os.path.isfile(candidate):
            return candidate
    return None


def refusal_message(ckpt_path: str, refused: List[Refusal]) -> str:
    """The error for settings that cannot change on resume: each with both values and why."""
    rows = "\n".join(f"  {key}: checkpoint {old!r}, config {new!r} ({why})" for key, old, new, why in refused)
    config = run_config_file(ckpt_path)
    same = f" (its config: --config {config})" if config else ""
    return (
        f"--ckpt_path {ckpt_path} was trained with other settings than this config, and these cannot change "
        f"on resume:\n{rows}\n"
        f"To go on with the checkpoint's run, resume with its settings{same}. To train with this config instead, "
        "start a new run without --ckpt_path; to start it from the checkpoint's weights only, export them "
        "(ift.callbacks.export_pretrained(FineTuneModule.load_from_checkpoint(PATH), FOLDER), or the "
        "ExportPretrained callback's export/ folder) and point --model.model at that folder."
    )


def weights_message(ckpt_path: str, lines: List[str]) -> str:
    """The error for :func:`weight_differences`."""
    config = run_config_file(ckpt_path)
    same = f" (its config: --config {config})" if config else ""
    return (
        f"--ckpt_path {ckpt_path} holds other weights than the module this config builds:\n" + "\n".join(lines)
        + f"\nThe config asks for another model, objective or trainable part than the checkpoint's run had (a model "
        f"folder whose contents changed, say). To go on with that run, resume with its settings{same}; to train "
        "with this config, start without --ckpt_path."
    )
