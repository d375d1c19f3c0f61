"""Constrained outputs: a policy whose next-token distribution only covers a given alphabet.

``FineTuneModule(output_tokens="LDRU")`` makes every next-token distribution of the policy
a softmax over the tokens of ``L``, ``D``, ``R``, ``U`` and EOS only: a fixed additive
bias of :data:`MASK_VALUE` on every other logit, applied by a forward hook on the
output embedding (``lm_head``). Every objective sees the same constrained policy: the
supervised losses, DPO/ORPO log-probs, PPO's sampling and log-probs (so its importance
ratios stay exact), IFT's greedy predictions, and ``generate``.

This is the Frozen Lake agent's action space (the prompt's map characters are inputs,
never outputs). The constraint is not part of the weights: a policy exported with
``save_pretrained`` is the unconstrained model; re-apply :func:`restrict_outputs` after
loading it, or mask the logits at decoding time.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ift.core.constants import MASK_VALUE



class OutputMask:
    """Forward hook adding :data:`MASK_VALUE` to the logits of every token not in ``allowed_ids``."""

    def __init__(self, allowed_ids: List[int]):
        if not allowed_ids:
            raise ValueError("OutputMask: at least one allowed token id is needed")
        self.allowed_ids = sorted(set(int(i) for i in allowed_ids))
        self._bias: Optional[torch.Tensor] = None

    def bias(self, size: int, like: torch.Tensor) -> torch.Tensor:
        if self._bias is None or self._bias.shape[0] != size:
            bias = torch.full((size,), MASK_VALUE)
            bias[[i for i in self.allowed_ids if i < size]] = 0.0
            self._bias = bias
        return self._bias.to(device=like.device, dtype=like.dtype)

    def __call__(self, module: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        return output + self.bias(output.shape[-1], output)

    def __repr__(self) -> str:
        return f"OutputMask(allowed_ids={self.allowed_ids})"


def output_token_ids(tokenizer, characters: str, include_eos: bool = True) -> List[int]:
    """Token ids of each character of ``characters`` (one token each), plus EOS."""
    ids = []
    for char in characters:
        encoded = tokenizer(char, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1 or encoded[0] == tokenizer.unk_token_id:
            raise ValueError(
                f"output_tokens: character {char!r} is not a single token of the tokenizer "
                f"(got ids {encoded}); use characters of its vocabulary"
            )
        ids.append(encoded[0])
    if include_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("output_tokens: the tokenizer has no EOS token")
        ids.append(tokenizer.eos_token_id)
    return ids


def restrict_outputs(policy: torch.nn.Module, tokenizer, characters: str, include_eos: bool = True) -> OutputMask:
    """Constrain ``policy``'s next-token distribution to ``characters`` (+ EOS); see the module
    docstring. The hook lives on the output embedding, so copies of the policy (the frozen
    reference) keep it. Returns the hook object."""
    head = policy.get_output_embeddings()
    if head is None:
        raise ValueError(f"output_tokens: {type(policy).__name__} has no output embedding to constrain")
    hook = OutputMask(output_token_ids(tokenizer, characters, include_eos))
    head.register_forward_hook(hook)
    return hook
