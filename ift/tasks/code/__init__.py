"""The built-in code task: seeded function-synthesis problems with ``assert`` tests.

``generator`` draws the problems, ``data`` serves them (:class:`CodeTaskDataModule`),
``evaluate`` measures a held-out pass rate (:func:`pass_rate`) and ``command`` is
``ift code-pass-rate``. The reward, :class:`ift.rewards.CodeTestsReward`, is generic and
lives in ``ift.rewards``.
"""

from ift.tasks.code.data import CodeTaskDataModule
from ift.tasks.code.evaluate import pass_rate
from ift.tasks.code.generator import Step, apply_steps, code_examples, describe_steps, step_options, steps_to_code

__all__ = ["CodeTaskDataModule", "pass_rate", "Step", "apply_steps", "code_examples", "describe_steps",
           "step_options", "steps_to_code"]
