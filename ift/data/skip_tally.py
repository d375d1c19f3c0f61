"""Encoding records one by one, skipping the unusable ones and counting them: a count per
reason, and the first few with their ``file:line``, so that a warning (or the error when
nothing is left) can show them. The data modules and ``ift predict`` both encode this way
(:func:`encode_records`)."""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable, List, Tuple, TypeVar

from ift.data.encoding import SkipExample

RecordT = TypeVar("RecordT")
EncodedT = TypeVar("EncodedT")


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

    def __bool__(self) -> bool:
        return bool(self.counts)

    @property
    def total(self) -> int:
        """How many records were skipped."""
        return sum(self.counts.values())

    def describe(self) -> str:
        """``skipped: {reason: count}; first: file:line (reason), ...`` for the error raised when
        nothing is left: the places, not only the counts, so the user opens the file at the first."""
        first = ", ".join(f"{where} ({why})" for where, why in self.first)
        return f"skipped: {dict(self.counts)}; first: {first}"


def encode_records(records: Iterable[Tuple[str, RecordT]], encode: Callable[[str, RecordT], EncodedT]
                   ) -> Tuple[List[Tuple[str, EncodedT]], SkipTally]:
    """``encode(location, record)`` for every ``(location, record)``, in order.

    Returns the ``(location, encoded)`` pairs of the usable records and the tally of those
    whose ``encode`` raised :class:`~ift.data.encoding.SkipExample` (any other error stops).
    """
    encoded: List[Tuple[str, EncodedT]] = []
    tally = SkipTally()
    for location, record in records:
        try:
            encoded.append((location, encode(location, record)))
        except SkipExample as reason:
            tally.add(location, reason)
    return encoded, tally


__all__ = ["SkipTally", "encode_records"]
