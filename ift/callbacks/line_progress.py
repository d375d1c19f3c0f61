"""Plain progress lines for output that is not a terminal (a pipe, ``tee``, ``nohup``, CI).

Lightning's progress bars redraw themselves with carriage returns; written to a log file
that becomes one endless line of garbage. :class:`LineProgressBar` prints instead, every N
optimizer steps, one self-contained line::

    step 37/1100 | epoch 4/100 | loss 1.234 | val/accuracy 0.412 | 2.35 steps/s | ETA 0:07:32

and one line after each validation of a fit. ``ift fit`` uses it on its own whenever its
standard output is not a terminal (see :func:`line_progress_unless_terminal`); in a terminal
Lightning's own bar is kept. Standard output, not stderr, decides, because that is where
Lightning's tqdm and rich bars write: ``ift fit | tee log`` garbles the log although stderr
is still the terminal.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Dict, List, Optional, TextIO

from pytorch_lightning.callbacks.progress import ProgressBar

# How many step lines a run prints when the interval is not given: enough to follow a run in
# a log, few enough to read (a 1,100-step run prints a line every 37 steps).
LINES_PER_RUN = 30
# The metric shown beside the loss, the first one a run logs.
KEY_METRICS = ("val/accuracy", "val/loss")
LOSS_KEYS = ("train/loss_step", "train/loss")


class LineProgressBar(ProgressBar):
    """A progress "bar" that prints plain lines: step/total, epoch, loss, the key metric
    (``val/accuracy`` when logged, else ``val/loss``), steps per second and the time left.

    Args:
        every_n_steps: print a line every this many optimizer steps (None: about 30 lines per
            run, or every ``log_every_n_steps`` steps when the run's length is not known).
        stream: where to write (None: ``sys.stdout`` as it is at each write, where
            Lightning's bar would have written).
    """

    def __init__(self, every_n_steps: Optional[int] = None, stream: Optional[TextIO] = None):
        super().__init__()
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 1):
            raise ValueError(f"LineProgressBar(every_n_steps={every_n_steps!r}): give a whole number of steps >= 1, "
                             "or None for about 30 lines per run (ift fit: --progress_every N)")
        self.every_n_steps = every_n_steps
        self._stream = stream
        self._enabled = True
        self._interval = 1
        self._next_step = 1
        self._total: Optional[int] = None
        self._start_step = 0
        self._start_time = 0.0
        self._last_printed: Optional[int] = None

    # ------------------------------------------------------------------ ProgressBar API
    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("file", self.stream)
        print(*args, **kwargs)

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self._start_step = int(trainer.global_step)  # a resumed run counts its speed from here
        self._start_time = time.monotonic()
        self._total = total_steps(trainer)
        self._interval = self.every_n_steps or default_interval(trainer, self._total, self._start_step)
        self._next_step = (self._start_step // self._interval + 1) * self._interval
        self._last_printed = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if step >= self._next_step:  # PPO takes several optimizer steps per batch: crossing counts
            self._write(self.step_line(trainer))
            self._last_printed = step
            self._next_step = (step // self._interval + 1) * self._interval

    def on_train_end(self, trainer, pl_module) -> None:
        if self._last_printed != int(trainer.global_step) and int(trainer.global_step) > self._start_step:
            self._write(self.step_line(trainer))  # the last step, so the log ends with where the run ended
            self._last_printed = int(trainer.global_step)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return  # validate/test print Lightning's result table; the sanity check means nothing yet
        values = [f"{key} {_number(value)}" for key, value in _metrics(trainer).items() if key.startswith("val/")]
        if values:
            self._write(f"validation at step {int(trainer.global_step)} | " + " | ".join(values))

    # ------------------------------------------------------------------ the line
    def step_line(self, trainer) -> str:
        """The progress line for the Trainer's current step."""
        step = int(trainer.global_step)
        parts: List[str] = [f"step {step}/{self._total}" if self._total else f"step {step}"]
        max_epochs = trainer.max_epochs
        epoch = int(trainer.current_epoch) + 1  # 1-based, like the step count
        parts.append(f"epoch {epoch}/{max_epochs}" if max_epochs and max_epochs > 0 else f"epoch {epoch}")
        metrics = _metrics(trainer)
        loss = next((metrics[key] for key in LOSS_KEYS if key in metrics), None)
        if loss is not None:
            parts.append(f"loss {_number(loss)}")
        key = next((key for key in KEY_METRICS if key in metrics), None)
        if key is not None:
            parts.append(f"{key} {_number(metrics[key])}")
        elapsed = time.monotonic() - self._start_time
        done = step - self._start_step
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} steps/s")
            if self._total:
                parts.append(f"ETA {_duration(max(self._total - step, 0) / rate)}")
        return " | ".join(parts)

    def _write(self, line: str) -> None:
        if self.is_disabled:
            return
        stream = self.stream
        stream.write(line + "\n")
        stream.flush()  # a log read while the run goes on (tail -f) shows each line at once


def total_steps(trainer) -> Optional[int]:
    """The optimizer step the run will end at, when it is known.

    With automatic optimization that is Lightning's estimate (``max_steps`` or the epochs'
    batches); with manual optimization (PPO takes several optimizer steps per batch) only a
    ``max_steps`` says it."""
    max_steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
    module = trainer.lightning_module
    if module is not None and not module.automatic_optimization:
        return max_steps
    try:
        estimate = trainer.estimated_stepping_batches
    except Exception:  # an iterable without a length: the run's length is not known
        return max_steps
    if estimate is None or math.isinf(estimate):
        return max_steps
    return int(estimate)


def default_interval(trainer, total: Optional[int], start: int) -> int:
    """Steps between two lines: about :data:`LINES_PER_RUN` lines over what is left of the
    run, or every ``log_every_n_steps`` steps when its length is not known."""
    if total:
        return max(1, math.ceil((total - start) / LINES_PER_RUN))
    return max(1, int(trainer.log_every_n_steps or 50))


def line_progress_unless_terminal(trainer_config: Dict[str, Any], callbacks: List[Any],
                                  every_n_steps: Optional[int] = None,
                                  stream: Optional[TextIO] = None) -> List[LineProgressBar]:
    """What ``ift`` adds to a Trainer's callbacks: a :class:`LineProgressBar` when ``stream``
    (stdout, where Lightning's bars write) is not a terminal, the progress bar is not switched off
    (``trainer.enable_progress_bar: false``) and no progress bar callback is configured;
    nothing otherwise (Lightning's own bar is kept in a terminal)."""
    stream = stream if stream is not None else sys.stdout
    if trainer_config.get("enable_progress_bar") is False:
        return []
    configured = list(trainer_config.get("callbacks") or []) + list(callbacks)
    if any(isinstance(callback, ProgressBar) for callback in configured):
        return []
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return []
    return [LineProgressBar(every_n_steps=every_n_steps)]


def _metrics(trainer) -> Dict[str, float]:
    values = {}
    for key, value in trainer.callback_metrics.items():
        try:
            values[key] = float(value)
        except (TypeError, ValueError):  # a metric that is not one number
            continue
    return values


def _number(value: float) -> str:
    return f"{value:.4g}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


PROGRESS_EVERY_HELP = ("When the output is not a terminal (a pipe, tee, nohup, CI), print a plain progress line every "
                       "this many optimizer steps instead of a progress bar (null: about 30 lines per run).")


def add_progress_every_argument(parser) -> None:
    """``--progress_every N`` on ``ift fit|validate|test`` (see :class:`LineProgressBar`)."""
    parser.add_argument("--progress_every", type=Optional[int], default=None, help=PROGRESS_EVERY_HELP)
