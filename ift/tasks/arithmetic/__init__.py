"""The built-in arithmetic task: seeded expressions such as ``"17+25*2="`` with exact answers.

``generator`` draws the problems (:func:`arithmetic_examples`); ``data`` serves them
(:class:`ArithmeticDataModule`).
"""

from ift.tasks.arithmetic.data import ArithmeticDataModule
from ift.tasks.arithmetic.generator import arithmetic_examples, evaluate_with_steps, make_problem

__all__ = ["ArithmeticDataModule", "arithmetic_examples", "evaluate_with_steps", "make_problem"]
