"""Data modules and tasks."""

from ift.data.arithmetic import ArithmeticDataModule
from ift.data.chat import ChatDataModule
from ift.data.code_task import CodeTaskDataModule
from ift.data.datamodule import ExamplesDataModule, PromptResponseDataModule, SourceDataModule
from ift.data.frozen_lake_data import FrozenLakeDataModule
from ift.data.preference import PreferenceDataModule
from ift.data.records import DataFormatError
from ift.core.tokenizer import build_char_tokenizer

__all__ = ["ChatDataModule", "PreferenceDataModule", "SourceDataModule", "ArithmeticDataModule", "ExamplesDataModule", "PromptResponseDataModule", "DataFormatError", "build_char_tokenizer"]
__all__ += ["FrozenLakeDataModule"]
__all__ += ["CodeTaskDataModule"]
