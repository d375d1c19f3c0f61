"""PPO's value functions, behind one interface.

A :class:`ValueFunction` answers one question: given the policy and a batch of prompts
with responses, what are the policy's logits and the value of every response state?

- :class:`ValueHead` is a linear head on the *policy's* last hidden state (the default: the
  critic shares the policy's trunk, so the value loss also shapes the trunk, as in ReFT);
  one forward pass gives both the logits and the values.
- :class:`CriticModel` is a separate network (its own causal LM trunk plus a
  :class:`ValueHead`), for when the critic must not touch the policy.

PPO registers its value function as a trainable part of the module
(``StepContext.add_trainable_part``), so it is optimized and saved in checkpoints.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ift.core.shared_prompts import response_outputs
from ift.objectives.scalar_head import ScalarHead


def hidden_size_of(model: torch.nn.Module) -> int:
    """Width of a Hugging Face model's last hidden state (``config.hidden_size``)."""
    config = getattr(model, "config", None)
    for name in ("hidden_size", "n_embd", "d_model"):
        size = getattr(config, name, None)
        if isinstance(size, int):
            return size
    raise ValueError(
        f"cannot tell the hidden size of {type(model).__name__}: its config has no hidden_size/n_embd/d_model; "
        "give PPO a separate critic, or a model with a Hugging Face config"
    )


class ValueFunction(torch.nn.Module):
    """The interface PPO calls: logits and values over the response positions."""

    def logits_and_values(
        self, policy: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(logits, values)``: ``B x R x V`` and ``B x R`` float32 over the response positions.

        Position ``t`` holds the policy's prediction of response token ``t`` (made at column
        ``P - 1 + t``) and the value of that state.
        """
        raise NotImplementedError


class ValueHead(ScalarHead, ValueFunction):
    """``V(h) = w . h + b``: one scalar per position, computed in float32.

    The weights start at zero, so every value is 0 before the first update (explained
    variance starts at 0, and the first value-loss gradient does not disturb the trunk).

    Args:
        hidden_size: width of the hidden states it reads.
    """

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, bias=True)

    def logits_and_values(self, policy, input_ids, attention_mask, prompt_length, share_prompts=False):
        outputs = response_outputs(policy, input_ids, attention_mask, prompt_length, output_hidden_states=True,
                                   share_prompts=share_prompts)
        return outputs.logits, self(outputs.hidden)


class CriticModel(ValueFunction):
    """A separate critic: a causal LM trunk and a :class:`ValueHead` on its last hidden state.

    Args:
        backbone: a Hugging Face causal LM (its LM head is unused).
    """

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = ValueHead(hidden_size_of(backbone))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                share_prompts: bool = False) -> torch.Tensor:
        """``B x R`` float32 values of the response states (position ``t`` sees the prompt
        and response tokens before response token ``t``)."""
        outputs = response_outputs(self.backbone, input_ids, attention_mask, prompt_length,
                                   output_hidden_states=True, share_prompts=share_prompts)
        return self.head(outputs.hidden)

    def logits_and_values(self, policy, input_ids, attention_mask, prompt_length, share_prompts=False):
        logits = response_outputs(policy, input_ids, attention_mask, prompt_length, share_prompts=share_prompts).logits
        return logits, self(input_ids, attention_mask, prompt_length, share_prompts)
