"""Data modules and tasks."""

from ift.data.arithmetic import ArithmeticDataModule
from ift.data.datamodule import ExamplesDataModule, PromptResponseDataModule
from ift.data.records import DataFormatError
from ift.data.tokenizer import build_char_tokenizer

__all__ = ["ArithmeticDataModule", "ExamplesDataModule", "PromptResponseDataModule", "DataFormatError", "build_char_tokenizer"]
