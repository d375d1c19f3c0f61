"""LightningModules: the policy holder, and the sharding strategy it is tested with."""

from ift.modules.finetune import FineTuneModule
from ift.core.model_factory import MODEL_PRESETS, build_policy, build_tokenizer
from ift.modules.sharding import FSDP

__all__ = ["FSDP", "FineTuneModule", "MODEL_PRESETS", "build_policy", "build_tokenizer"]
