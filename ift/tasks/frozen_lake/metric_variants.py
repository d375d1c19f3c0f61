"""The MSE to π* read several ways: which π* (how it treats tied moves) and over which states.

The paper measures "the MSE distance between the transition matrices of the optimal and trained
policy" and says neither how its π* treats several equally good moves nor which states the
matrices cover. Each reading here is one choice of both:

* **π\\* ties** — ``uniform``: π\\* spreads evenly over the optimal moves of a state (this
  project's π\\*, :func:`~ift.tasks.frozen_lake.exploration.optimal_policy_everywhere`);
  ``one_hot``: π\\* takes one optimal move per state, the one a demonstrator who walked the
  demonstrated path would take — on that path its own move, elsewhere the optimal move the
  demonstration uses most (then L < D < R < U). Where every move is as good as any other (holes,
  the goal, states that cannot reach it) both are uniform.
* **states** — ``map``: every state the policy is read at (all of them for the state MLP); the
  paper's "transition matrices". ``nonterminal``: the reachable states that are not a hole or
  the goal (where the agent decides). ``optimal_path``: the non-terminal states of the optimal
  path (where SFT's data is). ``training``: the non-terminal states of every path in the
  training data (the optimal path and, for DPO and ORPO, the rejected one): the same states for
  every objective, so that rows stay comparable.

Every function is pure: a policy is ``{state: 4 probabilities over L, D, R, U}``.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ift.tasks.frozen_lake.distributions import ActionProbs, distribution_at
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.exploration import optimal_policy_everywhere
from ift.tasks.frozen_lake.maps import ACTION_INDEX
from ift.tasks.frozen_lake.metrics import mse_to_optimal

#: How π* treats tied optimal moves.
PI_STAR_TIES = ("uniform", "one_hot")
#: Which states the MSE averages over.
REGIONS = ("map", "nonterminal", "optimal_path", "training")


def one_hot_optimal_policy(task: FrozenLakeTask, demonstrated: str) -> Dict[int, np.ndarray]:
    """π* with one optimal move per state (see the module docstring), on every state of the map.

    ``demonstrated`` is the action string of the demonstrated (optimal) path.
    """
    on_path = {}
    state = task.start_state
    for char in demonstrated:
        on_path.setdefault(state, ACTION_INDEX[char])
        state, _, terminated = task.step(state, char)
        if terminated:
            break
    uses = {action: demonstrated.count(char) for char, action in ACTION_INDEX.items()}
    policy = {}
    for state in range(task.n_states):
        best = task.optimal_actions(state)
        probs = np.zeros(4)
        if len(best) == 4:  # no move is better than another: nothing to pick
            probs[:] = 0.25
        elif state in on_path and on_path[state] in best:
            probs[on_path[state]] = 1.0
        else:
            probs[min(best, key=lambda action: (-uses[action], action))] = 1.0
        policy[state] = probs
    return policy


def optimal_policy(task: FrozenLakeTask, ties: str, demonstrated: str) -> Dict[int, np.ndarray]:
    """π* on every state of the map, with ``ties`` ``uniform`` or ``one_hot``."""
    if ties == "uniform":
        return optimal_policy_everywhere(task)
    if ties == "one_hot":
        return one_hot_optimal_policy(task, demonstrated)
    raise ValueError(f"π* ties {ties!r} is not one of {PI_STAR_TIES}")


def path_states(task: FrozenLakeTask, actions: str) -> List[int]:
    """The non-terminal states a path visits (the start included), in order, each once."""
    states: List[int] = []
    for state in task.run(actions).path:
        if not task.is_terminal(state) and state not in states:
            states.append(state)
    return states


def region_states(task: FrozenLakeTask, region: str, readable: Iterable[int], demonstrated: str,
                  rejected: Optional[str] = None) -> List[int]:
    """The sorted states of ``region`` (see the module docstring); ``readable`` are the states
    the policy is read at, ``demonstrated`` the optimal path, ``rejected`` the rejected one (or
    None when the training data has none)."""
    if region == "map":
        return sorted(set(readable))
    if region == "nonterminal":
        return task.reachable_states()
    if region == "optimal_path":
        return sorted(path_states(task, demonstrated))
    if region == "training":
        return sorted(set(path_states(task, demonstrated)) | set(path_states(task, rejected or "")))
    raise ValueError(f"MSE region {region!r} is not one of {REGIONS}")


def mse_over(action_probs: ActionProbs, pi_star: ActionProbs, states: Sequence[int]) -> float:
    """``mean_s mean_a (π(a|s) − π*(a|s))²`` over ``states``: the paper's metric
    (:func:`~ift.tasks.frozen_lake.metrics.mse_to_optimal`) on π* restricted to those states."""
    if len(states) == 0:
        raise ValueError("mse_over: no states to average over")
    return mse_to_optimal(action_probs, {s: distribution_at(pi_star, s, "pi_star") for s in states})


def variant_name(ties: str, region: str) -> str:
    """The metric name of one reading, e.g. ``mse_one_hot_training``."""
    return f"mse_{ties}_{region}"


def mse_variants(task: FrozenLakeTask, action_probs: ActionProbs, demonstrated: str,
                 rejected: Optional[str] = None) -> Dict[str, float]:
    """``{variant_name(ties, region): MSE}`` for every π* reading and region."""
    results = {}
    for ties in PI_STAR_TIES:
        pi_star = optimal_policy(task, ties, demonstrated)
        for region in REGIONS:
            states = region_states(task, region, action_probs.keys(), demonstrated, rejected)
            results[variant_name(ties, region)] = mse_over(action_probs, pi_star, states)
    return results
