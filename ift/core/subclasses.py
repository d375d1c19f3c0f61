"""Every subclass of a class, at any depth: how the package lists its objectives and rewards
in error messages (a class defined by a user counts once its module is imported); and the
arguments a class takes, for the messages that name them."""

from __future__ import annotations

import inspect
from typing import Iterator, List


def all_subclasses(base: type) -> Iterator[type]:
    """The subclasses of ``base``, their subclasses and so on (``base`` itself left out)."""
    stack = [base]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            yield sub


def init_argument_names(cls: type) -> List[str]:
    """The keyword arguments ``cls(...)`` takes, in order: its ``__init__``'s, and, when that
    passes ``**kwargs`` on (``GRPO`` to ``CriticFreeRL``), its bases' too."""
    names: List[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in parameters
                  if p.name != "self" and p.name not in names and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names
