"""Meeting a byte budget: pick the largest size option whose table still compresses enough."""

from __future__ import annotations

from typing import Callable, Iterable, TypeVar

T = TypeVar("T")

FLOAT_BYTES = 4


def largest_meeting(candidates: Iterable[T], table_bytes: Callable[[T], int], full_bytes: int,
                    ratio: float, what: str) -> T:
    """The last candidate (in increasing size) with full_bytes / table_bytes >= ratio.

    Larger tables are more accurate, so the largest that fits the budget is the one to train.
    """
    if ratio <= 0:
        raise ValueError(f"--ratio must be positive, got {ratio}")
    best, smallest = None, None
    for candidate in candidates:
        achieved = full_bytes / table_bytes(candidate)
        smallest = achieved if smallest is None else max(smallest, achieved)
        if achieved >= ratio:
            best = candidate
    if best is None:
        reach = f"at most {smallest:.1f}" if smallest is not None else "none"
        raise ValueError(f"--ratio {ratio:g} is out of reach for {what} (byte ratio {reach})")
    return best
