"""How close a policy is to π*, where it walks, how far it moved, and whether it reaches the goal.

Policies are ``{state: probabilities over L, D, R, U}`` dictionaries (see
:mod:`ift.tasks.frozen_lake.distributions`), or, for :func:`evaluate`, a language model read
through its action tokens. The metrics of the check, each under one name everywhere (the
monitor's logs, ``frozen_lake_metrics.json``, ``results.json``):

* ``mse_to_optimal``: the paper's metric, ``mean_s mean_a (π(a|s) − π*(a|s))²`` over every
  state of the map (π* is uniform on holes, the goal and states that cannot reach it);
* ``mse_reachable``: the same over the reachable non-terminal states only (where the
  agent really decides);
* ``success_rate``, ``episode_length``: the greedy episode (1/0, and its moves);
* ``explored_states``: the paper's "explored grids", the distinct states visited by episodes
  sampled from the policy (:mod:`ift.tasks.frozen_lake.exploration`), and ``explored_mse``,
  the MSE to π* over those visited states (how well the explored grid agrees with π*);
* ``moved_states``: states whose distribution moved more than :data:`EXPLORED_THRESHOLD`
  in total variation from the initial policy, and ``mean_total_variation``, that distance
  averaged over the states.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ift.tasks.frozen_lake.distributions import ActionProbs, action_distribution, distribution_at, to_numpy
from ift.tasks.frozen_lake.env import Episode, FrozenLakeTask
from ift.tasks.frozen_lake.exploration import explored_mse, explored_states, optimal_policy_everywhere, sample_visits
from ift.tasks.frozen_lake.queries import read_text_policy
from ift.tasks.frozen_lake.maps import ACTIONS

#: States whose action distribution moved more than this (total variation) from the
#: initial policy's count as "moved".
EXPLORED_THRESHOLD = 0.05

#: A policy followed step by step: ``policy(state, history) -> 4 probabilities``.
StepPolicy = Callable[[int, str], Any]
#: A policy read from text, batched: ``next_action_probs(texts) -> [len(texts), 4]`` (an LM).
TextPolicy = Callable[[List[str]], Any]


def total_variation(p: Any, q: Any) -> float:
    """``0.5 * sum |p - q|``."""
    return 0.5 * float(np.abs(to_numpy(p) - to_numpy(q)).sum())


def mse_to_optimal(action_probs: ActionProbs, pi_star: ActionProbs) -> float:
    """The paper's metric: ``mean_s mean_a (π(a|s) - π*(a|s))^2`` over the states of
    ``pi_star`` (every reachable non-terminal state); ``action_probs`` must cover them."""
    if not pi_star:
        raise ValueError("mse_to_optimal: pi_star is empty")
    errors = [
        float(np.mean((distribution_at(action_probs, s, "action_probs")
                       - action_distribution(pi_star[s], s, "pi_star")) ** 2))
        for s in pi_star
    ]
    return float(np.mean(errors))


def moved_states(action_probs: ActionProbs, initial_action_probs: ActionProbs,
                 threshold: float = EXPLORED_THRESHOLD) -> int:
    """How many states of ``action_probs`` have a distribution whose total variation distance
    (``0.5 * L1``) from the initial policy's is strictly above ``threshold``."""
    return sum(
        total_variation(action_distribution(action_probs[s], s, "action_probs"),
                        distribution_at(initial_action_probs, s, "initial_action_probs")) > threshold
        for s in action_probs
    )


def mean_total_variation(action_probs: ActionProbs, initial_action_probs: ActionProbs) -> float:
    """How far the policy moved from the initial one: total variation averaged over its states."""
    return float(np.mean([total_variation(action_probs[s], initial_action_probs[s]) for s in action_probs]))


def greedy_episode(task: FrozenLakeTask, policy: Union[ActionProbs, StepPolicy],
                   max_steps: Optional[int] = None) -> Episode:
    """Follow the argmax action from ``S`` (ties: the first of L, D, R, U).

    ``policy`` is a ``{state: probs}`` dictionary or a function ``policy(state, history)``
    returning 4 probabilities, ``history`` being the actions taken so far (for an LM:
    ``lm_probs(task.prompt() + history)``). Stops on a hole, the goal, ``max_steps``
    moves (default ``n_states``: no simple path is longer) or, for a dictionary policy, on
    revisiting a state (it would loop forever): those end as ``outcome="truncated"``.
    """
    cap = task.n_states if max_steps is None else int(max_steps)
    state, history, path, seen = task.start_state, "", [task.start_state], {task.start_state}
    callable_policy = callable(policy) and not isinstance(policy, Mapping)
    while len(history) < cap:
        if callable_policy:
            probs = action_distribution(policy(state, history), state, "policy")  # type: ignore[operator]
        else:
            probs = distribution_at(policy, state, "policy")  # type: ignore[arg-type]
        action = int(np.argmax(probs))
        state, _, terminated = task.step(state, action)
        history += ACTIONS[action]
        path.append(state)
        if terminated:
            success = state == task.goal_state
            return Episode(success, len(history), state, float(success), tuple(path), "goal" if success else "hole")
        if not callable_policy and state in seen:
            break
        seen.add(state)
    return Episode(False, len(history), state, 0.0, tuple(path), "truncated")


def evaluate(
    task: FrozenLakeTask,
    policy: Union[ActionProbs, TextPolicy],
    initial_action_probs: Optional[ActionProbs] = None,
    threshold: float = EXPLORED_THRESHOLD,
) -> Tuple[Dict[str, float], Dict[int, np.ndarray]]:
    """Every metric of the check, and the policy as ``{state: probabilities}``.

    Args:
        task: the map.
        policy: either ``{state: probabilities}`` (a Markov policy such as the state MLP,
            given on every state; its greedy episode stops on a revisited state), or a
            language model read through its action tokens, as a batched function
            ``next_action_probs(texts) -> [len(texts), 4]`` (e.g.
            ``functools.partial(lm_action_probs, model, tokenizer)``): its distributions are read
            at :func:`~ift.tasks.frozen_lake.lm_policy.readable_texts` (every state a path from
            S reaches), and its greedy episode after ``prompt + actions so far`` (the real
            history), for at most ``n_states`` moves.
        initial_action_probs: the policy before training; with it the results also hold
            ``moved_states`` and ``mean_total_variation``.
        threshold: total-variation distance above which a state counts as moved.

    Returns:
        ``(metrics, action_probs)`` with the metrics of the module docstring.
    """
    if isinstance(policy, Mapping):
        action_probs = dict(policy)
        episode = greedy_episode(task, action_probs)
    else:
        prompt = task.prompt()
        action_probs = read_text_policy(task, policy)
        episode = greedy_episode(task, lambda state, history: to_numpy(policy([prompt + history]))[0])
    everywhere = optimal_policy_everywhere(task)
    visits = sample_visits(task, action_probs)
    metrics = {
        "mse_to_optimal": mse_to_optimal(action_probs, {s: everywhere[s] for s in everywhere if s in action_probs}),
        "mse_reachable": mse_to_optimal(action_probs, task.optimal_policy()),
        "success_rate": float(episode.success),
        "episode_length": float(episode.steps),
        "explored_states": float(explored_states(visits)),
        "explored_mse": explored_mse(task, action_probs, visits),
    }
    if initial_action_probs is not None:
        metrics["moved_states"] = float(moved_states(action_probs, initial_action_probs, threshold))
        metrics["mean_total_variation"] = mean_total_variation(action_probs, initial_action_probs)
    return metrics, action_probs
