"""Objectives: what the policy learns from. Chosen in YAML by ``class_path`` (short names work)."""

from ift.core.subclasses import all_subclasses
from ift.objectives.base import Objective
from ift.objectives.cispo import CISPO
from ift.objectives.contract import Capabilities, StepContext, StepResult
from ift.objectives.critic_free import CriticFreeRL, GroupRollout
from ift.objectives.dapo import DAPO
from ift.objectives.dpo import DPO
from ift.objectives.dr_grpo import DrGRPO
from ift.objectives.grpo import GRPO
from ift.objectives.gspo import GSPO
from ift.objectives.ift import IFT
from ift.objectives.orpo import ORPO
from ift.objectives.kl_control import AdaptiveKLController, FixedKLController
from ift.objectives.ppo import PPO, PPORollout
from ift.objectives.recipes import Mix, Sequential, Stage
from ift.objectives.reinforce_pp import ReinforcePlusPlus
from ift.objectives.reward_modeling import RewardHead, RewardModeling
from ift.objectives.rloo import RLOO
from ift.objectives.rollout import Rollout, RolloutLoss, RolloutObjective, ScoredSamples
from ift.objectives.sft import SFT

__all__ = ["Objective", "Capabilities", "StepContext", "StepResult", "RolloutObjective", "SFT", "IFT"]
__all__ += ["DPO", "ORPO", "RewardModeling", "RewardHead"]
__all__ += ["RolloutLoss", "ScoredSamples", "PPORollout"]
__all__ += ["CriticFreeRL", "GroupRollout", "GRPO", "DrGRPO", "DAPO", "GSPO", "CISPO", "RLOO", "ReinforcePlusPlus"]
__all__ += ["PPO", "Rollout", "Sequential", "Stage", "Mix", "FixedKLController", "AdaptiveKLController"]


def available_objectives() -> list[str]:
    """Names of every objective class known to the package (for error messages)."""
    # Private bases and declared bases (RolloutObjective) are not objectives of their own.
    return sorted({sub.__name__ for sub in all_subclasses(Objective)
                   if not sub.__name__.startswith("_") and not vars(sub).get("is_base", False)})


def default_objective() -> Objective:
    """The objective a module trains with when none is given: plain :class:`SFT`."""
    return SFT()
