"""The arithmetic task's data module: generated problems with disjoint held-out splits."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ift.data.generated import GeneratedTaskDataModule
from ift.tasks.arithmetic.generator import arithmetic_examples


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
        use_chat_template: render each problem as a user turn of the tokenizer's chat template
            (for instruct models; the response is the assistant's answer).
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
        use_chat_template: bool = False,
    ):
        super().__init__(num_train, num_val, num_test, task_seed,
                         dict(num_operands=num_operands, min_operand=min_operand, max_operand=max_operand,
                              operators=operators, worked_solution=worked_solution),
                         batch_size=batch_size, eval_batch_size=eval_batch_size, max_length=max_length,
                         padding_side=padding_side, num_workers=num_workers, seed=seed, tokenizer=tokenizer,
                         use_chat_template=use_chat_template)

    def generate(self, count: int) -> List[Dict[str, Any]]:
        return arithmetic_examples(count, self.task_seed, **self.task)
