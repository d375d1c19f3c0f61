"""Ctrl-C (or an error) during a fit writes a checkpoint that ``trainer.fit(ckpt_path=...)`` resumes from.

What Lightning 2.6 does by itself on Ctrl-C: it catches the ``KeyboardInterrupt`` raised
wherever the main thread was (possibly halfway through ``optimizer.step()``), calls every
callback's ``on_exception``, ignores further Ctrl-C, tears down and exits with
``sys.exit(1)``. It saves nothing unless a callback does: ``OnExceptionCheckpoint`` saves
on *any* exception (and, once in the Trainer, makes every later ``fit()`` without
``ckpt_path`` resume from ``"last"``); ``ModelCheckpoint(save_on_exception=True)`` also
saves on any exception, under its metric-formatted name.

:class:`InterruptCheckpoint` instead:

* on the first Ctrl-C (SIGINT, while training, in the main thread), lets the current
  training step finish (and the current gradient-accumulation window), then writes
  ``<dir>/interrupted.ckpt`` at that step boundary, logs its path, and stops with
  ``KeyboardInterrupt`` as Lightning would. Under DDP the request is all-reduced at every
  step end, so every rank stops after the same step;
* on a second Ctrl-C, stops at once (the previous SIGINT handler runs); the checkpoint is
  then written from wherever the step was (single process only: under DDP the ranks are
  not at the same place, so nothing is written);
* on a ``KeyboardInterrupt`` raised some other way (in a callback, in a thread-less
  notebook cell) and on Lightning's ``SIGTERMException`` (SIGTERM, at a step boundary on
  every rank), writes the checkpoint in ``on_exception``;
* on any other exception during training (a reward that raises, a data error mid-epoch,
  too many nan steps), also writes it (``save_on_error``), so that nothing trained since
  the last save is lost, and adds ``saved to X; resume with --ckpt_path X`` to the
  exception's notes (printed under its traceback). The loop counters in it are those of
  the last *finished* step: the step that raised is run again on resume. Nothing is
  written for an error before the first finished training batch of this fit (setup,
  loading a checkpoint, sanity validation, the first batch): there is nothing new to keep, and an earlier
  ``interrupted.ckpt`` in the same folder is left as it is. Under multi-process training
  the other ranks are not at the same place, so nothing is written (a warning says so).

``<dir>`` is the ``dirpath`` given, else the folder of the Trainer's ``ModelCheckpoint``,
else ``trainer.default_root_dir``. The file is written with
:class:`~ift.callbacks.AtomicCheckpointIO` when the module installed it.

Resuming: ``trainer.fit(module, data, ckpt_path=".../interrupted.ckpt")`` (or
``ift fit ... --ckpt_path .../interrupted.ckpt``) restores the weights, the optimizer,
the schedulers, the objective's state and Lightning's loop counters; ``global_step``
continues from the saved one. With a data module of :mod:`ift.data` the training loader
also skips the batches the interrupted epoch already used (see
:class:`~ift.data.sampler.ResumableDataLoader`), so the resumed run sees exactly the
batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

log = logging.getLogger(__name__)


class InterruptCheckpoint(Callback):
    """Write a resumable checkpoint when a fit is stopped with Ctrl-C (or SIGTERM).

    :class:`~ift.modules.FineTuneModule` adds one to every fit (unless the Trainer already
    has one, or ``checkpoint_on_interrupt=False``); add your own to choose the folder.

    Args:
        dirpath: folder of the checkpoint; None: the Trainer's ``ModelCheckpoint`` folder,
            else ``trainer.default_root_dir``.
        filename: checkpoint file name, without ``.ckpt``.
        save_on_error: also write the checkpoint when training stops on any other exception
            (single process only).
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: Optional[str] = None, filename: str = "interrupted", save_on_error: bool = True):
        if not filename:
            raise ValueError("InterruptCheckpoint: filename cannot be empty")
        self.dirpath = dirpath
        self.filename = filename
        self.save_on_error = save_on_error
        # Whether this fit finished a training batch (before that, an error leaves nothing new to save).
        self._training_started = False
        #: Path of the last checkpoint this callback wrote (None before any).
        self.last_path: Optional[str] = None
        self._saved_step: Optional[int] = None
        self._requested = False
        self._previous_handler: Any = None
        self._handler: Any = None
        self._installed = False

    # ------------------------------------------------------------------ where
    def checkpoint_path(self, trainer: "pl.Trainer") -> str:
        directory = self.dirpath
        if directory is None:
            checkpoint = trainer.checkpoint_callback
            if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath:
                directory = str(checkpoint.dirpath)
        if directory is None:
            directory = trainer.default_root_dir
        return os.path.join(directory, self.filename + self.FILE_EXTENSION)

    # ------------------------------------------------------------------ SIGINT
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._training_started = False  # one instance may serve several fits

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._requested = False
        self._saved_step = None
        self._install_handler(trainer)

    def _install_handler(self, trainer: "pl.Trainer") -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):  # SIG_IGN / SIG_DFL / set outside Python: leave Ctrl-C alone
            return
        is_rank_zero = trainer.is_global_zero

        def handler(signum: int, frame: Any) -> None:
            if self._requested:  # second Ctrl-C: stop now, the way Ctrl-C did before
                self._restore_handler()
                previous(signum, frame)
                return
            self._requested = True
            if is_rank_zero:
                print(
                    "\nCtrl-C: finishing the current training step, then writing a checkpoint and stopping. "
                    "Press Ctrl-C again to stop at once.",
                    file=sys.stderr,
                    flush=True,
                )

        self._previous_handler = previous
        self._handler = handler
        signal.signal(signal.SIGINT, handler)
        self._installed = True

    def _restore_handler(self) -> None:
        if not self._installed:
            return
        self._installed = False
        # Only undo our own handler (Lightning sets SIG_IGN while it shuts down after a Ctrl-C).
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is self._handler:
            signal.signal(signal.SIGINT, self._previous_handler)

    def request_stop(self) -> None:
        """Ask for what the first Ctrl-C does: stop after the current training step, with a checkpoint."""
        self._requested = True

    # ------------------------------------------------------------------ step boundary
    def on_train_batch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._training_started = True
        requested = self._requested
        if trainer.world_size > 1:
            from ift.core.distributed import any_process

            requested = any_process(requested, device=pl_module.device)  # every rank stops after the same step
        if not requested:
            return
        accumulate = max(int(trainer.accumulate_grad_batches), 1)
        total = trainer.num_training_batches
        window_done = (batch_idx + 1) % accumulate == 0 or (total != float("inf") and batch_idx + 1 >= total)
        if not window_done:
            return  # gradients of a half-done accumulation window are not in a checkpoint
        path = self._save(trainer, "Ctrl-C")
        self._restore_handler()
        raise KeyboardInterrupt(f"training stopped by Ctrl-C after global step {trainer.global_step}; checkpoint: {path}")

    # ------------------------------------------------------------------ exceptions
    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        self._restore_handler()
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if self._saved_step is not None and self._saved_step == trainer.global_step:
            return  # written at the step boundary just before stopping
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        if not interrupted and not (self.save_on_error and self._training_started):
            return
        if trainer.world_size > 1 and not isinstance(exception, SIGTERMException):
            rank_zero_warn(
                "InterruptCheckpoint: a second Ctrl-C under multi-process training stops at once, without a "
                "checkpoint (the processes are not at the same place). Press Ctrl-C once and wait for the step to end."
                if interrupted else
                f"InterruptCheckpoint: {type(exception).__name__} under multi-process training: no checkpoint written "
                "(the other processes are not at the same place); resume from the last saved checkpoint."
            )
            return
        if interrupted:
            self._save(trainer, "SIGTERM" if isinstance(exception, SIGTERMException) else "KeyboardInterrupt")
            return
        try:
            path = self._save(trainer, f"{type(exception).__name__} during training")
        except Exception as save_error:  # never hide the exception that stopped training
            log.error("InterruptCheckpoint: could not write a checkpoint after %s: %s",
                      type(exception).__name__, save_error)
            return
        if hasattr(exception, "add_note"):  # Python >= 3.11: printed under the traceback
            exception.add_note(
                f"ift: the training so far (global step {trainer.global_step}) was saved to {path}; "
                f"resume with --ckpt_path {path} (or trainer.fit(..., ckpt_path={path!r}))"
            )

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._restore_handler()

    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._restore_handler()

    def _save(self, trainer: "pl.Trainer", why: str) -> str:
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)  # every rank calls it (it ends with a barrier); rank zero writes
        self._saved_step = trainer.global_step
        self.last_path = path
        rank_zero_info(
            f"{why}: saved a checkpoint at global step {trainer.global_step} (epoch {trainer.current_epoch}) to "
            f"{path}; resume with trainer.fit(..., ckpt_path={path!r}) or `ift fit ... --ckpt_path {path}`"
        )
        return path
