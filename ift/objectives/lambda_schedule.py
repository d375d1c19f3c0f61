"""IFT's mixing coefficient lambda as a pure function of the optimizer step."""

from __future__ import annotations

import torch

LAMBDA_SCHEDULES = ("static", "linear")


def ift_lambda(
    step: int,
    lam: float,
    min_lam: float | None = None,
    schedule: str = "static",
    warmup_steps: int = 0,
    noise_std: float = 0.0,
    noise_seed: int = 0,
) -> float:
    """Lambda at optimizer step ``step`` (docs/objectives.md, IFT step 5).

    ``static``: ``lam``. ``linear``: from ``min_lam`` (0 when None) to ``lam`` over
    ``warmup_steps`` steps, then ``lam``. With ``noise_std > 0`` the value is disturbed
    as ``clamp(lam * (1 + noise_std * eps), 0, 1)`` with ``eps ~ N(0, 1)`` drawn from a
    generator seeded by ``(noise_seed, step)``: the same step always gets the same
    noise, so a resumed run reproduces the uninterrupted one.
    """
    if schedule not in LAMBDA_SCHEDULES:
        raise ValueError(f"lam_schedule {schedule!r} is not one of {LAMBDA_SCHEDULES}")
    if schedule == "linear" and warmup_steps > 0:
        start = 0.0 if min_lam is None else min_lam
        progress = min(max(step, 0) / warmup_steps, 1.0)
        value = start + (lam - start) * progress
    else:
        value = lam
    if noise_std > 0:
        generator = torch.Generator().manual_seed(noise_seed * 1_000_003 + int(step))
        eps = torch.randn((), generator=generator, dtype=torch.float64).item()
        value = value * (1 + noise_std * eps)
    return float(min(max(value, 0.0), 1.0))
