"""Where a run writes its own files (config, exports, sample tables), never shared with another run.

``trainer.log_dir`` is versioned for the CSV and TensorBoard loggers
(``lightning_logs/version_N``) but is the bare ``save_dir`` for W&B and the bare
``default_root_dir`` without a logger, so two runs in one folder would overwrite each
other's files there. :func:`run_dir` is always a folder of this run only:

* CSV / TensorBoard: ``trainer.log_dir`` (``.../version_N``);
* W&B: ``<save_dir>/<project>/<run id>``, where Lightning also puts the checkpoints;
* anything else or no logger: ``<save_dir or default_root_dir>/ift_runs/version_N``, the
  first free ``N``.
"""

from __future__ import annotations

import os
import weakref
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

_RUN_DIRS: "weakref.WeakKeyDictionary[pl.Trainer, str]" = weakref.WeakKeyDictionary()


def next_version_dir(root: str) -> str:
    """``root/version_N`` for the smallest ``N`` not taken yet (created, so it stays taken)."""
    os.makedirs(root, exist_ok=True)
    number = 0
    while True:
        path = os.path.join(root, f"version_{number}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            number += 1


def _local_run_dir(trainer: pl.Trainer) -> Optional[str]:
    logger = trainer.loggers[0] if trainer.loggers else None
    if isinstance(logger, WandbLogger):
        return os.path.join(logger.save_dir or ".", str(logger.name), str(logger.version))
    root = getattr(logger, "save_dir", None) if logger is not None else None
    return next_version_dir(os.path.join(root or trainer.default_root_dir, "ift_runs"))


def run_dir(trainer: pl.Trainer) -> str:
    """This run's own folder (see the module docstring). Call it on every process."""
    if trainer in _RUN_DIRS:
        return _RUN_DIRS[trainer]
    if trainer.loggers and isinstance(trainer.loggers[0], (CSVLogger, TensorBoardLogger)):
        path = trainer.log_dir  # versioned, and broadcast from rank 0
    else:
        path = trainer.strategy.broadcast(_local_run_dir(trainer) if trainer.is_global_zero else None)
    _RUN_DIRS[trainer] = path
    return path
