"""Drawing distinct problems from a seeded generator (the arithmetic and code tasks)."""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Tuple

#: A generator's two halves: ``draw(rng) -> (prompt, parts)`` and
#: ``complete(rng, prompt, parts) -> example`` (which may draw more from ``rng``).
Draw = Callable[[random.Random], Tuple[str, Any]]
Complete = Callable[[random.Random, str, Any], Dict[str, Any]]


def draw_distinct(count: int, seed: int, draw: Draw, complete: Complete, exclude: Optional[set],
                  give_up: Callable[[], str]) -> List[Dict[str, Any]]:
    """``count`` examples with distinct prompts, none in ``exclude``, deterministic in ``seed``.

    A prompt already drawn (or excluded) is skipped before ``complete`` runs, so the random
    stream only advances for the parts of accepted problems. After ``200 * count + 10_000``
    draws a ``ValueError`` with the message ``give_up()`` is raised (the generator's space
    is too small for ``count`` problems).
    """
    rng = random.Random(seed)
    exclude = set() if exclude is None else exclude
    seen, examples, attempts = set(), [], 0
    while len(examples) < count:
        attempts += 1
        if attempts > 200 * count + 10_000:
            raise ValueError(give_up())
        prompt, parts = draw(rng)
        if prompt in seen or prompt in exclude:
            continue
        seen.add(prompt)
        examples.append(complete(rng, prompt, parts))
    return examples
