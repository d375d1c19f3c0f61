"""A data module base for examples read from files or ``datasets.load_dataset``.

Each split has a source: a ``.jsonl`` / ``.json`` / ``.parquet`` path (read by
:mod:`ift.data.records`, which names the file and line of a bad record) or a name or
folder for ``datasets.load_dataset`` (``*_split`` picks the split, ``dataset_kwargs``
holds the rest: a config name, ``data_files``, a revision). Subclasses turn one raw record
into a normalised example (:meth:`SourceDataModule.normalise`) and encode it
(:meth:`~ift.data.datamodule.ExamplesDataModule.encode_one`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ift.data.datamodule import ExamplesDataModule
from ift.data.records import Record, read_records


class SourceDataModule(ExamplesDataModule):
    """Base of the file/hub data modules (chat, preference pairs).

    Args:
        train_data: training source: a ``.jsonl``/``.json``/``.parquet`` file or a ``datasets`` name/folder.
        val_data: validation source (optional).
        test_data: test source (optional).
        train_split: split of ``train_data`` when it is a dataset name.
        val_split: split of ``val_data`` when it is a dataset name.
        test_split: split of ``test_data`` when it is a dataset name.
        dataset_kwargs: extra arguments of ``datasets.load_dataset`` (e.g. ``{name: main}``,
            ``{data_files: {train: a.jsonl}}`` with ``train_data: json``).
        max_examples: use only the first N records of each split (None: all).
    """

    def __init__(
        self,
        train_data: str,
        val_data: Optional[str] = None,
        test_data: Optional[str] = None,
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str = "test",
        dataset_kwargs: Optional[Dict[str, Any]] = None,
        max_examples: Optional[int] = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if max_examples is not None and max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}")
        self.sources = {"train": (train_data, train_split), "val": (val_data, val_split), "test": (test_data, test_split)}
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.max_examples = max_examples

    def load_examples(self, split: str) -> Optional[List[Record]]:
        source, hf_split = self.sources[split]
        if source is None:
            return None
        records = read_records(source, hf_split, **self.dataset_kwargs)
        if self.max_examples is not None:
            records = records[: self.max_examples]
        return [(location, self.normalise(location, record)) for location, record in records]

    def normalise(self, location: str, record: Dict[str, Any]) -> Dict[str, Any]:
        """The example this data module encodes, from one raw record (columns mapped)."""
        raise NotImplementedError
