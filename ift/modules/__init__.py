"""LightningModules: the policy holder."""

from ift.modules.finetune import FineTuneModule
from ift.modules.model_factory import MODEL_PRESETS, build_policy, build_tokenizer

__all__ = ["FineTuneModule", "MODEL_PRESETS", "build_policy", "build_tokenizer"]
