"""Checks of numeric arguments, made when an objective (or a sampling engine) is built.

A hyper-parameter that is nan, infinite or outside its range does not fail where it is
given: ``margin: .nan`` in YAML trains for steps before the loss turns nan, and a
negative weight quietly turns a minimisation into a maximisation. Every objective checks
its numbers here instead, so the message always names the objective, the argument and
the range it must lie in, and it comes before the model is loaded.

Ranges are written as intervals, ``"[0, 1]"``, ``"(0, inf)"``, ``"[0, 0.5)"``: a square
bracket includes its end, a round one excludes it. ``inf`` is never included: an infinite
hyper-parameter is refused like nan (``None``, where an argument takes it, is the way to
say "no limit").
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Optional

__all__ = ["check_number", "check_integer", "Interval"]

_BOUND = r"\s*([-+]?(?:inf|\d+(?:\.\d*)?(?:e[-+]?\d+)?))\s*"
_INTERVAL = re.compile(rf"^([\[(]){_BOUND},{_BOUND}([\])])$")


class Interval:
    """A range of allowed values written as ``"[low, high)"`` (see the module's docstring)."""

    def __init__(self, text: str):
        match = _INTERVAL.match(text.strip())
        if match is None:
            raise ValueError(f"not an interval: {text!r} (write it as '[0, 1]', '(0, inf)', ...)")
        opening, low, high, closing = match.groups()
        self.text = text.strip()
        self.low, self.high = float(low), float(high)
        self.low_closed, self.high_closed = opening == "[", closing == "]"

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        return self.text


def check_number(owner: str, name: str, value: Any, allowed: str = "(-inf, inf)",
                 optional: bool = False) -> Optional[float]:
    """``value`` as a float if it is a finite number in ``allowed``; otherwise a ValueError
    saying ``"<owner>: <name> must be a finite number in <allowed>, got <value>"``.

    ``optional``: None is accepted too (and returned as None). Booleans are refused: in
    YAML ``true`` for a number is a slip, not 1.0.
    """
    if value is None and optional:
        return None
    interval = Interval(allowed)
    number = value if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    if number is None or float(number) not in interval:
        place = "" if interval.low == -math.inf and interval.high == math.inf else f" in {interval}"
        also = " or None" if optional else ""
        raise ValueError(f"{owner}: {name} must be a finite number{place}{also}, got {value!r}")
    return float(number)


def check_integer(owner: str, name: str, value: Any, minimum: int = 0, optional: bool = False) -> Optional[int]:
    """``value`` as an int if it is a whole number ``>= minimum`` (a float such as ``2.0``
    counts); otherwise a ValueError naming ``owner``, ``name`` and the smallest value allowed."""
    if value is None and optional:
        return None
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    whole = number and (isinstance(value, numbers.Integral) or (math.isfinite(value) and value == int(value)))
    if not whole or int(value) < minimum:
        also = " or None" if optional else ""
        raise ValueError(f"{owner}: {name} must be a whole number >= {minimum}{also}, got {value!r}")
    return int(value)
