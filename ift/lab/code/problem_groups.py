"""Problems in groups, each generated, judged and written before the next one starts.

``ift code-pairs`` and ``ift code-pass-rate --benchmark humaneval`` run for minutes to
hours; a group of problems is their unit of work: its rows (problems x samples) fill about
one generation batch, and it is written to the output as soon as it is judged, so a stop
loses at most the group under way and a rerun continues after the last group written.
Each group's sampling starts from a seed of its own (:func:`group_seed`), so a continued
run writes exactly what one that was never stopped would have written.
"""

from __future__ import annotations

import hashlib
from typing import List


def problem_groups(problems: int, samples: int, batch_size: int) -> List[range]:
    """The problems' indices in consecutive groups of ``max(1, batch_size // samples)``."""
    size = max(1, batch_size // max(1, samples))
    return [range(start, min(start + size, problems)) for start in range(0, problems, size)]


def group_seed(seed: int, first: int) -> int:
    """The seed of the group whose first problem is ``first``: depends on nothing else, and
    far from the seeds of the other groups (``seed + 1`` is another source's seed)."""
    digest = hashlib.sha256(f"problem-group:{seed}:{first}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


__all__ = ["group_seed", "problem_groups"]
