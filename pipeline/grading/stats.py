"""Reference statistics in plain Python: the twins of the macros in `sql/views.sql`.

The SQL views are what users query; these functions exist so the tests can cross-check
the SQL against an independent implementation (math.erf instead of a fitted
approximation), and so the report can put intervals on rates the views give without one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

Z95 = 1.959963984540054  # two-sided 95% standard normal quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for k successes in n trials; None when n = 0. The bounds are
    exactly 0 at k = 0 and exactly 1 at k = n (the formula reaches them only up to rounding)."""
    if n == 0:
        return None
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    lo = 0.0 if k <= 0 else max(0.0, (centre - spread) / denominator)
    hi = 1.0 if k >= n else min(1.0, (centre + spread) / denominator)
    return lo, hi


def newcombe_diff(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float] | None:
    """p1 - p2 with Newcombe's (1998) hybrid score 95% interval (method 10)."""
    first, second = wilson(k1, n1), wilson(k2, n2)
    if first is None or second is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    (lo1, hi1), (lo2, hi2) = first, second
    diff = p1 - p2
    return (diff, diff - math.hypot(p1 - lo1, hi2 - p2), diff + math.hypot(hi1 - p1, p2 - lo2))


def norm_cdf(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2))


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test; 1.0 when the pooled rate is
    0 or 1 (the samples cannot differ), None when a sample is empty."""
    if n1 == 0 or n2 == 0:
        return None
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 1.0
    z = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return math.erfc(abs(z) / math.sqrt(2))


def cohen_kappa(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' labels; None when undefined (no pairs, or chance
    agreement is already 1)."""
    labelled = list(pairs)
    n = len(labelled)
    if n == 0:
        return None
    observed = sum(a == b for a, b in labelled) / n
    first, second = Counter(a for a, _ in labelled), Counter(b for _, b in labelled)
    expected = sum(first[label] * second[label] for label in first) / (n * n)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)
