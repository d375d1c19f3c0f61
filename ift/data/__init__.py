"""Data modules (JSONL, chat, preference pairs), collation and encoding; the built-in tasks' data
modules live in their folders under :mod:`ift.tasks`."""

from ift.data.chat import ChatDataModule
from ift.data.datamodule import ExamplesDataModule, PromptResponseDataModule, SourceDataModule
from ift.data.preference import PreferenceDataModule
from ift.data.records import DataFormatError
from ift.core.tokenizer import build_char_tokenizer

__all__ = ["ChatDataModule", "PreferenceDataModule", "SourceDataModule", "ExamplesDataModule", "PromptResponseDataModule", "DataFormatError", "build_char_tokenizer"]
