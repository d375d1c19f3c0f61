"""Where a language model is asked for its action distribution: one text per state.

The text of a state ``s`` is the prompt followed by the shortest action string from ``S``
that reaches ``s`` (ties broken L < D < R < U at each step). Unlike
:meth:`~ift.tasks.frozen_lake.env.FrozenLakeTask.state_prefixes` (non-terminal states only),
holes and the goal are included here, reached by their shortest path: the paper's metric
covers every state of the map.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Dict, List

import numpy as np

from ift.tasks.frozen_lake.distributions import probs_at_texts
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import ACTIONS


def readable_prefixes(task: FrozenLakeTask) -> Dict[int, str]:
    """``{state: shortest action prefix from S}`` for every state a path from ``S`` reaches,
    holes and the goal included (they end a path, so nothing is read beyond them)."""
    prefixes = {task.start_state: ""}
    queue = deque([task.start_state])
    while queue:
        state = queue.popleft()
        if task.is_terminal(state):
            continue
        for action in range(4):
            nxt, _, _ = task.step(state, action)
            if nxt not in prefixes:
                prefixes[nxt] = prefixes[state] + ACTIONS[action]
                queue.append(nxt)
    return dict(sorted(prefixes.items()))


def readable_texts(task: FrozenLakeTask) -> Dict[int, str]:
    """``{state: prompt + prefix}``: the text after which the model's next action is read."""
    prompt = task.prompt()
    return {state: prompt + prefix for state, prefix in readable_prefixes(task).items()}


def read_text_policy(task: FrozenLakeTask, next_action_probs: Callable[[List[str]], Any]) -> Dict[int, np.ndarray]:
    """``{state: probabilities over L, D, R, U}`` of a batched text policy at every readable state
    (rows renormalised to sum to 1)."""
    return probs_at_texts(readable_texts(task), next_action_probs, "read_text_policy")
