"""Train a reward model on a pairs file, export it, and measure it: the steps of the CodePMP
experiment (:mod:`ift.lab.codepmp`), usable on their own.

The measurements go through what a user would use: the exported
``AutoModelForSequenceClassification`` folder scored by :class:`ift.rewards.RewardModelScore`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytorch_lightning as pl
import torch

from ift.lab.trainer import quiet_trainer


def write_jsonl(records: Sequence[Dict[str, Any]], path: Path) -> str:
    """Write ``records`` one JSON object per line; returns the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def train_reward_model(pairs_file: str, *, model: str, seed: int, steps: int, lr: float, batch_size: int,
                       lm_weight: float = 0.0, max_length: int = 128,
                       init_state: Optional[Dict[str, torch.Tensor]] = None):
    """A :class:`~ift.modules.FineTuneModule` trained with :class:`~ift.objectives.RewardModeling`
    for ``steps`` optimizer steps on the pairs of ``pairs_file`` (JSONL: prompt, chosen, rejected).

    ``init_state``: a state dict of an earlier reward-model module (trunk and reward head) to
    start from, e.g. the pre-trained one; None starts from ``model``'s own weights.
    """
    from ift.data import PreferenceDataModule
    from ift.modules import FineTuneModule
    from ift.objectives import RewardModeling

    pl.seed_everything(seed, verbose=False)
    module = FineTuneModule(model=model, objective=RewardModeling(lm_weight=lm_weight),
                            optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
                            # Unclipped, as the published numbers were measured.
                            max_grad_norm=None, checkpoint_on_interrupt=False)
    module.configure_model()
    if init_state is not None:
        module.load_state_dict(init_state)
    data = PreferenceDataModule(train_data=pairs_file, batch_size=batch_size, max_length=max_length, seed=seed)
    quiet_trainer(steps).fit(module, data)
    module.eval()
    return module


def export_and_load_scorer(module, folder: Path):
    """Export ``module`` as a sequence-classification folder and return the scorer that reads it."""
    from ift.callbacks import export_reward_model
    from ift.rewards import RewardModelScore

    export_reward_model(module, str(folder))
    return RewardModelScore(str(folder), batch_size=64, device="cpu")


def pairwise_accuracy(scorer, pairs: Sequence[Dict[str, Any]]) -> float:
    """Share of ``pairs`` whose chosen response the scorer rates above the rejected one."""
    prompts = [pair["prompt"] for pair in pairs]
    chosen = scorer(prompts, [pair["chosen"] for pair in pairs], list(pairs))
    rejected = scorer(prompts, [pair["rejected"] for pair in pairs], list(pairs))
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


def best_of_n_accuracy(scorer, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                       correct: Sequence[Sequence[bool]]) -> float:
    """Share of prompts whose highest-scored candidate is correct (ties: the first candidate)."""
    picked: List[bool] = []
    for prompt, texts, right in zip(prompts, candidates, correct):
        scores = scorer([prompt] * len(texts), list(texts), [{} for _ in texts])
        picked.append(right[max(range(len(texts)), key=lambda index: scores[index])])
    return sum(picked) / len(picked)
