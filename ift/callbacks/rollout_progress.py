"""A progress display for PPO rollouts (generation, scoring, update).

Objectives reach it through their step context (``context.progress(total, desc)``, see
:class:`ift.objectives.StepContext`); the module's context calls :func:`rollout_progress`::

    with rollout_progress(module, total=num_prompts, desc="rollout") as bar:
        for chunk in chunks:
            bar.set_phase("generation")
            ...generate...
            bar.update(len(chunk))
        bar.set_phase("scoring")

``rollout_progress`` shows a transient tqdm bar on rank 0 while the Trainer shows its own
progress bar (or when a :class:`RolloutProgress` callback is present), and is a silent
no-op otherwise (tests, ``enable_progress_bar=False``, other ranks, no Trainer). A
per-token display of ``generate`` is available with
``policy.generate(..., streamer=bar.token_streamer())``.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from pytorch_lightning.callbacks import Callback


class RolloutProgress(Callback):
    """Controls the rollout bars of :func:`rollout_progress`.

    Args:
        enabled: show the bars (False hides them even when the Trainer shows progress).
        leave: keep each finished bar on screen instead of clearing it.
    """

    def __init__(self, enabled: bool = True, leave: bool = False):
        self.enabled = enabled
        self.leave = leave


class _NullBar:
    """Same API as :class:`RolloutBar`, doing nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_phase(self, phase: str) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def token_streamer(self):
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RolloutBar(_NullBar):
    """A tqdm bar counting rollout samples, with the current phase and metrics as postfix."""

    def __init__(self, total: Optional[int], desc: str = "rollout", unit: str = "sample", leave: bool = False):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True, file=sys.stderr)
        self.phase = ""
        self.postfix: dict = {}

    @property
    def n(self) -> int:  # type: ignore[override]
        return int(self.bar.n)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.bar.set_postfix(phase=phase, **self.postfix, refresh=True)

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)
        self.bar.set_postfix(phase=self.phase, **self.postfix, refresh=True)

    def token_streamer(self):
        """A ``transformers`` streamer that shows the generated-token count of ``generate``."""
        return _TokenStreamer(self)

    def close(self) -> None:
        self.bar.close()


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
            self.bar.set_postfix(tokens=self.tokens)

    def end(self) -> None:
        pass


def _trainer_of(module: Any):
    try:
        return module.trainer
    except (AttributeError, RuntimeError):  # a module not attached to a Trainer
        return None


def rollout_progress(module: Any, total: Optional[int] = None, desc: str = "rollout", unit: str = "sample"):
    """A context-managed progress bar for one rollout (see the module docstring).

    Args:
        module: the :class:`~ift.modules.FineTuneModule` (its Trainer decides whether to show).
        total: how many samples the rollout will produce (None: unknown).
        desc: label of the bar.
        unit: what :meth:`RolloutBar.update` counts.
    """
    trainer = _trainer_of(module)
    if trainer is None or not trainer.is_global_zero:
        return _NullBar()
    settings = next((cb for cb in trainer.callbacks if isinstance(cb, RolloutProgress)), None)
    if settings is not None:
        show, leave = settings.enabled, settings.leave
    else:
        show, leave = trainer.progress_bar_callback is not None, False
    if not show:
        return _NullBar()
    return RolloutBar(total, desc=desc, unit=unit, leave=leave)
