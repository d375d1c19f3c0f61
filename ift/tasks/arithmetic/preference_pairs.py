"""Preference pairs on the arithmetic task: a correct worked solution against a wrong one.

For reward-model training and evaluation (the fine-tuning set of the CodePMP experiment).
The rejected solution works the same problem with **one** step's result off by a small
nonzero amount, and every later step worked correctly from that wrong value, so the mistake
is local (one false step) and the final answer is wrong::

    prompt:   "17+25*2="
    chosen:   "25*2=50,17+50=67 answer: 67"
    rejected: "25*2=52,17+52=69 answer: 69"

A reward model has to check the arithmetic of each step to tell them apart: the format, the
length and the numbers copied from the prompt are the same on both sides.
"""

from __future__ import annotations

import random
import re
from typing import Any, Dict, List, Optional, Tuple

from ift.tasks.arithmetic.generator import arithmetic_examples, evaluate_with_steps

#: The offsets a wrong step's result is moved by (never 0, so the step is always false).
ERROR_OFFSETS = (-10, -3, -2, -1, 1, 2, 3, 10)


def parse_prompt(prompt: str) -> Tuple[List[int], List[str]]:
    """``"17+25*2="`` -> ``([17, 25, 2], ["+", "*"])`` (the task's operands are non-negative)."""
    tokens = re.findall(r"\d+|[+\-*]", prompt.rstrip("="))
    operands, operators = [int(t) for t in tokens[::2]], tokens[1::2]
    if not operands or len(operators) != len(operands) - 1 or "".join(tokens) + "=" != prompt:
        raise ValueError(f"arithmetic preference pairs: cannot read the problem {prompt!r} (expected e.g. '17+25*2=')")
    return operands, operators


def worked_solution(operands: List[int], operators: List[str], wrong_step: Optional[Tuple[int, int]] = None) -> str:
    """The task's worked-solution response, or a wrong one (see ``evaluate_with_steps``)."""
    value, steps = evaluate_with_steps(operands, operators, wrong_step)
    return f"{','.join(steps)} answer: {value}"


def arithmetic_preference_pairs(count: int, seed: int, num_operands: int = 3, min_operand: int = 0,
                                max_operand: int = 20, operators: str = "+-*",
                                exclude: Optional[set] = None) -> List[Dict[str, Any]]:
    """``count`` pairs ``{"prompt", "chosen", "rejected", "answer"}`` on distinct problems
    (none of whose prompt is in ``exclude``), deterministic in ``seed``. The wrong step and
    its offset are drawn uniformly (steps) and from :data:`ERROR_OFFSETS`."""
    if num_operands < 2:
        raise ValueError("arithmetic preference pairs need num_operands >= 2 (a worked solution has a step)")
    problems = arithmetic_examples(count, seed, num_operands, min_operand, max_operand, operators,
                                   worked_solution=True, exclude=exclude)
    rng = random.Random(f"preference-pairs-{seed}")
    return [pair_from_example(problem, rng) for problem in problems]


def pair_from_example(example: Dict[str, Any], rng: random.Random) -> Dict[str, Any]:
    """The pair of one worked-solution example (``prompt``, ``response``, ``answer``): its
    response as chosen, a wrong solution (one step off, drawn from ``rng``) as rejected."""
    operands, ops = parse_prompt(example["prompt"])
    if not ops:
        raise ValueError(f"arithmetic preference pairs: {example['prompt']!r} has no step to get wrong")
    wrong = (rng.randrange(len(ops)), rng.choice(ERROR_OFFSETS))
    return {"prompt": example["prompt"], "chosen": example["response"],
            "rejected": worked_solution(operands, ops, wrong), "answer": example["answer"]}
