"""The Frozen Lake environment's reward, as a function and as a reward class (chosen in YAML
by class path, ``ift.tasks.frozen_lake.FrozenLakeReward``).

A response is read the way its example was written (``representation``): an action string
executed on the map of the prompt, or the sequence of states a state policy walked (each
step must be one of the four moves' destinations). 1.0 if it reaches ``G``, else 0.0.

An action string has no stop action (the transformer's outputs are the four moves):
:meth:`FrozenLakeReward.response_ends` tells PPO where each episode ended, so that the moves
sampled after a hole or ``G`` are neither credited nor trained on. A state path ends with the
state policy's own EOS at the terminal state.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ift.rewards.base import Reward
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.state_policy import states_from_text


def state_path_reward(task: FrozenLakeTask, response: str) -> float:
    """1.0 if the states of ``response``, walked from ``S`` one legal move at a time, reach
    ``G`` (a hole, an illegal jump, a non-state character or running out scores 0)."""
    try:
        states = states_from_text(response)
    except ValueError:
        return 0.0
    state = task.start_state
    for nxt in states:
        if nxt not in {task.step(state, action)[0] for action in range(4)}:
            return 0.0
        state = nxt
        if task.is_terminal(state):
            break
    return 1.0 if state == task.goal_state else 0.0


def task_of(prompt: str, example: Optional[Dict[str, Any]], tasks: Dict[str, FrozenLakeTask]) -> Tuple[FrozenLakeTask, bool]:
    """``(task, is_state_path)`` of one response: the map of its example (state responses) or
    the map written in its prompt (action responses), built once per map in ``tasks``."""
    if (example or {}).get("representation") == "states":
        key = example["map"]
        if key not in tasks:
            tasks[key] = FrozenLakeTask(key)
        return tasks[key], True
    if prompt not in tasks:
        tasks[prompt] = FrozenLakeTask.from_prompt(prompt)
    return tasks[prompt], False


def action_episode_ends(prompts: List[str], responses: List[str], examples: Optional[List[Dict[str, Any]]] = None) -> List[Optional[int]]:
    """Per response, the characters of its episode: an action string's moves up to the hole or
    ``G`` it entered (all of it if it never did); None (all) for a state path."""
    tasks: Dict[str, FrozenLakeTask] = {}
    rows = examples if examples is not None else [{} for _ in prompts]
    ends: List[Optional[int]] = []
    for prompt, response, example in zip(prompts, responses, rows):
        task, is_state_path = task_of(prompt, example, tasks)
        ends.append(None if is_state_path else task.run(response).steps)
    return ends


def frozen_lake_reward(prompts: List[str], responses: List[str], examples: Optional[List[Dict[str, Any]]] = None) -> List[float]:
    """A reward function (the ``ift.rewards`` protocol): the environment's reward of each
    response (1.0 if it reaches ``G``, else 0.0), on the map of its example (state
    responses) or written in its prompt (action responses)."""
    tasks: Dict[str, FrozenLakeTask] = {}
    scores = []
    rows = examples if examples is not None else [{} for _ in prompts]
    for prompt, response, example in zip(prompts, responses, rows):
        task, is_state_path = task_of(prompt, example, tasks)
        scores.append(state_path_reward(task, response) if is_state_path else task.score(response))
    return scores


class FrozenLakeReward(Reward):
    """1.0 if the response reaches the goal, else 0.0 (Gymnasium's reward): actions executed on
    the map written in the prompt (see :meth:`ift.tasks.frozen_lake.env.FrozenLakeTask.run`), or
    the states a state policy walked on its example's map (:func:`state_path_reward`)."""

    def __call__(self, prompts: List[str], responses: List[str], examples: Optional[List[Dict[str, Any]]] = None) -> List[float]:
        return frozen_lake_reward(prompts, responses, examples)

    def response_ends(self, prompts: List[str], responses: List[str], examples: Optional[List[Dict[str, Any]]] = None) -> List[Optional[int]]:
        """Where each episode ends (see :func:`action_episode_ends`): PPO trains on no move after it."""
        return action_episode_ends(prompts, responses, examples)
