"""Figures for the sweep results.

Figures are pure functions of result CSVs: nothing here ever builds or re-runs a
model.  ``plot_sweep`` turns the tidy results frame (one row per model, variant,
workload and grid point) into one PNG per (workload, metric[, axis]), and
``python -m bench.plots RESULTS_CSV [--out DIR]`` regenerates them from disk.

Conventions
-----------
* One line per (model, variant), labelled by :func:`line_label`; colours are
  assigned over the whole frame so a series keeps its colour in every figure.
* Time figures plot ``time_median_ms`` with a shaded p20..p80 band.
* Memory figures plot ``cuda_peak_alloc_mib`` when the rows ran on CUDA and that
  column has values, otherwise ``tracked_peak_mib``; the y label names the counter.
* Points whose status is ``oom``, ``timeout`` or ``error`` have no measurement.
  They are drawn at the top edge of the axes (x in data coordinates, y in axes
  coordinates) with the series colour and a status-specific marker, and the
  legend explains the markers once.
* An axis is log-scaled when its positive values span a factor >= 8 (base 2 on x).
* A figure with no successful measurement still gets written, with a centred
  "no successful measurements" note, so missing data is visible.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullLocator

from bench.results import publish

__all__ = ["line_label", "plot_sweep", "plot_results_csv", "main"]

AXES: tuple[str, ...] = ("seq_len", "n_heads", "n_layers", "batch_size", "d_model")
METRICS: tuple[str, ...] = ("time", "memory")
DPI = 120

TIME_YLABEL = {
    "train": "train step time (ms, median)",
    "infer": "inference time (ms, median)",
}
MEM_YLABEL = {
    "cuda_peak_alloc_mib": "peak CUDA allocated (MiB)",
    "tracked_peak_mib": "peak memory (MiB, tracked tensors)",
}

# status -> (marker, legend text, marker size)
FAIL_STYLE: dict[str, tuple[str, str, float]] = {
    "oom": ("x", "out of memory (OOM)", 10.0),
    "timeout": ("v", "timeout", 9.0),
    "error": ("D", "error", 7.0),
}
FAIL_Y = 0.97  # axes fraction where failure markers sit
FAIL_STEP = 0.06  # downward offset when several series fail at the same x
LOG_SPAN = 8.0  # log-scale an axis when max/min of its positive values >= this

_NUMERIC = (
    "seq_len",
    "batch_size",
    "n_layers",
    "n_heads",
    "d_model",
    "time_median_ms",
    "time_p20_ms",
    "time_p80_ms",
    "tracked_peak_mib",
    "cuda_peak_alloc_mib",
)
_STRINGS = ("model", "variant", "workload", "status", "reason", "axis", "device", "device_name")


def line_label(model: str, variant: str) -> str:
    """Legend label of one series: ``sasrec`` or ``sasrec[attention=math]``."""
    variant = "" if variant is None else str(variant).strip()
    if variant in ("", "default", "nan"):
        return str(model)
    return f"{model}[{variant}]"


# --------------------------------------------------------------------------- helpers


def _normalise(results: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("model", "workload", "status") if c not in results.columns]
    if missing:
        raise ValueError(f"results lack required column(s): {', '.join(missing)}")
    df = results.reset_index(drop=True)
    for col in _STRINGS:
        if col not in df.columns:
            df[col] = ""
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str).str.strip()
    df.loc[df["variant"].isin(["", "nan"]), "variant"] = "default"
    df["status"] = df["status"].str.lower()
    for col in _NUMERIC:
        if col not in df.columns:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["_label"] = [line_label(m, v) for m, v in zip(df["model"], df["variant"])]
    return df


def _infer_axis(df: pd.DataFrame) -> str:
    """Fallback axis for rows without one: the grid column that varies most."""
    best, best_n = "seq_len", 1
    for col in AXES:
        n = df[col].nunique(dropna=True)
        if n > best_n:
            best, best_n = col, n
    return best


def _fill_axis(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    for workload in df["workload"].unique():
        in_wl = df["workload"] == workload
        blank = in_wl & (df["axis"] == "")
        if not blank.any():
            continue
        known = df.loc[in_wl & ~blank, "axis"]
        df.loc[blank, "axis"] = known.mode().iloc[0] if len(known) else _infer_axis(df[in_wl])
    return df


def _order_axes(axes: Iterable[str]) -> list[str]:
    axes = set(axes)
    return [a for a in AXES if a in axes] + sorted(a for a in axes if a not in AXES)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unknown"


def _colours(labels: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    n = cmap.N
    return {lab: cmap(i % n) for i, lab in enumerate(labels)}


def _span_is_log(values: Iterable[float]) -> bool:
    pos = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    return bool(pos) and max(pos) / min(pos) >= LOG_SPAN


def _all_powers_of_two(values: Iterable[float]) -> bool:
    vals = [v for v in values if np.isfinite(v)]
    return bool(vals) and all(v > 0 and float(v).is_integer() and (int(v) & (int(v) - 1)) == 0 for v in vals)


def _fmt_num(v: float, _pos=None) -> str:
    if not np.isfinite(v):
        return ""
    if float(v).is_integer():
        return f"{int(v)}"
    return f"{v:g}"


def _memory_column(ok: pd.DataFrame) -> str:
    devices = set(ok["device"].str.lower()) - {""}
    if devices == {"cuda"} and ok["cuda_peak_alloc_mib"].notna().any():
        return "cuda_peak_alloc_mib"
    return "tracked_peak_mib"


def _title(workload: str, axis: str, metric: str, group: pd.DataFrame) -> str:
    names = sorted(set(group["device_name"]) - {""})
    if not names:
        names = sorted(set(group["device"]) - {""})
    device = ", ".join(names) if names else "device unknown"
    fixed = []
    for col in AXES:
        if col == axis:
            continue
        vals = group[col].dropna().unique()
        if len(vals) == 1:
            fixed.append(f"{col}={_fmt_num(vals[0])}")
    head = f"{workload} {metric} vs {axis} — {device}"
    return head + ("\n" + ", ".join(fixed) if fixed else "")


# --------------------------------------------------------------------------- drawing


def _draw(
    group: pd.DataFrame,
    *,
    workload: str,
    axis: str,
    metric: str,
    colours: dict[str, tuple],
    path: Path,
) -> Path:
    ok = group[group["status"] == "ok"]
    if metric == "time":
        ycol, lo_col, hi_col = "time_median_ms", "time_p20_ms", "time_p80_ms"
        ylabel = TIME_YLABEL.get(workload, f"{workload} time (ms, median)")
    else:
        ycol = _memory_column(ok)
        lo_col = hi_col = None
        ylabel = MEM_YLABEL[ycol]

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    top_edge = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)

    labels = sorted(group["_label"].unique())
    handles: list = []
    measured = ok[ok[ycol].notna() & ok[axis].notna()]
    all_y: list[float] = []
    fail_kinds: set[str] = set()
    stacked: dict[float, int] = {}  # x -> failure markers already drawn there

    for lab in labels:
        colour = colours[lab]
        sub = measured[measured["_label"] == lab]
        agg_cols = {ycol: "median"}
        if lo_col and hi_col:
            agg_cols.update({lo_col: "median", hi_col: "median"})
        pts = sub.groupby(axis, sort=True).agg(agg_cols) if len(sub) else None
        if pts is not None and len(pts):
            xs = pts.index.to_numpy(dtype=float)
            ys = pts[ycol].to_numpy(dtype=float)
            (line,) = ax.plot(xs, ys, marker="o", markersize=5, linewidth=1.6, color=colour, label=lab)
            all_y.extend(ys.tolist())
            if lo_col and hi_col:
                lo = pts[lo_col].to_numpy(dtype=float)
                hi = pts[hi_col].to_numpy(dtype=float)
                band = np.isfinite(lo) & np.isfinite(hi)
                if band.any():
                    ax.fill_between(xs[band], lo[band], hi[band], color=colour, alpha=0.2, linewidth=0)
                    all_y.extend(lo[band].tolist() + hi[band].tolist())
        else:  # no measured point: still explain the colour in the legend
            (line,) = ax.plot([], [], marker="o", markersize=5, linewidth=1.6, color=colour, label=lab)
        handles.append(line)

        failed = group[(group["_label"] == lab) & group["status"].isin(FAIL_STYLE) & group[axis].notna()]
        for status in FAIL_STYLE:
            rows = failed[failed["status"] == status]
            if rows.empty:
                continue
            marker, _text, size = FAIL_STYLE[status]
            xs = np.unique(rows[axis].to_numpy(dtype=float))
            ys = []
            for x in xs:  # stack markers of different series failing at the same x
                k = stacked.get(x, 0)
                stacked[x] = k + 1
                ys.append(FAIL_Y - FAIL_STEP * k)
            ax.plot(
                xs,
                np.asarray(ys),
                linestyle="none",
                marker=marker,
                markersize=size,
                markeredgewidth=2.2 if marker == "x" else 1.0,
                markerfacecolor=colour,
                markeredgecolor=colour if marker == "x" else "black",
                transform=top_edge,
                clip_on=False,
                zorder=5,
            )
            fail_kinds.add(status)

    # ---- scales
    all_x = group[axis].dropna().to_numpy(dtype=float)
    if _span_is_log(all_x):
        ax.set_xscale("log", base=2 if _all_powers_of_two(all_x) else 10)
    ux = np.unique(all_x[np.isfinite(all_x)])
    if 0 < len(ux) <= 16:
        ax.set_xticks(ux)
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_num))

    if all_y:
        if _span_is_log(all_y) and min(all_y) > 0:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.relim()
        ax.autoscale_view()
        if stacked:  # keep the data clear of the failure markers near the top edge
            frac = max(FAIL_Y - FAIL_STEP * max(stacked.values()) - 0.04, 0.3)
            lo, hi = ax.get_ylim()
            if ax.get_yscale() == "log":
                hi = lo * (hi / lo) ** (1.0 / frac)
            else:
                hi = lo + (hi - lo) / frac
            ax.set_ylim(lo, hi)
    else:
        ax.set_yticks([])
        ax.text(
            0.5,
            0.5,
            "no successful measurements",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=13,
            color="dimgray",
        )

    if not len(ux):
        ax.set_xticks([])

    # ---- legend: series (sorted) + failure-marker key, outside the data area
    for status in ("oom", "timeout", "error"):
        if status in fail_kinds:
            marker, text, size = FAIL_STYLE[status]
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="none",
                    marker=marker,
                    markersize=size * 0.8,
                    markeredgewidth=2.0 if marker == "x" else 1.0,
                    color="gray",
                    markeredgecolor="gray" if marker == "x" else "black",
                    label=f"{text} (at top edge)",
                )
            )
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)

    ax.set_xlabel(axis)
    ax.set_ylabel(ylabel)
    ax.set_title(_title(workload, axis, metric, group), fontsize=10)
    ax.grid(True, which="major", alpha=0.3)

    return save_figure(fig, path)


def save_figure(fig, path: Path, dpi: int = DPI, bbox_inches: str | None = "tight") -> Path:
    """Write ``fig`` as a PNG atomically (a unique temporary sibling, then a rename) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches=bbox_inches)
        publish(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# --------------------------------------------------------------------------- public API


def plot_sweep(results: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write ``time_<workload>[_<axis>].png`` and ``memory_<workload>[_<axis>].png``.

    One figure per workload present, per metric, and per swept axis when the
    workload's rows cover several axes (file names then carry an ``_<axis>``
    suffix).  Returns the written paths in a deterministic order.
    """
    out_dir = Path(out_dir)
    df = _normalise(results)
    df = df[df["workload"] != ""]
    if df.empty:
        return []
    df = _fill_axis(df)
    colours = _colours(sorted(df["_label"].unique()))

    written: list[Path] = []
    for workload in sorted(df["workload"].unique()):
        wdf = df[df["workload"] == workload]
        axes = _order_axes(wdf["axis"].unique())
        for axis in axes:
            group = wdf[wdf["axis"] == axis]
            if axis not in group.columns:  # unknown axis name without a grid column
                group = group.assign(**{axis: np.nan})
            suffix = f"_{_safe(axis)}" if len(axes) > 1 else ""
            for metric in METRICS:
                path = out_dir / f"{metric}_{_safe(workload)}{suffix}.png"
                written.append(
                    _draw(group, workload=workload, axis=axis, metric=metric, colours=colours, path=path)
                )
    return written


def plot_results_csv(csv_path, out_dir=None) -> list[Path]:
    """Read a results CSV and write its figures (default: next to the CSV)."""
    csv_path = Path(csv_path)
    df = pd.read_csv(csv_path, dtype={"variant": str, "reason": str})
    df["reason"] = df["reason"].fillna("") if "reason" in df.columns else ""
    if "variant" in df.columns:
        df["variant"] = df["variant"].fillna("default")
    return plot_sweep(df, Path(out_dir) if out_dir is not None else csv_path.parent)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.plots",
        description="Regenerate sweep figures (PNG) from a results CSV; never re-runs a model.",
    )
    parser.add_argument("results_csv", type=Path, help="tidy results.csv written by the sweep")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the CSV's folder)")
    args = parser.parse_args(argv)

    try:
        paths = plot_results_csv(args.results_csv, args.out)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        print(f"bench.plots: cannot plot {args.results_csv}: {msg}", file=sys.stderr)
        return 2
    if not paths:
        print(f"bench.plots: {args.results_csv} contains no result rows", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
