"""Checkpoints written atomically: a crash or a kill during a save never leaves a corrupt file.

Lightning 2.6's ``TorchCheckpointIO`` serialises into memory, then writes through an
fsspec transaction: a temporary file from :func:`tempfile.mkstemp` (the system temp
folder, often another file system or a RAM disk) moved onto the checkpoint with
``shutil.move``. Across file systems that move is a copy into the final name (a kill
during it leaves a truncated ``last.ckpt``), nothing is fsynced (after a power loss the
renamed file can be empty), and a kill leaves the temporary file behind in ``/tmp``.

:func:`atomic_save` writes ``torch.save`` output to a hidden temporary file **in the
checkpoint's own folder** (``.last.ckpt.<pid>.<random>.tmp``), flushes and fsyncs it,
``os.replace``-s it onto the final name (atomic on POSIX and Windows) and fsyncs the
folder. Readers see the old complete file or the new complete file, never a partial one.
The temporary name neither ends in ``.ckpt`` nor starts with ``last``, so neither
``ModelCheckpoint`` nor ``ckpt_path="last"`` ever takes it for a checkpoint; one left by
a killed process is deleted by the next successful save of the same checkpoint.

:class:`AtomicCheckpoints` (added to every fit by
:meth:`ift.modules.FineTuneModule.configure_callbacks`) installs :class:`AtomicCheckpointIO`
in place of the strategy's default ``TorchCheckpointIO`` (also inside
``AsyncCheckpointIO``); a custom ``CheckpointIO`` plugin is left alone. Remote paths
(``s3://``, ``gs://``, ...) keep Lightning's own writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from typing import Any, Dict, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.callbacks import Callback

TEMP_SUFFIX = ".tmp"


def temporary_name(path: _PATH) -> str:
    """A fresh hidden temporary path next to ``path`` (same folder, so ``os.replace`` is atomic)."""
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def is_temporary(name: str, base: Optional[str] = None) -> bool:
    """Whether the file name ``name`` is one of :func:`atomic_save`'s temporary files
    (for the checkpoint named ``base``, when given)."""
    stem = re.escape(base) if base is not None else ".+"
    return re.fullmatch(rf"\.{stem}\.\d+\.[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)}", os.path.basename(name)) is not None


def atomic_save(obj: Any, path: _PATH) -> None:
    """``torch.save(obj, path)`` so that ``path`` is always either absent, the old complete
    file, or the new complete file, even if the process dies at any moment."""
    path = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    temporary = temporary_name(path)
    try:
        torch.save(obj, temporary)
        _fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)
    remove_stale_temporaries(directory, base)


def remove_stale_temporaries(directory: str, base: Optional[str] = None) -> int:
    """Delete temporary files left in ``directory`` by killed saves (of checkpoint ``base``
    only, when given); returns how many were deleted."""
    removed = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if is_temporary(name, base):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, name))
                    removed += 1
    return removed


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); folders cannot be opened on Windows, where this is a no-op."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_local(path: _PATH) -> bool:
    text = os.fspath(path)
    return "://" not in text or text.startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves go through :func:`atomic_save`."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote, or rejects storage_options
            return
        text = os.fspath(path)
        atomic_save(checkpoint, text[len("file://"):] if text.startswith("file://") else text)


def install_atomic_checkpoint_io(strategy: Any) -> bool:
    """Put :class:`AtomicCheckpointIO` in place of ``strategy``'s default ``TorchCheckpointIO``
    (or of the one inside a wrapping plugin such as ``AsyncCheckpointIO``). Returns whether
    it is installed; any other ``CheckpointIO`` is left as it is."""
    checkpoint_io = getattr(strategy, "checkpoint_io", None)
    if isinstance(checkpoint_io, AtomicCheckpointIO):
        return True
    if type(checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
        return True
    from pytorch_lightning.plugins.io.wrapper import _WrappingCheckpointIO

    if isinstance(checkpoint_io, _WrappingCheckpointIO):
        inner = checkpoint_io.checkpoint_io
        if isinstance(inner, AtomicCheckpointIO):
            return True
        if type(inner) is TorchCheckpointIO and hasattr(checkpoint_io, "_checkpoint_io"):
            checkpoint_io._checkpoint_io = AtomicCheckpointIO()
            return True
    return False


class AtomicCheckpoints(Callback):
    """Make every checkpoint this Trainer writes atomic (see the module docstring).

    :class:`~ift.modules.FineTuneModule` adds it to every fit; it is harmless to add it
    yourself (``trainer.callbacks``) for other modules.
    """

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self.installed = install_atomic_checkpoint_io(trainer.strategy)
