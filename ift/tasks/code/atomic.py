"""A fixed library of *atomic* functions and the *synthetic* functions composed of them.

The set-up of the SFT-vs-RL code study (docs/code_study.md): an atomic function is one
documented operation on an integer ``x``; a synthetic function applies 2-4 atomic ones in
order. A problem describes the function in words and asks for its Python code, written
as one line per operation, so that a composition's code is the concatenation of its
parts' lines::

    prompt:   "# f(x): add 3, absolute value, mod 4\\n"
    response: "def f(x):\\n    x = x+3\\n    x = abs(x)\\n    x = x%4\\n    return x"

The library holds :data:`ATOMICS` (45 functions: arithmetic with a constant, integer
division and remainder, powers, sign and comparisons, digits). Each one's value is computed
here by plain Python (:attr:`Atomic.apply`), never from its code line, so a test of the code
against the values checks two independent writings of the same operation.
"""

from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple


class Atomic(NamedTuple):
    """One atomic function.

    Attributes:
        name: its identifier (``add3``, ``abs``, ``digit_sum``, ...).
        description: the words a prompt uses for it (``add 3``).
        line: its code, one assignment to ``x`` (``x = x+3``).
        apply: its value at an integer, written without its code line.
    """

    name: str
    description: str
    line: str
    apply: Callable[[int], int]


def _digit_sum(x: int) -> int:
    total, x = 0, abs(x)
    while x:
        total, x = total + x % 10, x // 10
    return total


def _remainder(x: int, k: int) -> int:
    """x mod k in [0, k) for k > 0, from the absolute value (Python's ``%`` takes the divisor's sign)."""
    r = abs(x) - k * (abs(x) // k)
    return k - r if x < 0 and r else r


def _digit_count(x: int) -> int:
    count, x = 1, abs(x)
    while x >= 10:
        count, x = count + 1, x // 10
    return count


def _library() -> Tuple[Atomic, ...]:
    atoms: List[Atomic] = []
    for k in range(1, 10):
        atoms.append(Atomic(f"add{k}", f"add {k}", f"x = x+{k}", lambda x, k=k: x + k))
    for k in range(1, 10):
        atoms.append(Atomic(f"sub{k}", f"subtract {k}", f"x = x-{k}", lambda x, k=k: x - k))
    for k in range(2, 6):
        atoms.append(Atomic(f"mul{k}", f"times {k}", f"x = x*{k}", lambda x, k=k: x * k))
    for k in range(2, 6):
        # Python's floor division rounds toward minus infinity: -7 // 2 == -4.
        atoms.append(Atomic(f"div{k}", f"floor divide by {k}", f"x = x//{k}",
                            lambda x, k=k: int((x - _remainder(x, k)) / k)))
    for k in range(2, 10):
        atoms.append(Atomic(f"mod{k}", f"mod {k}", f"x = x%{k}", lambda x, k=k: _remainder(x, k)))
    atoms += [
        Atomic("square", "square", "x = x*x", lambda x: x * x),
        Atomic("cube", "cube", "x = x**3", lambda x: x * x * x),
        Atomic("negate", "negate", "x = -x", lambda x: 0 - x),
        Atomic("abs", "absolute value", "x = abs(x)", lambda x: x if x >= 0 else -x),
        Atomic("relu", "max with 0", "x = max(x, 0)", lambda x: x if x > 0 else 0),
        Atomic("min0", "min with 0", "x = min(x, 0)", lambda x: x if x < 0 else 0),
        Atomic("sign", "sign", "x = (x>0)-(x<0)", lambda x: 1 if x > 0 else (-1 if x < 0 else 0)),
        Atomic("is_even", "is even", "x = int(x%2==0)", lambda x: 1 - _remainder(x, 2)),
        Atomic("last_digit", "last digit", "x = abs(x)%10", lambda x: _remainder(abs(x), 10)),
        Atomic("digit_sum", "digit sum", "x = sum(map(int, str(abs(x))))", _digit_sum),
        Atomic("digit_count", "count digits", "x = len(str(abs(x)))", _digit_count),
    ]
    return tuple(atoms)


#: The library, in a fixed order (a composition is a tuple of these names).
ATOMICS: Tuple[Atomic, ...] = _library()
#: ``name -> Atomic``.
ATOMIC_BY_NAME: Dict[str, Atomic] = {atom.name: atom for atom in ATOMICS}


def _atoms(names: Sequence[str]) -> List[Atomic]:
    if not names:
        raise ValueError("composition: no atomic function given; a function applies at least one")
    unknown = [name for name in names if name not in ATOMIC_BY_NAME]
    if unknown:
        raise ValueError(f"composition: unknown atomic function(s) {unknown}; the library has {sorted(ATOMIC_BY_NAME)}")
    return [ATOMIC_BY_NAME[name] for name in names]


def composition_prompt(names: Sequence[str]) -> str:
    """``("add3", "abs")`` -> ``"# f(x): add 3, absolute value\\n"``."""
    return "# f(x): " + ", ".join(atom.description for atom in _atoms(names)) + "\n"


def composition_code(names: Sequence[str], name: str = "f") -> str:
    """The reference function: one line per atomic function, in order, then ``return x``."""
    body = "".join(f"    {atom.line}\n" for atom in _atoms(names))
    return f"def {name}(x):\n{body}    return x"


def apply_composition(names: Sequence[str], x: int) -> int:
    """The composition's value at ``x``: each atomic function's :attr:`Atomic.apply` in order."""
    for atom in _atoms(names):
        x = atom.apply(x)
    return x


__all__ = ["ATOMICS", "ATOMIC_BY_NAME", "Atomic", "apply_composition", "composition_code", "composition_prompt"]
