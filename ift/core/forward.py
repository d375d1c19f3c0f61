"""How every objective calls a Hugging Face causal LM, so they all see the same positions."""

from __future__ import annotations

import inspect
from typing import Optional

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip padding on either side: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def policy_outputs(
    policy: torch.nn.Module,
    input_ids: Optional[torch.Tensor],
    attention_mask: torch.Tensor,
    inputs_embeds: Optional[torch.Tensor] = None,
    output_hidden_states: bool = False,
    **extra,
):
    """Run ``policy`` with position ids that skip padding (left or right), no KV cache.

    ``extra`` goes to the model as is (e.g. ``logits_to_keep``)."""
    return policy(
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        output_hidden_states=output_hidden_states,
        **extra,
    )


def policy_logits(
    policy: torch.nn.Module,
    input_ids: Optional[torch.Tensor],
    attention_mask: torch.Tensor,
    inputs_embeds: Optional[torch.Tensor] = None,
    **extra,
) -> torch.Tensor:
    """``B x T x V`` logits of ``policy`` on ids or on ready input embeddings."""
    return policy_outputs(policy, input_ids, attention_mask, inputs_embeds, **extra).logits


def accepts_true_input_ids(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` takes ``true_input_ids``: the true tokens beside mixed
    ``inputs_embeds``, for a model whose output space depends on the current token (the
    Frozen Lake state policy). Wrappers (PEFT's ``get_base_model()``, ``.module``) that
    pass keywords through are looked into."""
    seen = set()
    while model is not None and id(model) not in seen:
        seen.add(id(model))
        try:
            if "true_input_ids" in inspect.signature(model.forward).parameters:
                return True
        except (TypeError, ValueError, AttributeError):
            return False
        base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else None
        model = base if isinstance(base, torch.nn.Module) else getattr(model, "module", None)
    return False
