"""Dynamic padding of encoded examples into model batches."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch

from ift.core.constants import IGNORE_INDEX

PADDING_SIDES = ("right", "left")
_TEXT_KEYS = ("prompt", "response", "answer", "example")


def pad_sequences(sequences: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """Stack lists of ids into ``B x max_len``, padding with ``value`` on ``side``."""
    if side not in PADDING_SIDES:
        raise ValueError(f"padding side {side!r} is not one of {PADDING_SIDES}")
    longest = max((len(seq) for seq in sequences), default=0)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq) == 0:
            continue
        if side == "right":
            out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        else:
            out[row, longest - len(seq):] = torch.as_tensor(seq, dtype=torch.long)
    return out


def lengths_mask(sequences: Sequence[Sequence[int]], side: str = "right") -> torch.Tensor:
    return pad_sequences([[1] * len(seq) for seq in sequences], 0, side)


class Collator:
    """Pads every sequence field of a list of encoded examples.

    ``input_ids``/``labels`` (and ``chosen_*``/``rejected_*``) are padded on
    ``padding_side``; ``prompt_input_ids`` are always left-padded, ready for generation.
    Text fields (``prompt``, ``response``, ``answer``, ``example``) pass through as lists.
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side {padding_side!r} is not one of {PADDING_SIDES}")
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, Any]:
        batch: Dict[str, Any] = {}
        for prefix in ("", "chosen_", "rejected_"):
            ids_key = f"{prefix}input_ids"
            if ids_key in features[0]:
                ids = [f[ids_key] for f in features]
                batch[ids_key] = pad_sequences(ids, self.pad_token_id, self.padding_side)
                batch[f"{prefix}attention_mask"] = lengths_mask(ids, self.padding_side)
                batch[f"{prefix}labels"] = pad_sequences([f[f"{prefix}labels"] for f in features], IGNORE_INDEX, self.padding_side)
        prompts = [f["prompt_ids"] for f in features]
        batch["prompt_input_ids"] = pad_sequences(prompts, self.pad_token_id, "left")
        batch["prompt_attention_mask"] = lengths_mask(prompts, "left")
        for key in _TEXT_KEYS:
            if key in features[0]:
                batch[key if key != "example" else "examples"] = [f.get(key) for f in features]
        return batch
