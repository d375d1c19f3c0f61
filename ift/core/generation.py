"""Sampling or greedy decoding from a policy on left-padded prompts, with the KV cache.

Rollout objectives reach it through :class:`ift.core.sampling.HFSampler`, the default
engine behind their sampling seam (:mod:`ift.core.sampling`).
"""

from __future__ import annotations

from typing import Tuple

import torch
from transformers import GenerationConfig


@torch.no_grad()
def generate_responses(
    policy: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_token_id: int,
    pad_token_id: int,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    use_cache: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Generate a response for every (left-padded) prompt.

    Returns ``(response_ids, response_mask)``, both ``B x R``: the new tokens only, padded
    with ``pad_token_id`` after a row's EOS; the mask is true up to and including EOS
    (every token when the row never emitted EOS). Works when ``pad == eos``.
    """
    was_training = policy.training
    policy.eval()
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=top_p if do_sample else None,
        top_k=0 if do_sample else None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=use_cache,
    )
    try:
        sequences = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
    finally:
        policy.train(was_training)
    responses = sequences[:, prompt_ids.shape[1]:]
    is_eos = responses == eos_token_id
    # Tokens strictly after the first EOS are padding, whatever id the padding uses.
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    mask = ~after_eos
    responses = torch.where(mask, responses, torch.full_like(responses, pad_token_id))
    return responses, mask
