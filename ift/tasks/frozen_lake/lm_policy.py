"""Read a language model as a Frozen Lake policy.

**The action distribution of the LM at a state ``s``** (the same for every objective):
the policy's next-token distribution after the text ``prompt + prefix(s)``, restricted to
the four action tokens ``L, D, R, U`` and renormalised over them, where ``prefix(s)`` is
the shortest action string from the start that reaches ``s`` (ties broken L < D < R < U;
on the optimal path it is the optimal trajectory's own prefix). See
:meth:`ift.tasks.frozen_lake.env.FrozenLakeTask.query_texts`. All states are read in one
batched forward pass (left-padded) with the policy in eval mode.

**The greedy episode** of the LM (:func:`ift.tasks.frozen_lake.metrics.evaluate` given
``functools.partial(lm_action_probs, model, tokenizer)``): from the start, repeatedly take
the most probable of the four action tokens after ``prompt + actions so far`` (the real
history, not the shortest prefix), until a hole, the goal, or ``n_states`` moves.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

from ift.core.forward import policy_logits
from ift.data.collate import lengths_mask, pad_sequences
from ift.tasks.frozen_lake.distributions import action_probs_from_logits
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import ACTIONS


def action_token_ids(tokenizer) -> List[int]:
    """Ids of the tokens ``L``, ``D``, ``R``, ``U`` (in that order)."""
    ids = []
    for char in ACTIONS:
        encoded = tokenizer(char, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ValueError(f"Frozen Lake: action {char!r} is not a single token of the tokenizer (ids {encoded})")
        ids.append(encoded[0])
    return ids


@torch.no_grad()
def lm_action_probs(policy: torch.nn.Module, tokenizer, texts: Sequence[str]) -> np.ndarray:
    """``[len(texts), 4]``: the LM's next-token probabilities of L, D, R, U after each text,
    renormalised over those four (one left-padded forward pass, eval mode)."""
    ids = [tokenizer(text)["input_ids"] for text in texts]
    input_ids = pad_sequences(ids, tokenizer.pad_token_id, "left")
    mask = lengths_mask(ids, "left")
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    try:
        logits = policy_logits(policy, input_ids.to(device), mask.to(device))[:, -1]
    finally:
        policy.train(was_training)
    return action_probs_from_logits(logits.float(), action_token_ids(tokenizer))


def lm_policy(policy: torch.nn.Module, tokenizer, task: FrozenLakeTask) -> Dict[int, np.ndarray]:
    """{reachable non-terminal state: probabilities of L, D, R, U} of the LM (see module docstring)."""
    return task.collect_action_probs(lambda texts: lm_action_probs(policy, tokenizer, texts))
