"""Base of the built-in tasks whose problems come from a seeded generator (arithmetic, code).

One pool of distinct problems is drawn once and cut into the validation, test and training
splits in that order, so no prompt is in two splits and the held-out problems do not change
when ``num_train`` does.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ift.data.datamodule import ExamplesDataModule
from ift.data.records import Record, named_records


class GeneratedTaskDataModule(ExamplesDataModule):
    """Splits of generated problems; a subclass says how to draw them (:meth:`generate`).

    Args:
        num_train: training problems.
        num_val: held-out problems (never in the training set).
        num_test: test problems (disjoint from both).
        task_seed: seed of the problem generator.
        task: the generator's own arguments, passed to :meth:`generate`.
        **loader_kwargs: the :class:`ExamplesDataModule` arguments (batch sizes, tokenizer, ...).
    """

    #: Names the records in error messages and reports: ``<task_name>[<split>]#<index>``.
    task_name = "generated"

    def __init__(self, num_train: int, num_val: int, num_test: int, task_seed: int,
                 task: Dict[str, Any], **loader_kwargs: Any):
        super().__init__(**loader_kwargs)
        self.task = dict(task)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.task_seed = task_seed
        self._examples: Optional[Dict[str, List[Dict[str, Any]]]] = None

    def generate(self, count: int) -> List[Dict[str, Any]]:
        """``count`` distinct problems, deterministic in ``self.task_seed`` and ``self.task``."""
        raise NotImplementedError

    def all_examples(self) -> Dict[str, List[Dict[str, Any]]]:
        """The three splits, drawn once from one pool: no prompt is in two splits."""
        if self._examples is None:
            pool = self.generate(sum(self.sizes.values()))
            val, test = self.sizes["val"], self.sizes["test"]
            self._examples = {"val": pool[:val], "test": pool[val: val + test], "train": pool[val + test:]}
        return self._examples

    def load_examples(self, split: str) -> Optional[List[Record]]:
        return named_records(self.task_name, split, self.all_examples()[split])
