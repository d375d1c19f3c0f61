"""Summaries over seeds: mean with sample std (for tables), mean with its standard error
(for claims: a gain is robust when its mean is several standard errors from 0)."""

from __future__ import annotations

import math
import statistics
from typing import Sequence, Tuple


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mean_and_standard_error(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and the standard error of that mean, sample std / sqrt(n) (needs n >= 2)."""
    if len(values) < 2:
        raise ValueError(f"a standard error needs at least 2 values, got {len(values)}")
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
