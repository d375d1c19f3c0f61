"""Which states a policy visits when it acts, and π* on every state of the map.

The paper's "explored grids" are the states an agent visits when it samples episodes from
its policy (not the states whose distribution changed: that is ``moved_states`` in
:mod:`ift.tasks.frozen_lake.metrics`). Episodes are sampled from the policy's state-action
matrix ``{state: probabilities}`` with a fixed seed, so every objective and seed is read
the same way.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Mapping, Optional

import numpy as np

from ift.tasks.frozen_lake.distributions import ActionProbs, distribution_at
from ift.tasks.frozen_lake.env import FrozenLakeTask

#: Episodes sampled to count the explored states, and their seed.
EXPLORATION_EPISODES = 100
EXPLORATION_SEED = 0


def optimal_policy_everywhere(task: FrozenLakeTask) -> Dict[int, np.ndarray]:
    """π* on every state of the map (the paper's state-action matrix covers them all):
    uniform over the optimal actions ``A*(s)``; on holes, the goal and states that cannot
    reach it every action has ``Q* = 0``, so π* is uniform there."""
    policy = {}
    for state in range(task.n_states):
        probs = np.zeros(4)
        best = task.optimal_actions(state)
        probs[list(best)] = 1.0 / len(best)
        policy[state] = probs
    return policy


def sample_visits(task: FrozenLakeTask, action_probs: ActionProbs, episodes: int = EXPLORATION_EPISODES,
                  seed: int = EXPLORATION_SEED, max_steps: int = 0) -> Counter:
    """How often each state is visited over ``episodes`` episodes sampled from ``action_probs``
    (start included; an episode ends in a hole, at the goal or after ``max_steps`` moves,
    default ``2 * n_states``). States the policy has no distribution for end the episode."""
    rng = np.random.default_rng(seed)
    cap = max_steps or 2 * task.n_states
    visits: Counter = Counter()
    for _ in range(episodes):
        state = task.start_state
        visits[state] += 1
        for _ in range(cap):
            if state not in action_probs:
                break
            probs = distribution_at(action_probs, state, "action_probs")
            action = int(rng.choice(4, p=probs / probs.sum()))
            state, _, terminated = task.step(state, action)
            visits[state] += 1
            if terminated:
                break
    return visits


def explored_states(visits: Mapping[int, int]) -> int:
    """The paper's "explored grids": how many distinct states the sampled episodes visited."""
    return sum(1 for count in visits.values() if count > 0)


def explored_mse(task: FrozenLakeTask, action_probs: ActionProbs, visits: Mapping[int, int],
                 pi_star: Optional[ActionProbs] = None) -> float:
    """How closely the explored grid agrees with π*: ``mean_a (π(a|s) − π*(a|s))²`` averaged
    over the visited non-terminal states (0 when none was visited). ``pi_star`` on every state
    of the map; default :func:`optimal_policy_everywhere`."""
    pi_star = optimal_policy_everywhere(task) if pi_star is None else pi_star
    states = [s for s, count in visits.items() if count > 0 and not task.is_terminal(s) and s in action_probs]
    if not states:
        return 0.0
    errors = [float(np.mean((distribution_at(action_probs, s, "action_probs")
                             - distribution_at(pi_star, s, "pi_star")) ** 2)) for s in states]
    return float(np.mean(errors))
