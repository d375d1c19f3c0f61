"""A generated, seeded arithmetic task (``"17+25*2="`` -> ``"67"``) so everything runs offline."""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Tuple

from ift.data.generated import GeneratedTaskDataModule


def evaluate_with_steps(operands: List[int], operators: List[str]) -> Tuple[int, List[str]]:
    """Value of the expression with ``*`` before ``+``/``-``, and the worked steps."""
    values, ops, steps = [operands[0]], [], []
    for op, value in zip(operators, operands[1:]):
        if op == "*":
            product = values[-1] * value
            steps.append(f"{values[-1]}*{value}={product}")
            values[-1] = product
        else:
            values.append(value)
            ops.append(op)
    total = values[0]
    for op, value in zip(ops, values[1:]):
        new_total = total + value if op == "+" else total - value
        steps.append(f"{total}{op}{value}={new_total}")
        total = new_total
    return total, steps


def make_problem(rng: random.Random, num_operands: int, min_operand: int, max_operand: int, operators: str) -> Tuple[List[int], List[str]]:
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
    rng = random.Random(seed)
    exclude = set() if exclude is None else exclude
    seen, examples, attempts = set(), [], 0
    while len(examples) < count:
        attempts += 1
        if attempts > 200 * count + 10_000:
            raise ValueError(
                f"arithmetic task: could not draw {count} distinct problems with operands in "
                f"[{min_operand}, {max_operand}], {num_operands} operands and operators {operators!r}; "
                f"widen the range or ask for fewer examples"
            )
        operands, ops = make_problem(rng, num_operands, min_operand, max_operand, operators)
        prompt = "".join(str(v) + o for v, o in zip(operands, ops)) + str(operands[-1]) + "="
        if prompt in seen or prompt in exclude:
            continue
        seen.add(prompt)
        value, steps = evaluate_with_steps(operands, ops)
        response = f"{','.join(steps)} answer: {value}" if worked_solution and steps else str(value)
        examples.append({"prompt": prompt, "response": response, "answer": str(value)})
    return examples


class ArithmeticDataModule(GeneratedTaskDataModule):
    """Generated arithmetic problems with a disjoint held-out split and exact answers.

    Args:
        num_train: training problems.
        num_val: held-out problems (never in the training set), used for ``val/accuracy``.
        num_test: test problems (disjoint from both).
        num_operands: operands per expression.
        min_operand: smallest operand.
        max_operand: largest operand.
        operators: operators to draw from (``+``, ``-``, ``*``; ``*`` binds first).
        worked_solution: write the intermediate steps before ``answer: N``.
        task_seed: seed of the problem generator.
        batch_size: see :class:`ExamplesDataModule` (as are the other arguments).
    """

    task_name = "arithmetic"

    def __init__(
        self,
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 200,
        num_operands: int = 2,
        min_operand: int = 0,
        max_operand: int = 50,
        operators: str = "+-*",
        worked_solution: bool = False,
        task_seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: Optional[int] = None,
        max_length: int = 64,
        padding_side: str = "right",
        num_workers: int = 0,
        seed: int = 0,
        tokenizer: Optional[Any] = None,
    ):
        super().__init__(num_train, num_val, num_test, task_seed,
                         dict(num_operands=num_operands, min_operand=min_operand, max_operand=max_operand,
                              operators=operators, worked_solution=worked_solution),
                         batch_size=batch_size, eval_batch_size=eval_batch_size, max_length=max_length,
                         padding_side=padding_side, num_workers=num_workers, seed=seed, tokenizer=tokenizer)

    def generate(self, count: int) -> List[Dict[str, Any]]:
        return arithmetic_examples(count, self.task_seed, **self.task)
