"""The Frozen Lake environment's reward as a reward class (chosen in YAML by class path)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ift.data.frozen_lake import frozen_lake_reward
from ift.rewards.base import Reward


class FrozenLakeReward(Reward):
    """1.0 if the response's actions, executed on the map written in the prompt, reach the
    goal, else 0.0 (Gymnasium's reward; see :meth:`ift.data.frozen_lake.FrozenLakeTask.run`:
    a hole, a non-action character or running out of actions on the ice scores 0)."""

    def __call__(self, prompts: List[str], responses: List[str], examples: Optional[List[Dict[str, Any]]] = None) -> List[float]:
        return frozen_lake_reward(prompts, responses, examples)
