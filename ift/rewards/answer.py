"""Verifiable reward for math word problems: does the response state the gold number?

The ReFT score (SPEC.md, "PPO"): 1 if the answer extracted from the response matches the
gold answer (``|pred - gold| <= 1e-2``), 0.1 if an answer was extracted but is wrong, 0
if none could be extracted.

How :func:`extract_answer` reads a response, first rule that yields a number wins:

1. A strong marker: ``####`` (GSM8K), ``answer:`` / ``answer is`` / ``answer is:`` /
   ``answer =`` (any case) or ``\\boxed{``. The answer is the *first* number after the
   *last* such marker (so ``"answer: 7 or 8"`` gives 7: the model committed to 7 first;
   hedging earns nothing extra). If the last marker has no number after it, the one
   before it is tried, and so on.
2. An equals sign (not part of ``==``, ``<=``, ``>=``, ``!=``): the first number after the
   last ``=`` that has one after it (``"x = 5"`` gives 5).
3. Otherwise the last number in the text.

A number is an optional sign, digits with optional thousands commas (``1,200``), an
optional decimal part and exponent, and an optional ``/denominator`` (``3/4`` gives 0.75).
A number glued to the end of a Latin word (``x2``, ``H2O``) is not one; a trailing
period or unit is ignored (``42.``, ``5km``, ``50%``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Union

from ift.rewards.base import Reward

_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])"  # not inside a word or right after a decimal point
    r"(?P<num>[-+]?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)"
    r"(?:/(?P<den>\d+(?:\.\d+)?)(?![\d.]))?"
)
_STRONG_MARKER = re.compile(r"####|answer\s*(?:is\b\s*[:=]?|[:=])|\\boxed\s*\{", re.IGNORECASE)
_EQUALS_MARKER = re.compile(r"(?<![<>!=])=(?!=)")
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\uff0d": "-"})


def _parse(match: "re.Match[str]") -> Optional[float]:
    try:
        value = float(match.group("num").replace(",", ""))
        den = match.group("den")
        if den is not None and float(den) != 0:
            value /= float(den)
    except (OverflowError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _numbers(text: str) -> List[float]:
    return [v for v in (_parse(m) for m in _NUMBER.finditer(text)) if v is not None]


def _first_number(text: str) -> Optional[float]:
    for match in _NUMBER.finditer(text):
        value = _parse(match)
        if value is not None:
            return value
    return None


def extract_answer(text: Optional[str]) -> Optional[float]:
    """The numeric answer a response states, or None if it states no number.

    See the module docstring for the rules. Examples: ``"-3"`` -> -3.0, ``"3.0"`` -> 3.0,
    ``"1,200"`` -> 1200.0, ``"answer: 7 or 8"`` -> 7.0, ``"The answer is 42."`` -> 42.0,
    ``"x = 5"`` -> 5.0, ``"no idea"`` -> None.
    """
    if not text:
        return None
    text = text.translate(_MINUS_SIGNS)
    for marker in (_STRONG_MARKER, _EQUALS_MARKER):
        for match in reversed(list(marker.finditer(text))):
            value = _first_number(text[match.end():])
            if value is not None:
                return value
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def _gold_value(gold: Any) -> float:
    """A gold answer as a float: a number, a numeric string (``"1,200"``) or text with one (``"#### 72"``)."""
    if isinstance(gold, bool) or gold is None:
        raise ValueError(f"gold answer must be a number or a numeric string, got {gold!r}")
    if isinstance(gold, (int, float)):
        value = float(gold)
    elif isinstance(gold, str):
        try:
            value = float(gold.strip().replace(",", ""))
        except ValueError:
            extracted = extract_answer(gold)
            if extracted is None:
                raise ValueError(f"gold answer {gold!r} contains no number") from None
            value = extracted
    else:
        try:
            value = float(gold)  # numpy / torch scalars
        except (TypeError, ValueError):
            raise ValueError(f"gold answer must be a number or a numeric string, got {gold!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"gold answer must be finite, got {gold!r}")
    return value


def answers_match(pred: Optional[float], gold: Union[float, int, str], tol: float = 1e-2) -> bool:
    """Whether ``|pred - gold| <= tol``; False when ``pred`` is None.

    ``gold`` may be a number or a string (parsed as in :func:`_gold_value`). A relative
    slack of 1e-9 absorbs float rounding at the boundary (``1.01`` matches ``1.0``).
    """
    if pred is None:
        return False
    pred_f = float(pred)
    if not math.isfinite(pred_f):
        return False
    return abs(pred_f - _gold_value(gold)) <= tol * (1 + 1e-9) + 1e-12


class AnswerMatchReward(Reward):
    """ReFT's score: ``correct`` if the extracted answer matches, ``wrong`` if an answer was
    extracted but does not match, ``missing`` if no number could be extracted.

    Args:
        correct: score of a correct answer.
        wrong: score of a wrong but extracted answer (ReFT: 0.1, a bonus for a well-formed answer).
        missing: score when no answer could be extracted.
        tolerance: absolute tolerance of the numeric comparison.
        answer_key: key of the gold answer in each example.
    """

    def __init__(
        self,
        correct: float = 1.0,
        wrong: float = 0.1,
        missing: float = 0.0,
        tolerance: float = 1e-2,
        answer_key: str = "answer",
    ) -> None:
        self.correct = float(correct)
        self.wrong = float(wrong)
        self.missing = float(missing)
        self.tolerance = float(tolerance)
        self.answer_key = answer_key

    def score_one(self, response: str, example: Dict[str, Any]) -> float:
        """Score a single response against ``example[answer_key]``."""
        pred = extract_answer(response)
        if pred is None:
            return self.missing
        return self.correct if answers_match(pred, example[self.answer_key], self.tolerance) else self.wrong

    def __call__(self, prompts: List[str], responses: List[str], examples: List[Dict[str, Any]]) -> List[float]:
        scores = []
        for i, (response, example) in enumerate(zip(responses, examples)):
            if not isinstance(example, dict) or self.answer_key not in example:
                keys = sorted(example) if isinstance(example, dict) else type(example).__name__
                raise KeyError(
                    f"AnswerMatchReward: example {i} has no {self.answer_key!r} field (it has {keys}); "
                    f"give every prompt its gold answer, or set answer_key"
                )
            try:
                scores.append(self.score_one(response, example))
            except ValueError as exc:
                raise ValueError(f"AnswerMatchReward: example {i}: {exc}") from exc
        return scores

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(correct={self.correct}, wrong={self.wrong}, missing={self.missing}, "
            f"tolerance={self.tolerance}, answer_key={self.answer_key!r})"
        )
