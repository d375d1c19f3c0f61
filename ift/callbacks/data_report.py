"""Report the examples a data module could not use, once per epoch, so none vanish silently."""

from __future__ import annotations

import logging
from typing import Dict

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger("ift.data")


def skipped_summary(datamodule) -> Dict[str, str]:
    """``{split: "2 of 10 examples skipped (empty response: 2); first: file:3 (empty response)"}``
    for every split of an :class:`~ift.data.ExamplesDataModule` that skipped any."""
    report = {}
    for split, counter in (getattr(datamodule, "skipped", None) or {}).items():
        count = sum(counter.values())
        if not count:
            continue
        kept = len(datamodule.datasets[split]) if split in getattr(datamodule, "datasets", {}) else 0
        reasons = ", ".join(f"{reason}: {n}" for reason, n in counter.most_common())
        text = f"{count} of {count + kept} examples skipped ({reasons})"
        first = (getattr(datamodule, "skipped_examples", None) or {}).get(split)
        if first:
            text += "; first: " + ", ".join(f"{where} ({why})" for where, why in first)
        report[split] = text
    return report


class SkippedExamplesReport(Callback):
    """At the start of every training epoch, log ``data/skipped_<split>`` (a count) to every
    logger and warn with the reasons and the first places, for each split that skipped
    examples (empty responses, too long, malformed messages, ...).

    :class:`~ift.modules.FineTuneModule` adds it to every fit (``configure_callbacks``).
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            return
        self.report(trainer, datamodule)

    @rank_zero_only
    def report(self, trainer: pl.Trainer, datamodule) -> None:
        summary = skipped_summary(datamodule)
        if not summary:
            return
        metrics = {f"data/skipped_{split}": float(sum(datamodule.skipped[split].values())) for split in summary}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        for split, text in summary.items():
            log.warning("%s, epoch %d, %s split: %s", type(datamodule).__name__, trainer.current_epoch, split, text)
