"""The built-in code task: seeded function-synthesis problems with ``assert`` tests.

``generator`` draws the problems, ``data`` serves them (:class:`CodeTaskDataModule`),
``evaluate`` measures a held-out pass rate (:func:`pass_rate`) and ``pass_at_k`` is the
unbiased pass@k estimator.
``atomic``, ``composition_split`` and ``composition_data`` are the atomic/synthetic variant of the
SFT-vs-RL code study (:class:`CompositionCodeDataModule`). The reward, :class:`ift.rewards.CodeTestsReward`, is generic and
lives in ``ift.rewards``. What runs experiments on the task (``ift code-pass-rate``,
``ift code-pairs``, HumanEval) is lab code: :mod:`ift.lab.code`.
"""

from ift.tasks.code.atomic import ATOMICS, apply_composition, composition_code, composition_prompt
from ift.tasks.code.composition_data import CompositionCodeDataModule
from ift.tasks.code.composition_split import CompositionSplitSettings, composition_splits, leaks, write_composition_splits
from ift.tasks.code.data import CodeTaskDataModule
from ift.tasks.code.evaluate import pass_rate
from ift.tasks.code.generator import Step, apply_steps, code_examples, describe_steps, step_options, steps_to_code
from ift.tasks.code.pass_at_k import mean_pass_at_k, pass_at_k

__all__ = ["ATOMICS", "apply_composition", "composition_code", "composition_prompt", "CompositionCodeDataModule",
           "CompositionSplitSettings", "composition_splits", "leaks", "write_composition_splits", "CodeTaskDataModule", "pass_rate", "Step", "apply_steps", "code_examples", "describe_steps",
           "step_options", "steps_to_code", "mean_pass_at_k", "pass_at_k"]
