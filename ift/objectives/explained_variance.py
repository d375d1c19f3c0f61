"""PPO's explained variance as a ``torchmetrics`` metric, so that under DDP it is the value
function's fit over the whole rollout (every rank's tokens), not a mean of per-rank values.

Variance ratios do not average: the mean of two shards' explained variances is not the
explained variance of their union. The metric keeps each valid token's value and return
(``cat`` states, gathered over ranks on ``compute``) and applies the one formula,
:func:`ift.objectives.functional.explained_variance`, to all of them.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from ift.objectives.functional import explained_variance


class TokenExplainedVariance(Metric):
    """``1 - Var[R - V] / Var[R]`` over every valid response token seen by ``update``, on
    every process (nan when the returns have no variance: the caller skips it)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("values", default=[], dist_reduce_fx="cat")
        self.add_state("returns", default=[], dist_reduce_fx="cat")

    def update(self, values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> None:
        """Add the valid tokens (``mask`` true) of ``B x R`` values and returns."""
        valid = mask.bool()
        self.values.append(_at_least_float32(values.detach()[valid]))
        self.returns.append(_at_least_float32(returns.detach()[valid]))

    def compute(self) -> torch.Tensor:
        values = torch.cat(self.values) if isinstance(self.values, list) else self.values
        returns = torch.cat(self.returns) if isinstance(self.returns, list) else self.returns
        return explained_variance(values, returns, torch.ones_like(values, dtype=torch.bool))


def rollout_explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The explained variance of one rollout over all processes (the same on each)."""
    metric = TokenExplainedVariance().to(values.device)
    metric.update(values, returns, mask)
    return metric.compute()


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision values summed in float32; float64 kept (as the functional form does)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
