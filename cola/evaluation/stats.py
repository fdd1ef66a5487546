"""Statistics of accuracies, free of torch: confidence intervals of proportions, paired comparisons."""

from __future__ import annotations

import math


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of paired verdicts: ``b`` samples right only under A, ``c`` right only under
    B (a binomial test of b against b + c at 1/2; 1.0 when they never disagree)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(a: dict[str, bool], b: dict[str, bool]) -> dict:
    """Two evaluations' verdicts on the samples they share: counts right only under each, McNemar's exact p."""
    common = sorted(set(a) & set(b))
    a_only = sum(a[i] and not b[i] for i in common)
    b_only = sum(b[i] and not a[i] for i in common)
    return {"common": len(common), "a_right": sum(a[i] for i in common), "b_right": sum(b[i] for i in common),
            "a_only": a_only, "b_only": b_only, "mcnemar_p": mcnemar_exact(a_only, b_only)}
