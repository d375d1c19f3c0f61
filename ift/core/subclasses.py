"""Every subclass of a class, at any depth: how the package lists its objectives and rewards
in error messages (a class defined by a user counts once its module is imported)."""

from __future__ import annotations

from typing import Iterator


def all_subclasses(base: type) -> Iterator[type]:
    """The subclasses of ``base``, their subclasses and so on (``base`` itself left out)."""
    stack = [base]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            yield sub
