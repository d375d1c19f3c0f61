"""The two policies of the check, and how each one is read as ``{state: probabilities}``.

* ``mlp`` (the paper's, the default): a two-layer fully connected network over one-hot grid
  states (:class:`~ift.tasks.frozen_lake.state_policy.FrozenLakeStatePolicy`); prompts and
  responses are written as states (the start state; the states a path visits), so IFT's
  temporal residual mixes the true state with the state the model's own greedy move reaches
  (the paper's eq. 37). Its action distribution at a state is read from its action head.
* ``transformer`` (this project's extension): a tiny GPT-2 over characters; the prompt is the
  map, the response the action string, the action distribution at a state the next-token
  distribution over ``L D R U`` after the shortest prefix reaching it
  (:mod:`ift.tasks.frozen_lake.lm_policy`).
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch

from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import ACTIONS, VOCAB
from ift.tasks.frozen_lake.state_policy import STATE_TOKENIZER, FrozenLakeStatePolicy, state_token_id

POLICIES = ("mlp", "transformer")
DEFAULT_POLICY = "mlp"
#: How each policy writes prompts and responses (FrozenLakeDataModule's ``representation``).
REPRESENTATIONS = {"mlp": "states", "transformer": "actions"}

#: Width of the state MLP's hidden layer.
MLP_HIDDEN_SIZE = 64
#: The transformer: a dropout-free 2-layer GPT-2 over Frozen Lake's characters.
TRANSFORMER_MODEL: Dict[str, Any] = {
    "model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 160,
    "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "tie_word_embeddings": True,
    "activation_function": "gelu",
}
TRANSFORMER_TOKENIZER = "char:" + VOCAB


def check_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`POLICIES`, else a ``ValueError`` naming them."""
    if policy not in POLICIES:
        raise ValueError(f"Frozen Lake policy {policy!r} is not one of {', '.join(POLICIES)}")
    return policy


def model_settings(policy: str, task: FrozenLakeTask) -> Dict[str, Any]:
    """The ``model``, ``tokenizer``, ``output_tokens`` and ``output_eos`` arguments of
    ``FineTuneModule``: the transformer's outputs are the four moves, without EOS (the
    environment ends its episodes; see :mod:`ift.tasks.frozen_lake.data`)."""
    if check_policy(policy) == "mlp":
        model = {"model_type": "frozen_lake_state_mlp", "map": ",".join(task.rows), "hidden_size": MLP_HIDDEN_SIZE}
        return {"model": model, "tokenizer": STATE_TOKENIZER, "output_tokens": None, "output_eos": True}
    return {"model": dict(TRANSFORMER_MODEL), "tokenizer": TRANSFORMER_TOKENIZER, "output_tokens": ACTIONS, "output_eos": False}


@torch.no_grad()
def state_policy_action_probs(model: FrozenLakeStatePolicy, task: FrozenLakeTask) -> Dict[int, np.ndarray]:
    """``{state: probabilities over L, D, R, U}`` of the state MLP on every state of the map."""
    device = next(model.parameters()).device
    ids = torch.tensor([state_token_id(state) for state in range(task.n_states)], device=device)
    was_training = model.training
    model.eval()
    try:
        probs = model.action_probs(ids).float().cpu().numpy().astype(np.float64)
    finally:
        model.train(was_training)
    return {state: probs[state] for state in range(task.n_states)}
