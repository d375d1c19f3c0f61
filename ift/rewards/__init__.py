"""Reward functions: ``(prompts, responses, examples) -> list[float]``.

``RewardModelScore`` reads a local folder's config when built (to check it) and loads the model when it first scores.
"""

from ift.rewards.answer import AnswerMatchReward, answers_match, extract_answer, extract_triggered_answer
from ift.rewards.code import CodeTestsReward, extract_code
from ift.rewards.base import (
    Reward,
    RewardScores,
    RewardTimeoutError,
    RewardTimeoutWarning,
    reward_name,
    score_safely,
)
from ift.rewards.reward_model import RewardModelScore
from ift.rewards.sandbox import SandboxResult, run_in_sandbox

__all__ = [
    "AnswerMatchReward",
    "CodeTestsReward",
    "Reward",
    "RewardModelScore",
    "RewardScores",
    "RewardTimeoutError",
    "SandboxResult",
    "RewardTimeoutWarning",
    "answers_match",
    "extract_answer",
    "extract_triggered_answer",
    "extract_code",
    "run_in_sandbox",
    "reward_name",
    "score_safely",
]
