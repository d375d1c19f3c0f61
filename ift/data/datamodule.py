"""Data modules: examples in, padded batches out. One base class, one subclass per source."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple, Union

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from ift.data.collate import Collator
from ift.data.encoding import encode_example
from ift.data.fields import expect_answer, expect_text
from ift.data.fit_checks import RESPONSES, check_context, check_objective_fit, context_limit, objective_needs
from ift.data.sampler import EpochSeededSampler, ResumableDataLoader
from ift.data.skip_tally import encode_records
from ift.data.source_paths import data_path_problems, describe_problems
from ift.data.records import DataFormatError, DataMismatchError, Record, file_format, read_records, require_keys

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


#: The answer column the data modules read when the records have it (``answer_key``'s default).
DEFAULT_ANSWER_KEY = "answer"
# Fields whose presence must be the same in every example of a split: the collator shapes a
# batch after its first example, so a mixture would drop fields or fail steps later.
_UNIFORM_FIELDS = {"input_ids": "a response", "chosen_input_ids": "a chosen response",
                   "rejected_input_ids": "a rejected response", "answer": "an answer"}


class EncodedDataset(Dataset):
    """A list of encoded examples and where each came from (``file:line``)."""

    def __init__(self, items: List[Dict[str, Any]], locations: Optional[List[str]] = None):
        self.items = items
        self.locations = locations if locations is not None else [f"#{index}" for index in range(len(items))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.items[index]


def check_same_fields(split: str, first: Tuple[str, Dict[str, Any]], other: Tuple[str, Dict[str, Any]]) -> None:
    """Stop when an example has a field (a response, an answer) that the split's first
    example lacks, or the other way round: a batch is shaped after its first example."""
    for field, what in _UNIFORM_FIELDS.items():
        if (field in first[1]) != (field in other[1]):
            has, lacks = (first, other) if field in first[1] else (other, first)
            raise DataFormatError(
                f"{lacks[0]}: this {split} example has no {what.split(' ', 1)[1]}, but {has[0]} has {what}: every "
                f"example of a split must have the same fields; give each example {what}, or none"
            )


def check_positive(owner: str, **sizes: Optional[int]) -> None:
    """Stop at construction, naming the config key, when a size is 0 or negative: ``max_length 0``
    would otherwise skip every example as "too long", and ``batch_size 0`` fail in the DataLoader."""
    for name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{owner}: {name} must be a whole number >= 1, got {value!r}; "
                             f"set data.init_args.{name} (--data.init_args.{name} N)")


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
        check_positive(type(self).__name__, batch_size=batch_size, eval_batch_size=eval_batch_size, max_length=max_length)
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
        # [(objective name, what it trains on)], learnt from the trained module at setup.
        self.objective_needs: List[Tuple[str, str]] = []

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

    def trained_module(self) -> Any:
        """The LightningModule this data module feeds (None outside a Trainer)."""
        trainer = getattr(self, "trainer", None)
        return getattr(trainer, "lightning_module", None) if trainer is not None else None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.tokenizer is None:
            self.tokenizer = self.resolve_tokenizer()
        module = self.trained_module()
        # What the objective trains on, known before loading so that messages can name it.
        self.objective_needs = objective_needs(getattr(module, "objective", None)) if stage in (None, "fit") else []
        for split in SPLITS:
            if split in self.datasets:
                continue
            records = self.load_examples(split)
            if records is None:
                continue
            self.datasets[split] = self.encode(split, records)
        if "train" in self.datasets:
            check_objective_fit(self.objective_needs, self.datasets["train"].items, self.describe_source("train"))
        check_context(self.max_length, {split: (data.items, data.locations) for split, data in self.datasets.items()},
                      context_limit(module))

    def describe_source(self, split: str) -> str:
        """The data of ``split`` as the user configured it, for messages."""
        return f"the {split} data of {type(self).__name__}"

    def encode_one(self, example: Dict[str, Any]) -> Dict[str, Any]:
        """Token ids and labels of one normalised example; raise :class:`SkipExample` if unusable.

        Subclasses with other formats (chat, preference pairs) override this."""
        return encode_example(self.tokenizer, example, self.max_length, self.use_chat_template)

    def encode(self, split: str, records: List[Record]) -> EncodedDataset:
        encoded, tally = encode_records(records, lambda location, example: self.encode_one(example))
        for other in encoded[1:]:
            check_same_fields(split, encoded[0], other)
        self.skipped[split], self.skipped_examples[split] = tally.counts, tally.first
        if tally:
            log.warning("%s %s split: skipped %d of %d examples: %s", type(self).__name__, split,
                        tally.total, len(records), dict(tally.counts))
        if not encoded:
            raise DataFormatError(f"{self.describe_source(split)}: no usable {split} example ({tally.describe()})")
        return EncodedDataset([item for _, item in encoded], [location for location, _ in encoded])

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
        train_data: training source: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file or a ``datasets``
            name/folder (a path of another format is refused with the accepted ones).
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

    def setup(self, stage: Optional[str] = None) -> None:
        # Every split's paths before any is read: a missing val file would otherwise be found
        # only after the train split was tokenized, and a missing data_files entry reported
        # by datasets as a missing train_data.
        problems = data_path_problems({split: source for split, (source, _) in self.sources.items()},
                                      self.dataset_kwargs)
        if problems:
            raise FileNotFoundError(f"{type(self).__name__}: {describe_problems(problems)}")
        super().setup(stage)

    def load_examples(self, split: str) -> Optional[List[Record]]:
        source, hf_split = self.sources[split]
        if source is None:
            return None
        try:
            records = read_records(source, hf_split, **self.dataset_kwargs)
        except FileNotFoundError as error:
            if os.path.isdir(source):  # datasets' EmptyDatasetError is a FileNotFoundError too
                raise FileNotFoundError(f"{split}_data {source}: a folder that datasets.load_dataset finds no data file "
                                        f"in ({error}); set data.init_args.{split}_data to a .jsonl/.json/.csv/.parquet "
                                        f"file or a folder of them") from error
            # Which setting names the missing file: a typo in val_data looks like one in train_data.
            raise FileNotFoundError(f"{split}_data {source}: no such file (relative paths start at {os.getcwd()}); "
                                    f"fix data.init_args.{split}_data, or leave it out") from error
        if not records:
            raise DataFormatError(self.empty_source_message(split))
        if self.max_examples is not None:
            records = records[: self.max_examples]
        return [(location, self.normalise(location, record)) for location, record in records]

    def describe_source(self, split: str) -> str:
        source, hf_split = self.sources[split]
        where = source if file_format(source) is not None else f"{source}[{hf_split}]"
        return f"{split}_data {where} ({type(self).__name__})"

    def empty_source_message(self, split: str) -> str:
        """Why an empty source cannot be used, and what one of its records should look like."""
        source, hf_split = self.sources[split]
        suffix = file_format(source)
        example = json.dumps(self.record_example())
        if suffix is None:
            return (f"{split}_data {source}: split {hf_split!r} has no records; each record should look like "
                    f"{example} (set {split}_split to a split that has data)")
        shape = {".jsonl": f"one JSON object per line, e.g. {example}",
                 ".json": f"a JSON list of objects, e.g. [{example}]",
                 ".csv": f"a header row naming the fields ({', '.join(self.record_example())}), then one row per record",
                 ".parquet": f"one row per record with the columns {', '.join(self.record_example())}"}[suffix]
        return f"{split}_data {source} is empty (no records, only blank lines or a header); it should hold {shape}"

    def record_example(self) -> Dict[str, Any]:
        """One record as this data module reads it (its configured column names), for messages."""
        raise NotImplementedError

    def normalise(self, location: str, record: Dict[str, Any]) -> Dict[str, Any]:
        """The example this data module encodes, from one raw record (columns mapped)."""
        raise NotImplementedError

    def answer_of(self, location: str, record: Dict[str, Any], answer_key: Optional[str]) -> Optional[str]:
        """The record's reference answer as text, or None when it has none.

        ``answer_key`` None reads no answers; the default ``answer`` column is read when the
        record has it (every example of a split must then have one, see
        :func:`check_same_fields`); a column named otherwise was asked for, so every record must have it."""
        if answer_key is None:
            return None
        if answer_key == DEFAULT_ANSWER_KEY and record.get(answer_key) in (None, ""):
            return None  # absent, or a table's empty cell: no answer (a mixture stops at encoding)
        if answer_key not in record:
            require_keys(location, record, [answer_key], "Set answer_key to the column with the reference answer "
                         "(data.init_args.answer_key), or null for none.")
        return expect_answer(location, answer_key, record[answer_key], "answer_key")


class PromptResponseDataModule(SourceDataModule):
    """Prompt/response (and optional answer or chosen/rejected) examples from files or hubs.

    Every field is type-checked when the data is loaded: the prompt and the responses are
    strings, the answer a string or a number; anything else stops with ``file:line``.

    Args:
        train_data: see :class:`SourceDataModule` (as are the split, ``dataset_kwargs`` and
            ``max_examples`` arguments).
        prompt_key: field holding the prompt (a string).
        response_key: field holding the response (None: prompts only, e.g. for PPO).
        answer_key: field holding a reference answer for rewards and ``val/accuracy``. The
            default ``answer`` is read when the records have it (then every record of a
            split must have one); another name must be in every record; None reads none.
        chosen_key: field of the preferred response in preference data (optional).
        rejected_key: field of the rejected response in preference data (optional).
        batch_size: see :class:`ExamplesDataModule` (as are the other arguments).
    """

    def __init__(
        self,
        train_data: str,
        prompt_key: str = "prompt",
        response_key: Optional[str] = "response",
        answer_key: Optional[str] = DEFAULT_ANSWER_KEY,
        chosen_key: Optional[str] = None,
        rejected_key: Optional[str] = None,
        **kwargs: Any,
    ):
        super().__init__(train_data, **kwargs)
        self.keys = {"prompt": prompt_key, "response": response_key, "answer": answer_key,
                     "chosen": chosen_key, "rejected": rejected_key}

    def record_example(self) -> Dict[str, Any]:
        return {key: "..." for name, key in self.keys.items() if key is not None and name != "answer"}

    def normalise(self, location: str, record: Dict[str, Any]) -> Dict[str, Any]:
        """Map the configured columns onto ``prompt``/``response``/``answer``/``chosen``/``rejected``,
        each checked for its type."""
        response_key = self.keys["response"]
        if response_key is not None and response_key not in record and {"chosen", "rejected"} <= set(record):
            raise DataMismatchError(self._preference_record_message(location, record))
        for name, key in self.keys.items():
            if key is not None and name != "answer" and key not in record:
                require_keys(location, record, [key], f"Rename the field, or set data.init_args.{name}_key to the "
                             f"field that holds the {name}.")
        example: Dict[str, Any] = {}
        for name, key in self.keys.items():
            if key is None or name == "answer":
                continue
            hint = ("For chat conversations use ift.data.ChatDataModule."
                    if name == "prompt" and isinstance(record[key], (list, tuple)) else "")
            example[name] = expect_text(location, key, record[key], f"{name}_key", hint)
        answer = self.answer_of(location, record, self.keys["answer"])
        if answer is not None:
            example["answer"] = answer
        return example

    def _preference_record_message(self, location: str, record: Dict[str, Any]) -> str:
        objectives = ", ".join(name for name, need in self.objective_needs if need == RESPONSES) or "SFT/IFT"
        return (
            f"{location}: no {self.keys['response']!r} field, but 'chosen' and 'rejected' (keys found: {sorted(record)}): "
            f"this file looks like preference data, which DPO and ORPO train on (data.class_path: "
            f"ift.data.PreferenceDataModule). {objectives} needs a {self.keys['response']!r} per example "
            f"(data.init_args.response_key names the field), or chat 'messages' with ift.data.ChatDataModule; "
            f"for prompts alone (PPO) set data.init_args.response_key: null"
        )
