"""Held-out pass rate: greedy-decode a split's prompts and score them with a reward."""

from __future__ import annotations

from typing import Any, Dict, List

import torch

from ift.core.generation import generate_responses
from ift.data.datamodule import ExamplesDataModule
from ift.rewards.code import CodeTestsReward


def pass_rate(module: Any, data: ExamplesDataModule, split: str = "val", reward: Any = None,
              max_new_tokens: int = 48) -> Dict[str, float]:
    """Greedy-decode every prompt of ``split`` and score it with ``reward``.

    Returns ``{"pass_rate": share of problems whose tests all pass, "mean_score": mean
    reward, "count": problems}``. ``reward`` defaults to ``CodeTestsReward()``.
    """
    reward = reward if reward is not None else CodeTestsReward()
    if data.tokenizer is None:
        data.tokenizer = module.tokenizer
    data.setup("validate")
    loader = data._eval_loader(split)
    tokenizer = module.tokenizer
    scores: List[float] = []
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for batch in loader:
            ids, _ = generate_responses(module.policy, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                        max_new_tokens=max_new_tokens)
            texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
            scores += reward(list(batch["prompt"]), texts, list(batch["examples"]))
    module.train(was_training)  # callable mid-training (e.g. from a callback)
    count = len(scores)
    return {
        "pass_rate": sum(1 for s in scores if s >= 1.0) / max(count, 1),
        "mean_score": sum(scores) / max(count, 1),
        "count": float(count),
    }
