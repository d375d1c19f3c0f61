"""val/accuracy (the :class:`~ift.callbacks.AnswerAccuracy` callback) is the share of held-out
prompts answered right over the whole epoch (a torchmetrics mean over prompts), whatever the
batch sizes, and starts afresh each epoch."""

from __future__ import annotations

import pytest
import torch

from factories import quiet_trainer, tiny_arithmetic, tiny_module
from ift.callbacks import AnswerAccuracy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def validate_with_hits(tmp_path, module, hits_per_batch, accuracy=None):
    """val/accuracy of one validation in which the callback's hits per batch are ``hits_per_batch``."""
    queue = [torch.tensor(hits, dtype=torch.float32) for hits in hits_per_batch]
    accuracy = accuracy if accuracy is not None else AnswerAccuracy()
    accuracy.hits = lambda pl_module, batch: queue.pop(0)
    data = tiny_arithmetic(8, 4, num_val=sum(len(h) for h in hits_per_batch), eval_batch_size=len(hits_per_batch[0]))
    return quiet_trainer(tmp_path, [accuracy]).validate(module, datamodule=data, verbose=False)[0]["val/accuracy"]


def test_accuracy_is_the_share_over_every_prompt_not_a_mean_of_batch_means(tmp_path):
    # Batches of 2, 2 and 1 prompts: 2 right of 5 is 0.4 (the mean of batch means would be 0.5).
    accuracy = validate_with_hits(tmp_path, tiny_module(), [[1, 0], [0, 0], [1]])
    assert accuracy == pytest.approx(0.4)


def test_each_validation_starts_afresh(tmp_path):
    module, accuracy = tiny_module(), AnswerAccuracy()  # the same callback (and metric) both times
    assert validate_with_hits(tmp_path, module, [[1, 1], [1, 1]], accuracy) == pytest.approx(1.0)
    assert validate_with_hits(tmp_path, module, [[0, 0], [0, 1]], accuracy) == pytest.approx(0.25)
