"""Action distributions: four probabilities over ``L``, ``D``, ``R``, ``U`` per state.

Every metric and picture of the task takes policies as ``{state: probabilities}``
dictionaries; these helpers turn whatever a caller holds (a list, a NumPy array, a torch
tensor, logits) into checked NumPy vectors.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence

import numpy as np

#: A policy as ``{state: 4 probabilities over L, D, R, U}``.
ActionProbs = Mapping[int, Any]


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a float64 NumPy array (a torch tensor is detached and moved to the CPU)."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def action_distribution(probs: Any, state: int, name: str) -> np.ndarray:
    """``probs`` as 4 finite numbers, else a ``ValueError`` naming ``name[state]``."""
    array = to_numpy(probs)
    if array.shape != (4,) or not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name}[{state}] must be 4 finite probabilities (L, D, R, U), got {array!r}"
        )
    return array


def distribution_at(probs: ActionProbs, state: int, name: str) -> np.ndarray:
    """The checked distribution of ``state`` in the policy ``probs``; a ``KeyError`` if it has none."""
    if state not in probs:
        raise KeyError(
            f"{name} has no distribution for state {state}; give one for every reachable non-terminal "
            f"state (FrozenLakeTask.reachable_states())"
        )
    return action_distribution(probs[state], state, name)


def action_probs_from_logits(logits: Any, action_token_ids: Sequence[int]) -> np.ndarray:
    """Probabilities of the action tokens renormalised over them: ``softmax(logits[..., ids])``.

    ``logits`` is ``[vocab]`` or ``[batch, vocab]`` (NumPy or a torch tensor);
    ``action_token_ids`` are the ids of ``L``, ``D``, ``R``, ``U`` in that order.
    Equal to taking the full softmax and renormalising over the four tokens.
    """
    if len(action_token_ids) != 4:
        raise ValueError(f"action_token_ids must be the 4 ids of L, D, R, U, got {list(action_token_ids)}")
    selected = to_numpy(logits)[..., list(action_token_ids)]
    selected = selected - selected.max(axis=-1, keepdims=True)
    weights = np.exp(selected)
    return weights / weights.sum(axis=-1, keepdims=True)


def probs_at_texts(texts: Mapping[int, str], next_action_probs: Callable[[List[str]], Any],
                   who: str) -> Dict[int, np.ndarray]:
    """``{state: probabilities over L, D, R, U}`` of a batched text policy read at ``texts``
    (``{state: text}``); rows renormalised to sum to 1. ``next_action_probs(texts)`` must return
    ``[len(texts), 4]``, else a ``ValueError`` naming ``who``."""
    states = list(texts)
    probs = to_numpy(next_action_probs([texts[s] for s in states]))
    if probs.shape != (len(states), 4):
        raise ValueError(
            f"{who}: the function returned shape {probs.shape} for {len(states)} texts; "
            f"expected ({len(states)}, 4), one probability per action token L, D, R, U"
        )
    probs = probs / probs.sum(axis=1, keepdims=True)
    return {state: probs[i] for i, state in enumerate(states)}
