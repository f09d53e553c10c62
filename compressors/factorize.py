"""Shape factorisations shared by the tensor-train compressors."""

from __future__ import annotations

import math


def balanced_factors(n: int, parts: int) -> list[int]:
    """`parts` integers whose product is exactly `n`, as equal as possible (largest last).

    Used for the embedding dimension, which must factor exactly.
    """
    if parts < 1:
        raise ValueError(f"need at least one factor, got {parts}")
    if parts == 1:
        return [n]
    best: list[int] | None = None
    for first in range(1, int(round(n ** (1.0 / parts))) + 2):
        if n % first:
            continue
        rest = balanced_factors(n // first, parts - 1)
        candidate = sorted([first, *rest])
        if best is None or max(candidate) - min(candidate) < max(best) - min(best):
            best = candidate
    if best is None:
        raise ValueError(f"{n} has no factorisation into {parts} parts")
    return best


def covering_factors(n: int, parts: int) -> list[int]:
    """`parts` integers whose product is the smallest near-cube at least `n`.

    Used for the item count, which is padded up to the product (the padding rows are never used).
    """
    if parts < 1 or n < 1:
        raise ValueError(f"cannot cover {n} with {parts} factors")
    base = max(1, math.floor(n ** (1.0 / parts)))
    factors = [base] * parts
    i = 0
    while math.prod(factors) < n:
        factors[i % parts] += 1
        i += 1
    return sorted(factors)


def parse_factors(text: str, what: str) -> list[int]:
    """'35x35x34' -> [35, 35, 34]; empty text means 'choose automatically' (returns [])."""
    if not text:
        return []
    try:
        factors = [int(x) for x in text.lower().split("x")]
    except ValueError:
        raise ValueError(f"{what} must look like 32x32x40, got {text!r}") from None
    if any(f < 1 for f in factors):
        raise ValueError(f"{what} must be positive, got {text!r}")
    return factors
