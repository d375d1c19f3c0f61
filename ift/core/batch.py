"""What every layer may ask of a batch without knowing its layout."""

from __future__ import annotations

from typing import Any, Mapping

import torch


def batch_rows(batch: Mapping[str, Any]) -> int:
    """How many examples ``batch`` holds: the rows of its first tensor (1 when it has none).

    Every tensor of a batch has one row per example (SFT, preference and prompt-only
    batches alike), so the first one tells.
    """
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            return int(value.shape[0])
    return 1
