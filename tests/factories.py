"""Factories the tests share: a quiet CPU Trainer, the arithmetic task at tiny size, a
FineTuneModule on ``tiny-gpt2``, PPO settings for short rollouts, a callback recording the
logged step metrics, and the encoding and
padding of preference pairs that the preference-objective tests build batches with.

Plain functions, so that a test can pass its own arguments; a file whose settings differ
on purpose keeps a small wrapper around them. ``conftest.py`` runs every test in its own
``tmp_path``, so a Trainer's default root (the working directory) is temporary too.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch

from ift.core.constants import IGNORE_INDEX
from ift.modules import FineTuneModule
from ift.tasks.arithmetic import ArithmeticDataModule

# One CPU device; no logger, checkpoints, progress bar, model summary or sanity validation.
QUIET_TRAINER: Dict[str, Any] = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)

# PPO with a few-token rollout: 4 new tokens, 2 samples per prompt, mini-batches of 4, one epoch.
PPO_SETTINGS: Dict[str, Any] = dict(max_new_tokens=4, samples_per_prompt=2, mini_batch_size=4, ppo_epochs=1)


def quiet_trainer(root: Optional[Any] = None, callbacks: Iterable[pl.Callback] = (), **overrides: Any) -> pl.Trainer:
    """A one-device CPU Trainer that writes and prints nothing unless asked (``QUIET_TRAINER``).

    ``root`` becomes ``default_root_dir`` (when not given: the working directory, which is
    the test's ``tmp_path``); ``overrides`` replace or add any Trainer option."""
    options = dict(QUIET_TRAINER)
    if root is not None:
        options["default_root_dir"] = str(root)
    if callbacks:
        options["callbacks"] = list(callbacks)
    options.update(overrides)
    return pl.Trainer(**options)


def tiny_arithmetic(num_train: int = 16, batch_size: int = 4, cls: type = ArithmeticDataModule,
                    **overrides: Any) -> ArithmeticDataModule:
    """The arithmetic task at tiny size: ``num_train`` training examples (16) in batches of
    ``batch_size`` (4), 4 validation and 4 test examples, operands up to 19, ``+`` and ``-``.
    ``cls`` is the data module class; ``overrides`` replace any of its arguments."""
    options = dict(num_train=num_train, num_val=4, num_test=4, max_operand=19, operators="+-", batch_size=batch_size)
    options.update(overrides)
    return cls(**options)


def tiny_module(objective: Any = None, seed: int = 0, cls: type = FineTuneModule, **kwargs: Any) -> FineTuneModule:
    """A FineTuneModule (or subclass ``cls``) on the ``tiny-gpt2`` preset with the character
    tokenizer, its weights drawn right after ``torch.manual_seed(seed)``. ``objective`` None
    is the module's default (SFT); ``kwargs`` go to the module."""
    torch.manual_seed(seed)
    return cls(model="tiny-gpt2", objective=objective, **kwargs)


def ppo_settings(**overrides: Any) -> Dict[str, Any]:
    """PPO keyword arguments for short rollouts (``PPO_SETTINGS``), ``overrides`` on top."""
    return {**PPO_SETTINGS, **overrides}


def encode(tokenizer: Any, prompt: str, response: str) -> Tuple[List[int], List[int]]:
    """Prompt + response + EOS, as the preference data module encodes a string pair:
    ``(input ids, labels)`` with the prompt's labels ignored."""
    p = tokenizer(prompt)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p + r, [IGNORE_INDEX] * len(p) + r


def pad_rows(rows: Sequence[Sequence[int]], value: int, side: str, width: int) -> torch.Tensor:
    """``rows`` as one ``(len(rows), width)`` long tensor, filled with ``value`` on the
    ``side`` (``"right"`` or ``"left"``) each row leaves free."""
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if side == "right":
            out[i, :len(row)] = torch.tensor(row)
        else:
            out[i, width - len(row):] = torch.tensor(row)
    return out


#: Prompt, chosen, rejected: pairs of unequal lengths for the character tokenizer.
PREFERENCE_PAIRS = [("ab=", "xyz", "q"), ("hello:", "ok", "no no no"), ("1+1=", "2", "11")]


def preference_batch(tokenizer: Any, pairs: Sequence[Tuple[str, str, str]] = PREFERENCE_PAIRS, side: str = "right",
                     extra: int = 0) -> Dict[str, torch.Tensor]:
    """A preference batch of ``pairs`` (prompt, chosen, rejected) as the preference data module
    encodes it, each side padded on ``side`` to its longest row plus ``extra`` columns."""
    batch = {}
    for index, name in ((1, "chosen"), (2, "rejected")):
        encoded = [encode(tokenizer, pair[0], pair[index]) for pair in pairs]
        width = max(len(ids) for ids, _ in encoded) + extra
        batch[f"{name}_input_ids"] = pad_rows([ids for ids, _ in encoded], tokenizer.pad_token_id, side, width)
        batch[f"{name}_labels"] = pad_rows([labels for _, labels in encoded], IGNORE_INDEX, side, width)
        batch[f"{name}_attention_mask"] = pad_rows([[1] * len(ids) for ids, _ in encoded], 0, side, width)
    return batch


class MetricsLog(pl.Callback):
    """Every training batch's logged step metrics (``_step`` suffix removed), with the
    ``global_step`` after it."""

    def __init__(self):
        self.rows: List[Dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        row = {k[: -len("_step")]: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("_step")}
        row["global_step"] = trainer.global_step
        self.rows.append(row)
