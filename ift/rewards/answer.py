"""Verifiable reward for math word problems: does the response state the gold number?

The ReFT score (docs/reft.md; Luong et al. 2024, §3.1): 1 if the answer extracted from the
response matches the gold answer (``|pred - gold| <= 1e-2``), 0.1 if an answer was extracted
but is wrong, 0 if none could be extracted. What counts as "extracted" decides who gets the
0.1, and there are two rules:

* **ReFT's rule** (:func:`extract_triggered_answer`, ``AnswerMatchReward(trigger=...)``): the
  answer is the *first* number after the *last* occurrence of the CoT format's answer
  *trigger* (``"The answer is"`` in ReFT's natural-language CoT, ``"####"`` in GSM8K's own
  solutions), in any case. No trigger, or no number after the last one: nothing extracted,
  score 0, however many numbers the response holds. So 0.1 pays for a well-formed answer,
  not for any number.
* **The liberal rule** (:func:`extract_answer`, the default ``trigger=None``), first rule that
  yields a number wins:

  1. A strong marker: ``####`` (GSM8K), ``answer:`` / ``answer is`` / ``answer is:`` /
     ``answer =`` (any case) or ``\\boxed{``. The answer is the *first* number after the
     *last* such marker (so ``"answer: 7 or 8"`` gives 7: the model committed to 7 first;
     hedging earns nothing extra). If the last marker has no number after it, the one
     before it is tried, and so on.
  2. An equals sign (not part of ``==``, ``<=``, ``>=``, ``!=``): the first number after the
     last ``=`` that has one after it (``"x = 5"`` gives 5).
  3. Otherwise the last number in the text.

  It suits models not trained on one answer format (and greedy ``val/accuracy``), but it
  pays 0.1 to nearly every response that contains a digit.

A number, under both rules, is an optional sign, digits with optional thousands commas
(``1,200``), an optional decimal part and exponent, and an optional ``/denominator``
(``3/4`` gives 0.75). A number glued to the end of a Latin word (``x2``, ``H2O``) is not one;
a trailing period or unit is ignored (``42.``, ``5km``, ``50%``).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

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


def _trigger_tuple(triggers: Union[str, Sequence[str]], owner: str) -> Tuple[str, ...]:
    """``triggers`` as a tuple of non-blank phrases; a clear error for anything else."""
    phrases = [triggers] if isinstance(triggers, str) else triggers
    try:
        phrases = list(phrases)
    except TypeError:
        raise TypeError(f"{owner}: trigger must be a phrase or a list of phrases, got {triggers!r}") from None
    if not phrases:
        raise ValueError(
            f"{owner}: trigger is an empty list; give the phrase that precedes the final answer in "
            f"the SFT data (e.g. trigger: ['####'] for GSM8K, ['The answer is'] for ReFT's CoT), "
            f"or leave trigger unset (null) for the liberal extraction rules"
        )
    for phrase in phrases:
        if not isinstance(phrase, str):
            raise TypeError(f"{owner}: every trigger must be a string, got {phrase!r} in {triggers!r}")
        if not phrase.strip():
            raise ValueError(
                f"{owner}: trigger {phrase!r} is empty or blank, so it would match everywhere; give "
                f"the phrase that precedes the final answer in the SFT data (e.g. trigger: ['####'] "
                f"for GSM8K, ['The answer is'] for ReFT's CoT), or leave trigger unset (null) for "
                f"the liberal extraction rules"
            )
    return tuple(phrases)


@functools.lru_cache(maxsize=64)
def _trigger_pattern(triggers: Tuple[str, ...]) -> "re.Pattern[str]":
    # A zero-width lookahead finds every occurrence, overlapping ones included; at each position
    # the longest phrase that matches there wins (alternatives are tried longest first).
    alternatives = "|".join(re.escape(t) for t in sorted(set(triggers), key=len, reverse=True))
    return re.compile(f"(?=({alternatives}))", re.IGNORECASE)


def extract_triggered_answer(text: Optional[str], triggers: Union[str, Sequence[str]]) -> Optional[float]:
    """ReFT's EXTRACT: the first number after the last answer trigger, or None.

    ``triggers`` is a phrase or a list of phrases (``"The answer is"``, ``"####"``), matched in
    any case. The answer is the first number (as in :func:`extract_answer`) after the *last*
    occurrence of any of them (the one that starts last; at the same start, the longest).
    None when no trigger occurs, or when no number follows the last one: a number elsewhere,
    or after an earlier trigger, does not count. Examples with ``"The answer is"``:
    ``"2 + 3 = 5. The answer is 5."`` -> 5.0, ``"the ANSWER is 7 or 8"`` -> 7.0,
    ``"2 + 3 = 5"`` -> None, ``"The answer is 4. No, the answer is unclear"`` -> None.
    """
    pattern = _trigger_pattern(_trigger_tuple(triggers, "extract_triggered_answer"))
    if not text:
        return None
    text = text.translate(_MINUS_SIGNS)  # one character for one: positions do not move
    last = None
    for last in pattern.finditer(text):
        pass
    if last is None:
        return None
    return _first_number(text[last.start() + len(last.group(1)):])


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
    extracted but does not match, ``missing`` if no answer could be extracted.

    What "extracted" means is ``trigger``'s choice: ReFT's rule (a number after the answer
    trigger) when it is set, the liberal rules of :func:`extract_answer` when it is None.

    Args:
        correct: score of a correct answer (ReFT: 1).
        wrong: score of a wrong but extracted answer (ReFT: 0.1, a partial reward for a
            well-formed answer; ReFT pays it only for a number after the answer trigger, so set
            ``trigger`` to reproduce it).
        missing: score when no answer could be extracted (ReFT: 0): with ``trigger`` set, no
            trigger in the response or no number after the last one.
        tolerance: absolute tolerance of the numeric comparison (ReFT: 1e-2).
        answer_key: key of the gold answer in each example.
        trigger: the phrase (or list of phrases) that precedes the final answer in the SFT
            data's format, matched in any case; the answer is the first number after its last
            occurrence. This is ReFT's rule: ``"The answer is"`` for ReFT's own CoT format,
            ``"####"`` for GSM8K's worked solutions. It must match what the warm-up taught the
            model to write, or every response scores ``missing``. In YAML and on the command
            line give a phrase that starts with ``#`` as a list, ``trigger: ["####"]``: the
            CLI re-reads a lone string as YAML, where ``####`` is a comment, i.e. null.
            None (default): the liberal rules of :func:`extract_answer` (a marker, else the
            last ``=``, else the last number), which pay ``wrong`` to nearly any response with
            a number in it; not ReFT's rule.
    """

    def __init__(
        self,
        correct: float = 1.0,
        wrong: float = 0.1,
        missing: float = 0.0,
        tolerance: float = 1e-2,
        answer_key: str = "answer",
        trigger: Optional[Union[str, List[str]]] = None,
    ) -> None:
        self.correct = float(correct)
        self.wrong = float(wrong)
        self.missing = float(missing)
        self.tolerance = float(tolerance)
        self.answer_key = answer_key
        if trigger is None:
            self.trigger: Optional[Union[str, List[str]]] = None
            self.triggers: Optional[Tuple[str, ...]] = None
        else:
            self.triggers = _trigger_tuple(trigger, "AnswerMatchReward")
            self.trigger = trigger if isinstance(trigger, str) else list(self.triggers)

    def extract(self, response: str) -> Optional[float]:
        """The answer this reward reads from ``response`` (ReFT's rule when ``trigger`` is set)."""
        if self.triggers is None:
            return extract_answer(response)
        return extract_triggered_answer(response, self.triggers)

    def score_one(self, response: str, example: Dict[str, Any]) -> float:
        """Score a single response against ``example[answer_key]``."""
        pred = self.extract(response)
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
            f"tolerance={self.tolerance}, answer_key={self.answer_key!r}, trigger={self.trigger!r})"
        )
