"""Participant counts as they may leave a site: coarsened to a granularity, or withheld.

A count of participants that reaches a job log is a release like any sum: two jobs whose logged
cohorts differ by one tell which group a participant is in (attack D2), and an exact ``--mind``
removal count is an oracle for a binary search (A3). A site therefore reports every count rounded
down to a multiple of its policy's ``count_granularity`` ``g`` (a count below ``g`` becomes 0,
read "fewer than g"); under differential privacy it withholds counts altogether (``g = 0``).
Coordinator, CLI and reports show a count with :func:`describe_count`.
"""

from __future__ import annotations

#: the granularity that marks counts as withheld (differential privacy: nothing is sent)
WITHHELD = 0


def coarsen(n: int, granularity: int) -> int:
    """``n`` rounded down to a multiple of ``granularity`` (0 for ``granularity`` 0: withheld)."""
    if n < 0:
        raise ValueError(f"a participant count cannot be negative, got {n}")
    if granularity == WITHHELD:
        return 0
    return (n // granularity) * granularity


def describe_count(n: int, granularity: int, noun: str = "participants") -> str:
    """A reported count in words: ``"280-289 participants"``, ``"fewer than 10 participants"``,
    ``"participants withheld"``; exact (``"283 participants"``) only for granularity 1."""
    if granularity == WITHHELD:
        return f"{noun} withheld (differential privacy)"
    if granularity == 1:
        return f"{n} {noun}"
    if n == 0:
        return f"fewer than {granularity} {noun}"
    return f"{n}-{n + granularity - 1} {noun}"
