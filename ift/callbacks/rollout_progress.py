"""PPO's rollout progress (generation, scoring, update), shown in the postfix of Lightning's
own training bar.

Objectives reach it through their step context (``context.progress(total, desc)``, see
:class:`ift.objectives.StepContext`); the module's context calls :func:`rollout_progress`::

    with rollout_progress(module, total=num_prompts, desc="rollout") as bar:
        for chunk in chunks:
            bar.set_phase("generation")
            ...generate...
            bar.update(len(chunk))
        bar.set_phase("scoring")

The training bar then reads ``Epoch 0: 3/63 [...] train/loss=0.41, rollout=scoring 128/128``:
one line in a terminal, however many rollouts, instead of a bar of its own per rollout.
When the context closes the entry says ``update`` (the policy update that follows the
rollout) until the training bar refreshes its metrics at the end of the batch.

This shows on rank 0 when the Trainer's progress bar is Lightning's tqdm or rich bar (or a
subclass); it is a silent no-op otherwise: no progress bar, the plain lines of
:class:`~ift.callbacks.line_progress.LineProgressBar` (output that is not a terminal),
other ranks, no Trainer, a :class:`RolloutProgress` callback with ``enabled=False``. A
per-token count of ``generate`` is available with
``policy.generate(..., streamer=bar.token_streamer())``.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Dict, Optional

from pytorch_lightning.callbacks import Callback, RichProgressBar, TQDMProgressBar

# Token counts arrive once per decoding step: redraw the bar for them at most this often.
TOKEN_REDRAW_INTERVAL_S = 0.2
# What follows a rollout in the same training step (PPO's epochs of mini-batch updates).
PHASE_AFTER_ROLLOUT = "update"


class RolloutProgress(Callback):
    """Shows or hides the rollout phase in the training bar (see :func:`rollout_progress`).

    Args:
        enabled: show the rollout's phase and counts in the postfix of the Trainer's training
            bar (False leaves the bar alone).
        leave: no longer has an effect (rollouts used to open a bar of their own, which this
            kept on screen); accepted so that older configs still run, with a warning.
    """

    def __init__(self, enabled: bool = True, leave: bool = False):
        self.enabled = enabled
        self.leave = leave
        if leave:
            warnings.warn("RolloutProgress(leave=True) has no effect any more: a rollout is shown in the training "
                          "bar's postfix, not as a bar of its own; remove `leave` from the callback's init_args",
                          FutureWarning, stacklevel=2)


class _NullBar:
    """Same API as :class:`RolloutBar`, showing nothing (it still counts, for callers that read it)."""

    def __init__(self) -> None:
        self.n = 0
        self.phase = ""
        self.postfix: Dict[str, Any] = {}

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)

    def token_streamer(self):
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RolloutBar(_NullBar):
    """One rollout's phase, samples done/total and metrics, written as one entry (named
    ``desc``) of the training bar's postfix through ``show(text)``.

    Args:
        show: writes the entry's text into the training bar (see :func:`training_bar_writer`).
        total: how many samples the rollout will produce (None: unknown).
        desc: the entry's name in the postfix.
        unit: what :meth:`update` counts (kept for callers; the entry shows counts only).
    """

    def __init__(self, show: Callable[[str], None], total: Optional[int], desc: str = "rollout",
                 unit: str = "sample"):
        super().__init__()
        self.show = show
        self.total = total
        self.desc = desc
        self.unit = unit
        self._last_redraw = 0.0
        self._redraw()

    def text(self) -> str:
        """The entry: ``"scoring 128/128, score 0.02"``."""
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        words = " ".join(word for word in (self.phase, count) if word)
        values = ", ".join(f"{key} {value}" for key, value in self.postfix.items())
        return f"{words}, {values}" if values else words

    def update(self, n: int = 1) -> None:
        super().update(n)
        self._redraw()

    def set_phase(self, phase: str) -> None:
        super().set_phase(phase)
        self._redraw()

    def set_postfix(self, **values: Any) -> None:
        super().set_postfix(**values)
        self._redraw()

    def count_token(self, tokens: int) -> None:
        """The streamer's count of generated tokens; redrawn at most every 0.2 s."""
        self.postfix["tokens"] = tokens
        if time.monotonic() - self._last_redraw >= TOKEN_REDRAW_INTERVAL_S:
            self._redraw()

    def token_streamer(self):
        """A ``transformers`` streamer that shows the generated-token count of ``generate``."""
        return _TokenStreamer(self)

    def close(self) -> None:
        self.phase = PHASE_AFTER_ROLLOUT
        self.postfix.pop("tokens", None)
        self._redraw()

    def _redraw(self) -> None:
        self._last_redraw = time.monotonic()
        self.show(self.text())


def _streamer_base():
    from transformers.generation.streamers import BaseStreamer

    return BaseStreamer


class _TokenStreamer(_streamer_base()):
    """Counts decoding steps of ``generate`` (the first ``put`` is the prompt) into the bar's postfix."""

    def __init__(self, bar: RolloutBar):
        self.bar = bar
        self.tokens = -1

    def put(self, value) -> None:
        self.tokens += 1
        if self.tokens > 0:
            self.bar.count_token(self.tokens)

    def end(self) -> None:
        pass


def training_bar_writer(trainer: Any, module: Any, desc: str) -> Optional[Callable[[str], None]]:
    """A function writing ``desc=<text>`` into the postfix of the Trainer's training bar,
    beside the metrics the bar shows; None when there is no such bar to write into (none,
    disabled, not started, or a kind of bar this does not know)."""
    bar = trainer.progress_bar_callback
    if not isinstance(bar, (TQDMProgressBar, RichProgressBar)) or not bar.is_enabled:
        return None
    if isinstance(bar, TQDMProgressBar):
        try:
            tqdm_bar = bar.train_progress_bar
        except TypeError:  # not started yet (Lightning raises rather than return None)
            return None
        if tqdm_bar.disable:
            return None

        def write_tqdm(text: str) -> None:
            tqdm_bar.set_postfix({**bar.get_metrics(trainer, module), desc: text}, refresh=True)

        return write_tqdm
    # The rich bar's metrics column (no public setter: Lightning itself feeds it get_metrics()).
    column = getattr(bar, "_metric_component", None)
    if column is None or getattr(bar, "train_progress_bar_id", None) is None:
        return None

    def write_rich(text: str) -> None:
        column.update({**bar.get_metrics(trainer, module), desc: text})
        bar.refresh()

    return write_rich


def _trainer_of(module: Any):
    try:
        return module.trainer
    except (AttributeError, RuntimeError):  # a module not attached to a Trainer
        return None


def rollout_progress(module: Any, total: Optional[int] = None, desc: str = "rollout", unit: str = "sample"):
    """A context-managed progress display for one rollout (see the module docstring).

    Args:
        module: the :class:`~ift.modules.FineTuneModule` (its Trainer's bar shows the rollout).
        total: how many samples the rollout will produce (None: unknown).
        desc: name of the rollout's entry in the bar's postfix.
        unit: what :meth:`RolloutBar.update` counts.
    """
    trainer = _trainer_of(module)
    if trainer is None or not trainer.is_global_zero:
        return _NullBar()
    settings = next((cb for cb in trainer.callbacks if isinstance(cb, RolloutProgress)), None)
    if settings is not None and not settings.enabled:
        return _NullBar()
    show = training_bar_writer(trainer, module, desc)
    if show is None:
        return _NullBar()
    return RolloutBar(show, total, desc=desc, unit=unit)
