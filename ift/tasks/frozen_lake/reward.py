"""The Frozen Lake environment's reward, as a function and as a reward class (chosen in YAML
by class path, ``ift.tasks.frozen_lake.FrozenLakeReward``)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ift.rewards.base import Reward
from ift.tasks.frozen_lake.env import FrozenLakeTask


def frozen_lake_reward(prompts: List[str], responses: List[str], examples: Optional[List[Dict[str, Any]]] = None) -> List[float]:
    """A reward function (the ``ift.rewards`` protocol): the environment's reward of each
    response on the map written in its prompt (1.0 if it reaches ``G``, else 0.0)."""
    tasks: Dict[str, FrozenLakeTask] = {}
    scores = []
    for prompt, response in zip(prompts, responses):
        if prompt not in tasks:
            tasks[prompt] = FrozenLakeTask.from_prompt(prompt)
        scores.append(tasks[prompt].score(response))
    return scores


class FrozenLakeReward(Reward):
    """1.0 if the response's actions, executed on the map written in the prompt, reach the
    goal, else 0.0 (Gymnasium's reward; see :meth:`ift.tasks.frozen_lake.env.FrozenLakeTask.run`:
    a hole, a non-action character or running out of actions on the ice scores 0)."""

    def __call__(self, prompts: List[str], responses: List[str], examples: Optional[List[Dict[str, Any]]] = None) -> List[float]:
        return frozen_lake_reward(prompts, responses, examples)
