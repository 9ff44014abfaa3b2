"""Derived figures computed from result CSVs (never by re-running a model)."""
from __future__ import annotations

import math

import pandas as pd

from bench.plots import line_label


def loglog_slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of log y against log x (1 = linear cost, 2 = quadratic)."""
    if len(x) < 2:
        return float("nan")
    lx, ly = [math.log(v) for v in x], [math.log(v) for v in y]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    denominator = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / denominator if denominator else float("nan")


def slopes(results: pd.DataFrame, axis: str, metric: str, lo: float, hi: float) -> pd.DataFrame:
    """Per (model, variant, workload): log-log slope of `metric` over ok rows with lo <= axis <= hi."""
    rows = []
    ok = results[(results["status"] == "ok") & results[axis].between(lo, hi)]
    for (model, variant, workload), group in ok.groupby(["model", "variant", "workload"]):
        group = group.sort_values(axis)
        rows.append({"line": line_label(model, variant), "workload": workload, "metric": metric,
                     "from": int(group[axis].min()), "to": int(group[axis].max()), "points": len(group),
                     "slope": round(loglog_slope(group[axis].tolist(), group[metric].astype(float).tolist()), 3)})
    return pd.DataFrame(rows)
