"""val/accuracy is the share of held-out prompts answered right over the whole epoch
(a torchmetrics mean over prompts), whatever the batch sizes, and starts afresh each epoch."""

from __future__ import annotations

import pytest
import torch

from factories import quiet_trainer, tiny_arithmetic, tiny_module

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def validate_with_hits(tmp_path, module, hits_per_batch):
    queue = [torch.tensor(hits, dtype=torch.float32) for hits in hits_per_batch]
    module.answer_hits = lambda batch: queue.pop(0)
    data = tiny_arithmetic(8, 4, num_val=sum(len(h) for h in hits_per_batch), eval_batch_size=len(hits_per_batch[0]))
    return quiet_trainer(tmp_path).validate(module, datamodule=data, verbose=False)[0]["val/accuracy"]


def test_accuracy_is_the_share_over_every_prompt_not_a_mean_of_batch_means(tmp_path):
    # Batches of 2, 2 and 1 prompts: 2 right of 5 is 0.4 (the mean of batch means would be 0.5).
    accuracy = validate_with_hits(tmp_path, tiny_module(), [[1, 0], [0, 0], [1]])
    assert accuracy == pytest.approx(0.4)


def test_each_validation_starts_afresh(tmp_path):
    module = tiny_module()
    assert validate_with_hits(tmp_path, module, [[1, 1], [1, 1]]) == pytest.approx(1.0)
    assert validate_with_hits(tmp_path, module, [[0, 0], [0, 1]]) == pytest.approx(0.25)
