"""Log a picture file (e.g. the Frozen Lake map with the learned policies) to the loggers."""

from __future__ import annotations

import os
import shutil
from typing import Iterable, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger


def log_image_file(loggers: Iterable[Logger], path: str, key: str = "image", step: Optional[int] = None,
                   copy_to: Optional[str] = None) -> bool:
    """Log the image at ``path`` to every logger: W&B as ``wandb.Image``, TensorBoard with
    ``add_image``; other loggers get a copy in ``copy_to`` (when given). Returns False
    (and logs nothing) when the file does not exist."""
    if not os.path.isfile(path):
        return False
    copied = False
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[path], step=step)
        elif isinstance(logger, TensorBoardLogger):
            import matplotlib.image

            pixels = matplotlib.image.imread(path)
            logger.experiment.add_image(key, pixels[..., :3], global_step=step or 0, dataformats="HWC")
        elif copy_to is not None and not copied:
            os.makedirs(copy_to, exist_ok=True)
            shutil.copy(path, os.path.join(copy_to, f"{key}{os.path.splitext(path)[1]}"))
            copied = True
    return True


class LogImage(Callback):
    """At the end of fit, log the picture at ``path`` if it exists (e.g. ``frozen_lake.png``).

    Args:
        path: the image file (PNG/JPEG).
        key: name under which it is logged.
    """

    def __init__(self, path: str, key: str = "frozen_lake"):
        self.path = path
        self.key = key

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from ift.callbacks.paths import run_dir

        directory = run_dir(trainer) if trainer.loggers else None  # every rank (it may broadcast)
        if trainer.is_global_zero:
            log_image_file(trainer.loggers, self.path, self.key, trainer.global_step, copy_to=directory)
