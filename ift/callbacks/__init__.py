"""Lightning callbacks: sample tables, Hugging Face export, data reports, rollout progress, images.

Use them from YAML (``trainer.callbacks``) by class path, e.g. ``ift.callbacks.SampleLogger``.
Held-out answer accuracy with greedy decoding (``val/accuracy``) is the callback
``ift.callbacks.AnswerAccuracy`` (:mod:`ift.callbacks.answer_accuracy`); the module has no
evaluation settings of its own.
"""

from ift.callbacks.answer_accuracy import AnswerAccuracy
from ift.callbacks.data_report import SkippedExamplesReport
from ift.callbacks.export import ExportPretrained, export_pretrained
from ift.callbacks.image_logger import LogImage, log_image_file
from ift.callbacks.paths import run_dir
from ift.callbacks.reward_export import export_reward_model, reward_model_from_policy
from ift.callbacks.rollout_progress import RolloutProgress, rollout_progress
from ift.callbacks.sample_logger import SampleLogger
from ift.callbacks.save_config import SaveRunConfig

__all__ = [
    "AnswerAccuracy",
    "ExportPretrained",
    "LogImage",
    "RolloutProgress",
    "SampleLogger",
    "SaveRunConfig",
    "SkippedExamplesReport",
    "export_pretrained",
    "export_reward_model",
    "reward_model_from_policy",
    "log_image_file",
    "rollout_progress",
    "run_dir",
]
