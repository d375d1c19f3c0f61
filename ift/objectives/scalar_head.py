"""One scalar per hidden state, read in float32 from a zero start: the value head of PPO's
critic and the reward head of a reward model are both this layer."""

from __future__ import annotations

import torch


class ScalarHead(torch.nn.Module):
    """``s(h) = w · h (+ b)``: one float32 scalar per hidden state, every weight 0 at the start.

    Starting at zero makes every output 0 before the first update: a value head's explained
    variance starts at 0 and its first gradient does not disturb the trunk; a reward model's
    loss starts at ``log 2``. The parameter names (``linear.weight``, ``linear.bias``) are what
    checkpoints and exports read.

    Args:
        hidden_size: width of the hidden states it reads.
        bias: whether the layer has a bias.
    """

    def __init__(self, hidden_size: int, bias: bool = True):
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.linear = torch.nn.Linear(self.hidden_size, 1, bias=bias, dtype=torch.float32)
        torch.nn.init.zeros_(self.linear.weight)
        if bias:
            torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``... x H`` hidden states (any dtype) -> ``...`` float32 scalars."""
        return self.linear(hidden.float()).squeeze(-1)
