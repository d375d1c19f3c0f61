"""A causal LM's outputs over the response positions, with each distinct prompt run once.

PPO samples several responses per prompt, so a rollout's rows come in groups that share
their prompt. A plain forward pass runs every row's prompt again, once per sample; here
the distinct prompts run once, with the KV cache kept, the cache is copied out to the
rows, and only the responses run on top of it. The result is the plain pass's, up to
floating-point rounding (the same keys and values, attended to in the same positions), and
gradients flow back through the copied cache into the one prompt pass. With long prompts
and many samples per prompt most of the tokens of a plain pass are prompt tokens: this is
where PPO's forward and backward passes spend less.

Models that return no KV cache (a model without one, or any model under gradient
checkpointing, which turns the cache off in training) get the plain pass.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ift.core.forward import policy_outputs, position_ids_from_mask


class ResponseOutputs(NamedTuple):
    """What a policy predicts over the response positions of ``B x (P + R)`` rows."""

    #: ``B x R x V``: position ``t`` predicts response token ``t`` (made at column ``P - 1 + t``).
    logits: torch.Tensor
    #: ``B x R x H`` last hidden states at the same positions, when asked for (else None).
    hidden: Optional[torch.Tensor]


def distinct_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int):
    """``(first_rows, inverse)``: one row index per distinct prompt (ids and mask alike) and,
    for every row, which distinct prompt it has; ``None`` when no two rows share a prompt."""
    prompts = torch.cat([input_ids[:, :prompt_length], attention_mask[:, :prompt_length].to(input_ids.dtype)], dim=1)
    unique, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    if unique.shape[0] == prompts.shape[0]:
        return None
    first_rows = torch.full((unique.shape[0],), prompts.shape[0], dtype=torch.long, device=input_ids.device)
    rows = torch.arange(prompts.shape[0], device=input_ids.device)
    first_rows = first_rows.scatter_reduce(0, inverse, rows, reduce="amin")
    return first_rows, inverse


def response_outputs(policy: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     prompt_length: int, output_hidden_states: bool = False,
                     share_prompts: bool = True) -> ResponseOutputs:
    """The logits (and last hidden states) of ``policy`` over the response positions of
    ``input_ids`` (``B x (P + R)``, prompts in the first ``prompt_length`` columns).

    With ``share_prompts`` each distinct prompt runs once and its KV cache serves every row
    that has it; otherwise, or when no rows share a prompt, or when the model keeps no
    cache, one plain pass over every row (:func:`ift.core.forward.policy_outputs`).
    """
    response = slice(prompt_length - 1, -1)
    # Gradient checkpointing turns the cache off in training: the prompt pass would be wasted.
    cache_off = policy.training and _checkpointing(policy)
    shared = None
    if share_prompts and prompt_length > 0 and not cache_off:
        shared = distinct_prompts(input_ids, attention_mask, prompt_length)
    if shared is not None:
        outputs = _shared_prompt_pass(policy, input_ids, attention_mask, prompt_length, output_hidden_states, *shared)
        if outputs is not None:
            return outputs
    outputs = policy_outputs(policy, input_ids, attention_mask, output_hidden_states=output_hidden_states)
    hidden = outputs.hidden_states[-1][:, response] if output_hidden_states else None
    return ResponseOutputs(outputs.logits[:, response], hidden)


def _checkpointing(policy: torch.nn.Module) -> bool:
    """Whether ``policy`` recomputes activations in its backward pass (transformers 5 names it
    ``is_activation_checkpointing``, earlier releases ``is_gradient_checkpointing``)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        value = getattr(policy, name, None)
        if value is not None:
            return bool(value)
    return False


def _shared_prompt_pass(policy, input_ids, attention_mask, prompt_length, output_hidden_states,
                        first_rows, inverse) -> Optional[ResponseOutputs]:
    """The two passes (distinct prompts with the cache, then every row's response on its
    prompt's cache); None when the model returned no cache to build on."""
    prompt_mask = attention_mask[first_rows, :prompt_length]
    first = policy(
        input_ids=input_ids[first_rows, :prompt_length], attention_mask=prompt_mask,
        position_ids=position_ids_from_mask(prompt_mask), use_cache=True, output_hidden_states=output_hidden_states,
    )
    cache = getattr(first, "past_key_values", None)
    if cache is None or not callable(getattr(cache, "batch_select_indices", None)):
        return None
    cache.batch_select_indices(inverse)  # one copy of its prompt's keys and values per row
    if input_ids.shape[1] == prompt_length + 1:  # a one-token response: its prediction is the prompt pass's
        last_hidden = first.hidden_states[-1][inverse, -1:] if output_hidden_states else None
        return ResponseOutputs(first.logits[inverse, -1:], last_hidden)
    rest = policy(
        input_ids=input_ids[:, prompt_length:-1], attention_mask=attention_mask[:, :-1],
        position_ids=position_ids_from_mask(attention_mask[:, :-1])[:, prompt_length:],
        past_key_values=cache, use_cache=True, output_hidden_states=output_hidden_states,
    )
    logits = torch.cat([first.logits[inverse, -1:], rest.logits], dim=1)
    hidden = None
    if output_hidden_states:
        hidden = torch.cat([first.hidden_states[-1][inverse, -1:], rest.hidden_states[-1]], dim=1)
    return ResponseOutputs(logits, hidden)
