"""Reward functions: ``(prompts, responses, examples) -> list[float]``.

``RewardModelScore`` imports transformers only when it first scores.
"""

from ift.rewards.answer import AnswerMatchReward, answers_match, extract_answer
from ift.rewards.base import Reward, RewardTimeoutError, reward_name, score_safely
from ift.rewards.reward_model import RewardModelScore

__all__ = [
    "AnswerMatchReward",
    "Reward",
    "RewardModelScore",
    "RewardTimeoutError",
    "answers_match",
    "extract_answer",
    "reward_name",
    "score_safely",
]
