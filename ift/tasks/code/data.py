"""The code task's data module: generated problems with tests and disjoint held-out splits."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ift.data.generated import GeneratedTaskDataModule
from ift.tasks.code.generator import code_examples


class CodeTaskDataModule(GeneratedTaskDataModule):
    """Generated function-synthesis problems with tests, a disjoint held-out split, for
    SFT on the reference code and PPO with :class:`ift.rewards.CodeTestsReward`.

    Args:
        num_train: training problems.
        num_val: held-out problems (never in the training set).
        num_test: test problems (disjoint from both).
        max_steps: most steps in a function (each one of add/subtract/times/square).
        max_constant: largest constant in a step.
        num_tests: assert lines per problem.
        min_input: smallest test input.
        max_input: largest test input.
        task_seed: seed of the problem generator.
        batch_size: see :class:`ExamplesDataModule` (as are the other arguments).
    """

    task_name = "code_task"

    def __init__(
        self,
        num_train: int = 500,
        num_val: int = 100,
        num_test: int = 100,
        max_steps: int = 2,
        max_constant: int = 9,
        num_tests: int = 4,
        min_input: int = -9,
        max_input: int = 9,
        task_seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: Optional[int] = None,
        max_length: int = 96,
        padding_side: str = "right",
        num_workers: int = 0,
        seed: int = 0,
        tokenizer: Optional[Any] = None,
    ):
        super().__init__(num_train, num_val, num_test, task_seed,
                         dict(max_steps=max_steps, max_constant=max_constant, num_tests=num_tests,
                              min_input=min_input, max_input=max_input),
                         batch_size=batch_size, eval_batch_size=eval_batch_size, max_length=max_length,
                         padding_side=padding_side, num_workers=num_workers, seed=seed, tokenizer=tokenizer)

    def generate(self, count: int) -> List[Dict[str, Any]]:
        return code_examples(count, self.task_seed, **self.task)
