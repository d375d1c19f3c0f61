"""A generated, seeded function-synthesis task for code rewards, small enough for a
character-level 2-layer model.

A prompt describes a function of ``x`` in words, one to ``max_steps`` steps applied in
order; the response is the Python function; the tests are ``assert`` lines on random
inputs::

    prompt:   "# f(x): add 3, times 2\\n"
    response: "def f(x):\\n    return (x+3)*2"
    tests:    ["assert f(4) == 14", "assert f(-2) == 2", ...]

Steps: ``add K`` (``+K``), ``subtract K`` (``-K``), ``times K`` (``*K``, K >= 2) and
``square`` (``**2``), with constants 1..``max_constant``. Problems are drawn uniformly
from all problems, so the training and held-out splits have the same mix of lengths. The reference code uses the
fewest parentheses. Examples carry ``tests`` (read by :class:`ift.rewards.CodeTestsReward`)
and no ``answer`` (``val/accuracy`` is a numeric match and does not apply); measure the
held-out pass rate with :func:`ift.tasks.code.pass_rate` or ``ift code-pass-rate --ckpt ...``.
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ift.data.distinct import draw_distinct

Step = Tuple[str, int]
_PRECEDENCE = {"atom": 4, "power": 3, "product": 2, "sum": 1}


def describe_steps(steps: Sequence[Step]) -> str:
    """``[("add", 3), ("mul", 2)]`` -> ``"add 3, times 2"``."""
    words = {"add": "add {}", "sub": "subtract {}", "mul": "times {}", "square": "square"}
    return ", ".join(words[op].format(k) for op, k in steps)


def steps_to_code(steps: Sequence[Step], name: str = "f") -> str:
    """The reference function: ``def f(x):\\n    return <expression>`` with minimal parentheses."""
    expr, level = "x", "atom"
    for op, k in steps:
        if op in ("add", "sub"):
            expr, level = f"{expr}{'+' if op == 'add' else '-'}{k}", "sum"
        elif op == "mul":
            left = expr if _PRECEDENCE[level] >= _PRECEDENCE["product"] else f"({expr})"
            expr, level = f"{left}*{k}", "product"
        elif op == "square":
            left = expr if level == "atom" else f"({expr})"
            expr, level = f"{left}**2", "power"
        else:
            raise ValueError(f"unknown step {op!r}")
    return f"def {name}(x):\n    return {expr}"


def apply_steps(steps: Sequence[Step], x: int) -> int:
    """The function's value at ``x``, computed step by step (not from the code)."""
    for op, k in steps:
        if op == "add":
            x = x + k
        elif op == "sub":
            x = x - k
        elif op == "mul":
            x = x * k
        elif op == "square":
            x = x * x
    return x


def step_options(max_constant: int) -> List[Step]:
    """Every single step: ``add``/``subtract`` 1..max_constant, ``times`` 2..max(2, max_constant), ``square``."""
    return ([("add", k) for k in range(1, max_constant + 1)] + [("sub", k) for k in range(1, max_constant + 1)]
            + [("mul", k) for k in range(2, max(2, max_constant) + 1)] + [("square", 0)])


def _draw_steps(rng: random.Random, max_steps: int, max_constant: int) -> List[Step]:
    """One problem drawn uniformly from all problems of 1..max_steps steps.

    The number of steps is weighted by how many problems have it (``len(options) ** n``):
    drawing it uniformly would exhaust the few one-step problems within the first draws,
    so the held-out splits (cut from the first draws) would be mostly one-step problems
    that training hardly contains.
    """
    options = step_options(max_constant)
    lengths = list(range(1, max_steps + 1))
    length = rng.choices(lengths, weights=[len(options) ** n for n in lengths])[0]
    return [rng.choice(options) for _ in range(length)]


def code_examples(
    count: int,
    seed: int,
    max_steps: int = 2,
    max_constant: int = 9,
    num_tests: int = 4,
    min_input: int = -9,
    max_input: int = 9,
    exclude: Optional[set] = None,
) -> List[Dict[str, Any]]:
    """``count`` distinct problems (by prompt), deterministic in ``seed``."""
    if max_steps < 1 or max_constant < 1:
        raise ValueError(f"code task: max_steps and max_constant must be >= 1, got {max_steps}, {max_constant}")
    inputs = list(range(min_input, max_input + 1))
    if num_tests < 1 or num_tests > len(inputs):
        raise ValueError(f"code task: num_tests must be in [1, {len(inputs)}] (the inputs {min_input}..{max_input}), got {num_tests}")
    def draw(rng: random.Random):
        steps = _draw_steps(rng, max_steps, max_constant)
        return f"# f(x): {describe_steps(steps)}\n", steps

    def complete(rng: random.Random, prompt: str, steps) -> Dict[str, Any]:
        tests = [f"assert f({x}) == {apply_steps(steps, x)}" for x in rng.sample(inputs, num_tests)]
        return {"prompt": prompt, "response": steps_to_code(steps), "tests": tests}

    return draw_distinct(count, seed, draw, complete, exclude, lambda: (
        f"code task: could not draw {count} distinct problems with max_steps={max_steps} and "
        f"max_constant={max_constant}; raise them or ask for fewer examples"))
