"""Small helpers every part of the catalog uses: the timestamp it stores, and SQL parameter lists in slices."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime


def now() -> str:
    """The time as the catalog stores it: UTC, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def chunks(seq: list, n: int) -> Iterator[list]:
    """`seq` in slices of at most n (SQL parameter lists stay under the backends' limits)."""
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
