"""``ift fit`` checks that every folder the run will write is writable, before the first step.

Without it an unwritable checkpoint folder fails at the first save, after the training it
was meant to keep. :func:`check_output_folders` looks at ``trainer.default_root_dir``, each
logger's folder, each ``ModelCheckpoint``'s folder (its ``dirpath``, or the one Lightning
will choose under the logger), the ``ExportPretrained`` and ``InterruptCheckpoint``
folders, and stops with the folder, the config key that sets it and the fix.

A folder that does not exist yet is judged by its nearest existing parent: that parent
must be a folder (not a file) in which this process can create a file. The probe is an
anonymous temporary file, so nothing is left behind and no folder is created early.
Remote paths (``s3://``, ...) are not checked.
"""

from __future__ import annotations

import os
import tempfile
from typing import List, Optional, Tuple

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint



class OutputFolderError(SystemExit):
    """An output folder of ``ift fit`` cannot be written; the message names it, its key and the fix."""

    def __init__(self, message: str):
        super().__init__(f"ift: error: {message}")


def _callback_key(callback: object) -> str:
    return f"trainer.callbacks ({type(callback).__name__}) init_args.dirpath"


def _logger_key(index: int, count: int) -> str:
    where = "trainer.logger" if count == 1 else f"trainer.logger[{index}]"
    return f"{where} init_args.save_dir (or trainer.default_root_dir)"


def _checkpoint_dir(trainer: pl.Trainer, callback: ModelCheckpoint) -> Optional[str]:
    """The folder ``callback`` will write to: its dirpath, else Lightning's own choice."""
    if callback.dirpath:
        return str(callback.dirpath)
    resolve = getattr(callback, "_ModelCheckpoint__resolve_ckpt_dir", None)  # Lightning's rule, not a copy of it
    return str(resolve(trainer)) if callable(resolve) else None


def output_folders(trainer: pl.Trainer) -> List[Tuple[str, str]]:
    """``(folder, config key)`` for every folder the fit will write to."""
    folders: List[Tuple[str, str]] = [(str(trainer.default_root_dir), "trainer.default_root_dir")]
    for index, logger in enumerate(trainer.loggers):
        folder = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if folder:
            folders.append((str(folder), _logger_key(index, len(trainer.loggers))))
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            folder = _checkpoint_dir(trainer, callback)
            key = _callback_key(callback) if callback.dirpath else (
                "trainer.default_root_dir / the logger's save_dir (ModelCheckpoint writes under them)")
        else:
            folder = getattr(callback, "dirpath", None) if type(callback).__name__ in (
                "ExportPretrained", "InterruptCheckpoint") else None
            key = _callback_key(callback)
        if folder:
            folders.append((str(folder), key))
    return list(dict.fromkeys(folders))


def unwritable_reason(folder: str) -> Optional[str]:
    """Why ``folder`` cannot be written (or created), or None when it can."""
    if "://" in folder and not folder.startswith("file://"):
        return None
    path = os.path.abspath(folder[len("file://"):] if folder.startswith("file://") else folder)
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is a file, not a folder" if probe != path else "it is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        where = "" if probe == path else f" (it would be created in {probe})"
        return f"cannot create a file there{where}: {error.strerror or error}"
    return None


def check_output_folders(trainer: pl.Trainer) -> None:
    """Stop with an :class:`OutputFolderError` naming each output folder that cannot be
    written, its config key and the fix."""
    problems = [(folder, key, reason) for folder, key in output_folders(trainer)
                for reason in [unwritable_reason(folder)] if reason]
    if problems:
        rows = "\n".join(f"  {folder} ({key}): {reason}" for folder, key, reason in problems)
        raise OutputFolderError(
            f"output folders that this run could not write to (it would fail at its first save, after training):\n"
            f"{rows}\nGive each of these settings a folder you can write to, or fix its permissions."
        )
