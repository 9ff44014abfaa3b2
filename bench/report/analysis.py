"""Derived figures computed from result CSVs (never by re-running a model)."""
from __future__ import annotations

import math


def loglog_slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of log y against log x (1 = linear cost, 2 = quadratic)."""
    if len(x) < 2:
        return float("nan")
    lx, ly = [math.log(v) for v in x], [math.log(v) for v in y]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    denominator = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / denominator if denominator else float("nan")
