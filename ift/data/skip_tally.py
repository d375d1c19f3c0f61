"""The tally of records skipped as unusable: a count per reason, and the first few with
their ``file:line``, so that a warning (or the error when nothing is left) can show them."""

from __future__ import annotations

from collections import Counter
from typing import List, Tuple


class SkipTally:
    """Counts skipped records by reason and keeps the first :attr:`KEPT` as ``(location, reason)``."""

    KEPT = 5

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.first: List[Tuple[str, str]] = []

    def add(self, location: str, reason: object) -> None:
        """Count one skipped record at ``location`` (``file:line``) for ``reason``."""
        self.counts[str(reason)] += 1
        if len(self.first) < self.KEPT:
            self.first.append((location, str(reason)))
