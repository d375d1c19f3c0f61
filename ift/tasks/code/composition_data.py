"""The atomic/synthetic code task as a data module: one training mix, held-out and target splits."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ift.data.datamodule import ExamplesDataModule
from ift.data.records import Record, named_records
from ift.tasks.code.composition_split import CompositionSplitSettings, composition_splits

#: The training mixes of the study's first finding.
TRAIN_MIXES = ("atomic", "atomic+synthetic", "synthetic")


class CompositionCodeDataModule(ExamplesDataModule):
    """Atomic and synthetic functions (:mod:`ift.tasks.code.atomic`) to write in Python,
    scored by their tests with :class:`ift.rewards.CodeTestsReward`.

    Splits: ``train`` is the mix; ``val`` is the held-out synthetic compositions (of the
    training lengths, none trained on); ``test`` is the target domain (longer compositions).

    Args:
        train_mix: ``atomic`` (every atomic function), ``atomic+synthetic`` (those and the first
            ``num_synthetic`` synthetic compositions) or ``synthetic`` (the synthetic ones only).
        num_synthetic: synthetic training compositions in the mix (at most ``num_synthetic_train``).
        split_seed: seed of the compositions and their tests (:class:`CompositionSplitSettings`).
        num_synthetic_train: synthetic compositions drawn for training (the most any mix uses).
        num_held_out: held-out synthetic compositions (the ``val`` split).
        num_target: target-domain compositions (the ``test`` split).
        train_lengths: atomic functions per training and held-out composition.
        target_length: atomic functions per target-domain composition.
        num_tests: assert lines per problem.
        min_input: smallest test input.
        max_input: largest test input.
        batch_size: see :class:`ExamplesDataModule` (as are the other arguments).
    """

    task_name = "composition_code"

    def __init__(
        self,
        train_mix: str = "atomic+synthetic",
        num_synthetic: int = 100,
        split_seed: int = 0,
        num_synthetic_train: int = 400,
        num_held_out: int = 100,
        num_target: int = 100,
        train_lengths: Sequence[int] = (2, 3),
        target_length: int = 4,
        num_tests: int = 5,
        min_input: int = -20,
        max_input: int = 20,
        batch_size: int = 32,
        eval_batch_size: Optional[int] = None,
        max_length: int = 256,
        padding_side: str = "right",
        num_workers: int = 0,
        seed: int = 0,
        tokenizer: Optional[Any] = None,
    ):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, max_length=max_length,
                         padding_side=padding_side, num_workers=num_workers, seed=seed, tokenizer=tokenizer)
        if train_mix not in TRAIN_MIXES:
            raise ValueError(f"CompositionCodeDataModule: unknown train_mix {train_mix!r}; choose from {TRAIN_MIXES}")
        self.split_settings = CompositionSplitSettings(
            split_seed=split_seed, num_synthetic_train=num_synthetic_train, num_held_out=num_held_out,
            num_target=num_target, train_lengths=tuple(train_lengths), target_length=target_length,
            num_tests=num_tests, min_input=min_input, max_input=max_input)
        uses_synthetic = train_mix != "atomic"
        if uses_synthetic and not 0 <= num_synthetic <= num_synthetic_train:
            raise ValueError(f"CompositionCodeDataModule: num_synthetic must be in [0, num_synthetic_train="
                             f"{num_synthetic_train}], got {num_synthetic}; raise num_synthetic_train")
        if train_mix == "synthetic" and num_synthetic == 0:
            raise ValueError("CompositionCodeDataModule: train_mix 'synthetic' with num_synthetic 0 trains on nothing")
        self.train_mix, self.num_synthetic = train_mix, num_synthetic if uses_synthetic else 0
        self._splits: Optional[Dict[str, List[Dict[str, Any]]]] = None

    def split_examples(self) -> Dict[str, List[Dict[str, Any]]]:
        """``train``/``val``/``test`` examples, drawn once."""
        if self._splits is None:
            parts = composition_splits(self.split_settings)
            train = (parts["atomic"] if self.train_mix != "synthetic" else []) + parts["synthetic_train"][:self.num_synthetic]
            self._splits = {"train": train, "val": parts["held_out"], "test": parts["target"]}
        return self._splits

    def load_examples(self, split: str) -> Optional[List[Record]]:
        return named_records(self.task_name, split, self.split_examples()[split])


__all__ = ["CompositionCodeDataModule", "TRAIN_MIXES"]
