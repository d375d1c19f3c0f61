"""What an ``ift fit|validate|test`` did, in a few lines at its end: final metrics and every
file it wrote (checkpoints, config, metrics, exports, pictures).

The paths are the ones this run used, so they are right whichever ``version_N`` folder the
run got (a second run in the same folder writes ``version_1``, not ``version_0``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

#: Files of a run folder worth naming, by what they are.
KINDS = {".ckpt": "checkpoint", ".yaml": "config", ".csv": "metrics", ".png": "picture", ".jpg": "picture",
         ".json": "results"}


def final_metrics(metrics: Dict[str, Any]) -> List[Tuple[str, float]]:
    """``(name, value)`` of the scalar metrics, sorted, without Lightning's ``*_step`` copies
    (their epoch means, or the plain key, are kept)."""
    rows = []
    for name, value in metrics.items():
        if name.endswith("_step"):
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)):
            rows.append((name[: -len("_epoch")] if name.endswith("_epoch") else name, float(value)))
    return sorted(dict(rows).items())


def format_value(value: float) -> str:
    """Four significant digits; nan/inf as such."""
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def checkpoint_paths(trainer: pl.Trainer) -> List[str]:
    """Checkpoints the run's callbacks wrote (best, last, on interrupt or error), existing ones only."""
    paths: List[str] = []
    for callback in trainer.callbacks:
        candidates: Iterable[Optional[str]] = ()
        if isinstance(callback, ModelCheckpoint):
            candidates = (callback.best_model_path, callback.last_model_path)
        elif getattr(callback, "last_path", None):
            candidates = (callback.last_path,)
        for path in candidates:
            if path and os.path.isfile(path) and path not in paths:
                paths.append(path)
    return paths


def run_files(folder: Optional[str]) -> List[Tuple[str, str]]:
    """``(kind, path)`` of the config, metrics, pictures and results in a run's folder, and
    of each export in its ``export/`` sub-folder."""
    if not folder or not os.path.isdir(folder):
        return []
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        kind = "hparams" if name == "hparams.yaml" else KINDS.get(os.path.splitext(name)[1].lower())
        if os.path.isfile(path) and kind and kind != "checkpoint":
            found.append((kind, path))
    exports = os.path.join(folder, "export")
    if os.path.isdir(exports):
        found.extend(("export", os.path.join(exports, name)) for name in sorted(os.listdir(exports)))
    return found


def exports_of(trainer: pl.Trainer) -> List[str]:
    """Folders written by :class:`~ift.callbacks.ExportPretrained` callbacks (any ``dirpath``)."""
    return [path for callback in trainer.callbacks for path in getattr(callback, "exports", []) if os.path.isdir(path)]


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith("..") else relative


def known_run_folder(trainer: pl.Trainer) -> Optional[str]:
    """The run's own folder if the run already has one (see :func:`ift.callbacks.paths.run_dir`);
    never creates one."""
    from ift.callbacks.paths import _RUN_DIRS

    if trainer in _RUN_DIRS:
        return _RUN_DIRS[trainer]
    logger = trainer.loggers[0] if trainer.loggers else None
    folder = getattr(logger, "log_dir", None) if logger is not None else None
    return folder if folder and os.path.isdir(folder) else None


def summarize_run(trainer: pl.Trainer, subcommand: str, seconds: Optional[float] = None,
                  run_folder: Optional[str] = None, resumed_step: Optional[int] = None) -> str:
    """The end-of-run text of ``ift <subcommand>``: steps and time, final metrics, and each file
    the run wrote with its path (``run_folder``: the run's own folder, if known). With
    ``resumed_step`` (the checkpoint's step of a resumed fit), a fit that trained no step
    after it says so."""
    head = f"ift {subcommand} finished"
    if subcommand == "fit":
        steps, epochs = trainer.global_step, trainer.current_epoch
        head += f": {steps} optimizer step{'' if steps == 1 else 's'}, {epochs} epoch{'' if epochs == 1 else 's'}"
    if seconds is not None:
        head += f", {seconds:.0f} s"
    lines = [head]
    if subcommand == "fit" and resumed_step is not None and trainer.global_step <= resumed_step:
        lines.append(f"  WARNING: resumed at step {resumed_step} and trained no step: the checkpoint had already "
                     f"reached this config's stop (max_steps {trainer.max_steps}, max_epochs {trainer.max_epochs}); "
                     "raise --trainer.max_steps or --trainer.max_epochs to train further")
    metrics = final_metrics(dict(trainer.callback_metrics))
    if metrics:
        lines.append("  final metrics: " + ", ".join(f"{name} {format_value(value)}" for name, value in metrics))
    files = [("checkpoint", path) for path in checkpoint_paths(trainer)]
    files += [(kind, path) for kind, path in run_files(run_folder) if path not in {p for _, p in files}]
    files += [("export", path) for path in exports_of(trainer) if path not in {p for _, p in files}]
    width = max((len(kind) for kind, _ in files), default=0) + 1
    for kind, path in files:
        lines.append(f"  {kind + ':':<{width}} {shown_path(path)}")
    if not files:
        lines.append("  no files written")
    return "\n".join(lines)
