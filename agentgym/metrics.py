"""Statistics for evaluation reports."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default z).

        p = k/n,  centre = (p + z²/2n) / (1 + z²/n),
        half  = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²),
        interval = [centre - half, centre + half]

    Unlike the normal approximation it stays inside [0, 1] and is not empty at p = 0 or 1.
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within [0, {n}], got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))
