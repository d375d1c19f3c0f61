"""Data modules: examples in, padded batches out. One base class, one subclass per source."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Dict, List, Optional, Union

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from ift.data.collate import Collator
from ift.data.encoding import SkipExample, encode_example
from ift.data.sampler import EpochSeededSampler, ResumableDataLoader
from ift.data.records import DataFormatError, Record, read_records, require_keys

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class EncodedDataset(Dataset):
    """A list of encoded examples."""

    def __init__(self, items: List[Dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.items[index]


class ExamplesDataModule(pl.LightningDataModule):
    """Base data module: subclasses say where examples come from (:meth:`load_examples`).

    Examples are dicts with ``prompt`` and any of ``response``, ``chosen``/``rejected``,
    ``answer``. Unusable examples (empty response, too long) are skipped, counted and
    reported once per setup in the log and in :attr:`skipped`.

    Args:
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (defaults to ``batch_size``).
        max_length: longest tokenized prompt + response; prompts are cut from the left.
        use_chat_template: render prompts with the tokenizer's chat template.
        padding_side: side of the padding of training sequences (prompts for generation are always left-padded).
        num_workers: DataLoader worker processes.
        seed: seed of the training shuffle.
        tokenizer: tokenizer to use; None takes the one of the FineTuneModule it trains.
    """

    def __init__(
        self,
        batch_size: int = 16,
        eval_batch_size: Optional[int] = None,
        max_length: int = 256,
        use_chat_template: bool = False,
        padding_side: str = "right",
        num_workers: int = 0,
        seed: int = 0,
        tokenizer: Optional[Union[str, PreTrainedTokenizerBase]] = None,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_length = max_length
        self.use_chat_template = use_chat_template
        self.padding_side = padding_side
        self.num_workers = num_workers
        self.seed = seed
        self._tokenizer_spec = tokenizer
        self.tokenizer: Optional[PreTrainedTokenizerBase] = None
        self.datasets: Dict[str, EncodedDataset] = {}
        self.skipped: Dict[str, Counter] = {}
        # The first few skipped examples of each split: (location, reason), for the reports.
        self.skipped_examples: Dict[str, List[Any]] = {}

    # Subclasses implement this -------------------------------------------------------
    def load_examples(self, split: str) -> Optional[List[Record]]:
        """``[(location, example), ...]`` for ``split`` (train/val/test), or None if absent."""
        raise NotImplementedError

    # Lightning hooks -------------------------------------------------------------------
    def resolve_tokenizer(self) -> PreTrainedTokenizerBase:
        if isinstance(self._tokenizer_spec, PreTrainedTokenizerBase):
            return self._tokenizer_spec
        if isinstance(self._tokenizer_spec, str):
            from ift.core.model_factory import build_tokenizer

            return build_tokenizer(self._tokenizer_spec, self._tokenizer_spec)
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        if module is None or getattr(module, "tokenizer", None) is None:
            raise RuntimeError(
                f"{type(self).__name__} has no tokenizer: pass tokenizer=... or train it with a FineTuneModule"
            )
        return module.tokenizer

    def setup(self, stage: Optional[str] = None) -> None:
        if self.tokenizer is None:
            self.tokenizer = self.resolve_tokenizer()
        for split in SPLITS:
            if split in self.datasets:
                continue
            records = self.load_examples(split)
            if records is None:
                continue
            self.datasets[split] = self.encode(split, records)

    def encode_one(self, example: Dict[str, Any]) -> Dict[str, Any]:
        """Token ids and labels of one normalised example; raise :class:`SkipExample` if unusable.

        Subclasses with other formats (chat, preference pairs) override this."""
        return encode_example(self.tokenizer, example, self.max_length, self.use_chat_template)

    def encode(self, split: str, records: List[Record]) -> EncodedDataset:
        items, skipped, first_skipped = [], Counter(), []
        for location, example in records:
            try:
                items.append(self.encode_one(example))
            except SkipExample as reason:
                skipped[str(reason)] += 1
                if len(first_skipped) < 5:
                    first_skipped.append((location, str(reason)))
        self.skipped[split] = skipped
        self.skipped_examples[split] = first_skipped
        if skipped:
            log.warning("%s %s split: skipped %d of %d examples: %s", type(self).__name__, split,
                        sum(skipped.values()), len(records), dict(skipped))
        if not items:
            raise DataFormatError(f"{type(self).__name__}: no usable {split} example (skipped: {dict(skipped)})")
        return EncodedDataset(items)

    def collator(self) -> Collator:
        return Collator(self.tokenizer.pad_token_id, self.padding_side)

    def train_dataloader(self) -> DataLoader:
        # Resumable: a checkpoint written mid-epoch resumes with the batches the epoch had left.
        dataset = self.datasets["train"]
        return ResumableDataLoader(dataset, batch_size=self.batch_size,
                                   sampler=EpochSeededSampler(len(dataset), self.seed), collate_fn=self.collator(),
                                   num_workers=self.num_workers, progress=self.train_batches_processed)

    def train_batches_processed(self) -> Optional[int]:
        """Batches of the current training epoch that the Trainer has processed (None without one)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def _eval_loader(self, split: str):
        if split not in self.datasets:
            return []
        return DataLoader(self.datasets[split], batch_size=self.eval_batch_size, shuffle=False,
                          collate_fn=self.collator(), num_workers=self.num_workers)

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test" if "test" in self.datasets else "val")


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


class PromptResponseDataModule(SourceDataModule):
    """Prompt/response (and optional answer or chosen/rejected) examples from files or hubs.

    Args:
        train_data: see :class:`SourceDataModule` (as are the split, ``dataset_kwargs`` and
            ``max_examples`` arguments).
        prompt_key: field holding the prompt.
        response_key: field holding the response (None: prompts only, e.g. for PPO).
        answer_key: field holding a reference answer for rewards/accuracy (optional).
        chosen_key: field of the preferred response in preference data (optional).
        rejected_key: field of the rejected response in preference data (optional).
        batch_size: see :class:`ExamplesDataModule` (as are the other arguments).
    """

    def __init__(
        self,
        train_data: str,
        prompt_key: str = "prompt",
        response_key: Optional[str] = "response",
        answer_key: Optional[str] = None,
        chosen_key: Optional[str] = None,
        rejected_key: Optional[str] = None,
        **kwargs: Any,
    ):
        super().__init__(train_data, **kwargs)
        self.keys = {"prompt": prompt_key, "response": response_key, "answer": answer_key,
                     "chosen": chosen_key, "rejected": rejected_key}

    def normalise(self, location: str, record: Dict[str, Any]) -> Dict[str, Any]:
        """Map the configured columns onto ``prompt``/``response``/``answer``/``chosen``/``rejected``."""
        wanted = [key for key in self.keys.values() if key is not None and key != self.keys["answer"]]
        require_keys(location, record, wanted)
        example = {name: record[key] for name, key in self.keys.items() if key is not None and key in record}
        example["prompt"] = str(example["prompt"])
        return example
