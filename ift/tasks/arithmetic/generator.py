"""A generated, seeded arithmetic task (``"17+25*2="`` -> ``"67"``) so everything runs offline:
the problems, their exact answers and, optionally, worked solutions."""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Tuple

from ift.data.distinct import draw_distinct


def evaluate_with_steps(operands: List[int], operators: List[str],
                        wrong_step: Optional[Tuple[int, int]] = None) -> Tuple[int, List[str]]:
    """Value of the expression with ``*`` before ``+``/``-``, and the worked steps.

    ``wrong_step=(k, offset)`` works a *wrong* solution: step ``k``'s result is off by
    ``offset`` and every later step is worked correctly from that wrong value (used for the
    rejected side of preference pairs)."""
    values, ops, steps = [operands[0]], [], []

    def result(value: int) -> int:
        if wrong_step is not None and len(steps) == wrong_step[0]:
            return value + wrong_step[1]
        return value

    for op, value in zip(operators, operands[1:]):
        if op == "*":
            product = result(values[-1] * value)
            steps.append(f"{values[-1]}*{value}={product}")
            values[-1] = product
        else:
            values.append(value)
            ops.append(op)
    total = values[0]
    for op, value in zip(ops, values[1:]):
        new_total = result(total + value if op == "+" else total - value)
        steps.append(f"{total}{op}{value}={new_total}")
        total = new_total
    return total, steps


def make_problem(rng: random.Random, num_operands: int, min_operand: int, max_operand: int, operators: str) -> Tuple[List[int], List[str]]:
    """``num_operands`` operands drawn from ``[min_operand, max_operand]`` and the operators between them."""
    operands = [rng.randint(min_operand, max_operand) for _ in range(num_operands)]
    ops = [rng.choice(operators) for _ in range(num_operands - 1)]
    return operands, ops


def arithmetic_examples(
    count: int,
    seed: int,
    num_operands: int = 2,
    min_operand: int = 0,
    max_operand: int = 20,
    operators: str = "+-*",
    worked_solution: bool = False,
    exclude: Optional[set] = None,
) -> List[Dict[str, Any]]:
    """``count`` distinct problems (none of whose prompt is in ``exclude``)."""
    def draw(rng: random.Random):
        operands, ops = make_problem(rng, num_operands, min_operand, max_operand, operators)
        return "".join(str(v) + o for v, o in zip(operands, ops)) + str(operands[-1]) + "=", (operands, ops)

    def complete(rng: random.Random, prompt: str, parts) -> Dict[str, Any]:
        value, steps = evaluate_with_steps(*parts)
        response = f"{','.join(steps)} answer: {value}" if worked_solution and steps else str(value)
        return {"prompt": prompt, "response": response, "answer": str(value)}

    return draw_distinct(count, seed, draw, complete, exclude, lambda: (
        f"arithmetic task: could not draw {count} distinct problems with operands in "
        f"[{min_operand}, {max_operand}], {num_operands} operands and operators {operators!r}; "
        f"widen the range or ask for fewer examples"))
