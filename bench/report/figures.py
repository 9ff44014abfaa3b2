"""The RecGRELA paper's efficiency figures, and a long-sequence view, as pure functions of result CSVs.

Nothing here builds or runs a model: every figure reads the tidy rows the sweep wrote
(`results.csv`), the test-split rows of a training run (`metrics.csv`, written by `bench.train`)
and a rank CSV (written by `bench.rank`). Each figure function returns a :class:`Figure`: its
table (the exact numbers drawn, saved as `<key>.csv`), its PNG, and notes saying how its rows
were chosen and what is missing. A figure whose data is absent is returned with `missing` set
and no PNG, so the report page can say so.

| key | the paper's | what |
| --- | --- | --- |
| `fig3_memory_flops_ndcg` | Fig. 3 | train peak memory vs step FLOPs vs NDCG@10, one bubble per model line |
| `table3_recgrela_layers` | Table 3 | RecGRELA at 1..6 layers: step time, peak memory, FLOPs (+ metrics where trained) |
| `fig6_layers_recgrela_sigma` | Fig. 6 | layers vs time and memory, RecGRELA vs SIGMA |
| `fig7_seqlen_heads_recgrela_eulerformer` | Fig. 7 | L = 100..200 and heads vs time and memory, RecGRELA vs EulerFormer |
| `fig5_position_activation` | Fig. 5 | RecGRELA position encoding (RoPE/APE/LPE) and gate activation (SiLU/ReLU/GELU) |
| `fig9_rank` | Fig. 9 | feature-matrix rank heatmaps (drawn by `bench.train.rank.plot_rank_figure`) |
| `long_seq_loglog` | (not in the paper) | L >= 256: time and memory, log-log, fitted slope per line, where each line overtakes SASRec |
| `predicted_vs_paper` | Table 3, Fig. 3 | predicted (fake-tensor) train peak memory of RecGRELA and its twin at 1..6 layers against the paper's GPU memory, and Fig. 3's memory/FLOP ratios between models |
| `ours_vs_official` | (not in the paper) | ours / official twin (`official/NAME`) of step time, tracked peak bytes and step FLOPs per point, params side by side |

Choices that apply to every figure:
- Rows are the train workload (the paper's training-efficiency setting) unless a figure says
  otherwise; memory is the CUDA allocator peak on CUDA rows, the exact tracked peak otherwise
  (the rule of `bench.plots`).
- A line mixes only rows that share every other grid dimension (batch, layers, heads, d, items,
  device): when the CSVs hold several such groups, the one with the most rows is drawn and the
  note says what was left out.
- When several run folders hold the same point (same key columns), the row with the latest
  `timestamp_utc` is kept (times compare only within one run; see reports/README.md).
- Official twins (model `official/NAME`, the official code measured in the same harness) appear
  in `ours_vs_official` and, labelled `official/NAME`, in the long-sequence view; Fig. 3 leaves
  them out (it places models, and says which twins it left out); the other paper figures select
  our models by name. No model name reaches a file name: every file is `<key>.png` / `<key>.csv`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from bench.grid import PRESETS
from bench.report.analysis import loglog_slope
from bench.report.plots import (
    FAIL_STYLE,
    MEM_YLABEL,
    TIME_YLABEL,
    ResultsCSVError,
    colour_of,
    format_number,
    integer_problem,
    line_colours,
    line_labels,
    memory_column,
    number_problem,
    read_csv_records,
    read_results_csv,
    save_figure,
    span_is_log,
)
from bench.results import KEY_COLUMNS, SHAPE_COLUMNS, row_loss, spec_label
from models.losses import parse_loss

DPI = 120
GRID = SHAPE_COLUMNS
NUMERIC = GRID + (
    "params_total", "params_trainable", "time_median_ms", "time_iqr_ms", "time_p20_ms", "time_p80_ms",
    "time_min_ms", "tracked_peak_bytes", "tracked_peak_mib", "cuda_peak_alloc_mib", "cuda_peak_reserved_mib",
    "fwd_flops_fvcore", "fwd_flops_flopcounter", "step_flops_flopcounter", "fwd_flops_analytic",
    "step_flops_analytic", "scan_flops_analytic", "threads", "achieved_tflops", "peak_tflops", "mfu",
    "compile_time_s", "graph_breaks", "state_bytes_per_user", "time_p99_ms")
STRINGS = ("model", "variant", "workload", "status", "reason", "axis", "device", "device_name", "dtype",
           "torch_version", "python_version", "git_commit", "timestamp_utc", "attention_ops",
           "perf_env_json", "official_substitutions", "flops_analytic_reason", "fvcore_reason", "prediction",
           "compile_backend", "loss", "stream_mode", "node")
PAPER_SEQ_LEN = 200  # RecGRELA Sec. 4.1.4
LONG_FROM = 256  # the long-sequence view starts where the paper's grid ends
CONFIG_KEYS = ("n_layers", "n_heads", "d_model")  # training runs at the sweep's own config are preferred
LINEAR_FLOP_SLOPE = 1.5  # a line whose step FLOPs grow with log-log slope below this is "linear"


class DataError(ResultsCSVError):
    """An input file that cannot be read as what it claims to be (one-line message naming the file,
    the line and the column); a `cli.UsageError` and a ValueError."""


@dataclass
class Figure:
    key: str  # file stem: <key>.png and <key>.csv
    title: str
    caption: str  # one sentence: what is drawn
    table: pd.DataFrame | None = None
    png: Path | None = None
    notes: list = field(default_factory=list)  # how rows were chosen, what is missing
    missing: str | None = None  # why nothing could be drawn
    runs: list = field(default_factory=list)  # run folders whose rows went into it


# ------------------------------------------------------------------------------------ loading


def read_results(csv_path: Path, run: str) -> pd.DataFrame:
    """One results.csv as a frame; columns of older schemas that are absent become empty.

    The file is checked by `bench.report.plots.read_results_csv`, the one check both commands use: a
    header of bench.results.COLUMNS (or an older subset), statuses, workloads and axes from their
    lists, positive integer grid cells, measurements empty or finite and >= 0, ok rows with time
    and memory, at least one row. Raises DataError (one line: file, line, column, cause)."""
    try:
        df = read_results_csv(csv_path, "results.csv")
    except ResultsCSVError as err:
        raise DataError(str(err)) from None
    for col in STRINGS:
        df[col] = df[col].str.strip()
    df.loc[df["variant"] == "", "variant"] = "default"
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["_run"] = run
    return df


def combine_results(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    """Concatenate runs; a point present in several keeps its latest row. Returns (rows, notes).

    Each row's line (`_label`) is its model and variant; each figure then splits the lines of the
    rows it draws where they were measured with different settings (`separate_settings`)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(STRINGS + NUMERIC) + ["_run", "_label"]), []
    df = pd.concat(frames, ignore_index=True)
    df["_order"] = range(len(df))
    # one point on two axes is two rows; so is a point measured and predicted, or in two dtypes or compile modes
    key = [c for c in KEY_COLUMNS if c in df.columns] + ["axis", "dtype", "prediction", "compile_backend"]
    keys = df[key].astype(str).agg("|".join, axis=1)
    df = df.assign(_key=keys).sort_values(["timestamp_utc", "_order"])
    kept = df.drop_duplicates("_key", keep="last").sort_values("_order")
    notes = []
    if len(kept) < len(df):
        notes.append(f"{len(df) - len(kept)} row(s) measured the same point as a later row in another "
                     "run folder; the latest row (by timestamp_utc) was kept.")
    kept = kept.drop(columns=["_key", "_order"]).reset_index(drop=True)
    kept["_label"] = [spec_label(m, v) for m, v in zip(kept["model"], kept["variant"])]
    return kept, notes


def separate_settings(figure: Figure, rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` (what one figure draws) with each line split where its rows were measured with
    different settings (`bench.report.plots.line_labels`: rows of one model, variant and workload that
    differ in a non-empty bench.results.SETTINGS_COLUMNS cell become `linrec (threads 1)` and
    `linrec (threads 2)`); the figure's notes say which lines were split and why, and warn where a
    line joins rows of several machines (`node`: not a setting, since a resumed sweep may move)."""
    if rows.empty:
        return rows
    labels, _split_by, notes = line_labels(rows)
    figure.notes += [note for note in notes if note not in figure.notes]
    rows = rows.assign(_label=labels)
    for label, part in rows.groupby("_label"):
        nodes = sorted(set(part["node"]) - {""}) if "node" in part else []
        if len(nodes) > 1:
            note = (f"warning: the line {label} joins rows measured on {len(nodes)} machines ({', '.join(nodes)}): "
                    "its times compare across machines only roughly; tracked memory and FLOPs are exact")
            if note not in figure.notes:
                figure.notes.append(note)
    return rows


METRICS_REQUIRED = ("model", "split")  # and at least one ranking metric column (NAME@K)
RANK_REQUIRED = ("model_spec", "checkpoint", "view", "user", "n_real", "rank", "max_rank", "rows", "d_model",
                 "dataset", "features")  # what bench.train.rank.plot_rank_figure reads
RANK_VIEWS = ("per_user", "single_sequence")


def read_metrics(csv_path: Path, run: str) -> pd.DataFrame:
    """Test-split rows of a training run's metrics.csv (columns model, model_spec, ndcg@10, ...).

    Refused (DataError, one line naming the file, the line and the column): what
    `bench.report.plots.read_csv_records` refuses (missing, a folder, not UTF-8, empty, torn lines), no
    `model` or `split` column, no ranking metric column (`NAME@K`), a metric cell that is not empty
    or a number in 0..1, a test row without a model or whose n_layers / n_heads / d_model (the
    join keys) is not a positive integer, and a file without split=test rows (the test
    evaluation, which bench.train writes last, has not happened)."""
    try:
        header, records = read_csv_records(csv_path, "training metrics.csv", METRICS_REQUIRED)
    except ResultsCSVError as err:
        raise DataError(str(err)) from None
    metrics = [c for c in header if "@" in c]
    if not metrics:
        raise DataError(f"{csv_path}: no metric column (hr@10, ndcg@10, ...): not a metrics.csv of bench.train")
    tested = 0
    for line, row in records:
        for column in metrics:
            problem = number_problem(row[column], high=1.0) if row[column].strip() else None
            if problem:
                raise DataError(f"{csv_path} line {line}, column {column}: {problem} (a ranking metric is in 0..1)")
        if row["split"].strip().lower() != "test":
            continue
        tested += 1
        if not row["model"].strip():
            raise DataError(f"{csv_path} line {line}, column model: empty (every test row names its model)")
        for column in CONFIG_KEYS:
            problem = integer_problem(row[column]) if row.get(column, "").strip() else None
            if problem:
                raise DataError(f"{csv_path} line {line}, column {column}: {problem}")
    if not tested:
        raise DataError(f"{csv_path}: no split=test rows (bench.train writes the test evaluation last; "
                        "is the run finished?)")
    df = pd.DataFrame([row for _line, row in records], columns=header)
    df = df[df["split"].str.strip().str.lower() == "test"].copy()
    df["model"] = df["model"].str.strip()
    spec = df["model_spec"] if "model_spec" in df.columns else pd.Series("", index=df.index)
    df["model_spec"] = spec.fillna("").astype(str).str.strip()
    df.loc[df["model_spec"] == "", "model_spec"] = df["model"]
    for col in metrics + [c for c in CONFIG_KEYS if c in df.columns]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["_run"] = run
    return df


def check_rank_csv(csv_path: Path) -> None:
    """Refuse a rank CSV that Fig. 9 cannot draw (DataError, one line naming the file, the line and
    the column): what `bench.report.plots.read_csv_records` refuses, a column bench.rank's
    `plot_rank_figure` reads missing (RANK_REQUIRED), a view other than per_user /
    single_sequence, a rank, max_rank, user or n_real that is not an integer >= 0, rows or d_model
    not a positive integer, a single_sequence row whose features are not rows x d_model finite
    numbers, and a file without single_sequence rows ("no rows to draw")."""
    try:
        _header, records = read_csv_records(csv_path, "rank CSV of bench.rank", RANK_REQUIRED)
    except ResultsCSVError as err:
        raise DataError(str(err)) from None
    drawn = 0
    for line, row in records:
        where = f"{csv_path} line {line}, column"
        if row["view"].strip() not in RANK_VIEWS:
            raise DataError(f"{where} view: {row['view'][:40]!r} is not one of {', '.join(RANK_VIEWS)}")
        for column, low in (("rank", 0), ("max_rank", 0), ("user", 0), ("n_real", 0), ("rows", 1), ("d_model", 1)):
            problem = integer_problem(row[column], low)
            if problem:
                raise DataError(f"{where} {column}: {problem}")
        if row["view"].strip() != "single_sequence":
            continue
        drawn += 1
        values = row["features"].split()
        expected = int(row["rows"]) * int(row["d_model"])
        if len(values) != expected:
            raise DataError(f"{where} features: {len(values)} numbers, rows x d_model = {expected}")
        bad = next((v for v in values if number_problem(v, signed=True)), None)
        if bad is not None:
            raise DataError(f"{where} features: {number_problem(bad, signed=True)}")
    if not drawn:
        raise DataError(f"{csv_path}: no rows to draw (no single_sequence row; Fig. 9 draws those)")


def metric_columns(metrics: pd.DataFrame) -> list[str]:
    """Ranking metrics in a metrics frame (hr@10, ndcg@10, mrr@10, ...), NDCG first."""
    cols = [c for c in metrics.columns if "@" in c]
    return sorted(cols, key=lambda c: (not c.startswith("ndcg"), c))


# ------------------------------------------------------------------------------------ helpers


def overrides(variant: str) -> dict:
    """`position=ape:gate=false` -> {'position': 'ape', 'gate': 'false'}; default -> {}."""
    if variant in ("", "default"):
        return {}
    return dict(pair.partition("=")[::2] for pair in variant.split(":"))


def flops_column(rows: pd.DataFrame) -> str:
    """Whole-step FLOPs: the FlopCounterMode count where the rows have it, else the analytic one."""
    return "step_flops_flopcounter" if rows["step_flops_flopcounter"].notna().any() else "step_flops_analytic"


def coherent(rows: pd.DataFrame, free: tuple = ()) -> tuple[pd.DataFrame, str | None]:
    """The largest group of rows sharing every grid dimension not in `free` (and the device)."""
    if rows.empty:
        return rows, None
    fixed = [c for c in GRID if c not in free] + ["device"]
    keys = rows[fixed].astype(str).agg("|".join, axis=1)
    sizes = keys.value_counts()
    best = sizes.index[0]
    if len(sizes) == 1:
        return rows, None
    chosen = rows[keys == best]
    shown = ", ".join(f"{c}={format_number(chosen[c].iloc[0]) if c != 'device' else chosen[c].iloc[0]}"
                      for c in fixed)
    return chosen, (f"rows at {len(sizes) - 1} other setting(s) of the fixed dimensions were left out; "
                    f"drawn: {shown} ({len(chosen)} of {len(rows)} rows)")


def closest_point(rows: pd.DataFrame, target_len: int = PAPER_SEQ_LEN) -> tuple[pd.DataFrame, str]:
    """Rows at the one grid point holding the most lines; ties go to the L closest to `target_len`."""
    keys = rows[list(GRID) + ["device"]].astype(str).agg("|".join, axis=1)
    lines = rows.assign(_point=keys).groupby("_point")["_label"].nunique()
    seq = rows.assign(_point=keys).groupby("_point")["seq_len"].first()
    score = pd.DataFrame({"lines": lines, "dist": (np.log(seq.astype(float) / target_len)).abs()})
    best = score.sort_values(["lines", "dist"], ascending=[False, True]).index[0]
    chosen = rows[keys == best]
    first = chosen.iloc[0]
    return chosen, ("grid point: " + ", ".join(f"{c}={format_number(first[c])}" for c in GRID)
                    + f", device={first['device']} (the point holding the most lines, then the one "
                    f"closest to the paper's L={target_len})")


def environment(rows: pd.DataFrame) -> str:
    """One line: where and with what the rows were measured."""
    parts = []
    for col, name in (("device_name", ""), ("device", ""), ("dtype", ""), ("torch_version", "torch "),
                      ("python_version", "Python "), ("git_commit", "git ")):
        values = sorted(set(rows[col]) - {""})
        if values:
            parts.append(name + ", ".join(values))
    threads = sorted({int(t) for t in rows["threads"].dropna()})
    if threads:
        parts.append("threads " + ", ".join(map(str, threads)))
    envs = sorted(set(rows["perf_env_json"]) - {"", "{}"})  # older schemas: "" (not recorded)
    if envs:
        parts.append("environment variables " + " | ".join(envs))
    return "; ".join(parts) or "environment not recorded"


def _note_on(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10,
            color="dimgray", wrap=True)


def _label_points(ax, xs: pd.Series, ys: pd.Series, labels: list) -> None:
    """Label scatter points; a label whose point sits near an already labelled one moves down."""
    span_x = (xs.max() - xs.min()) or 1.0
    span_y = (ys.max() - ys.min()) or 1.0
    placed = []
    for x, y, label in zip(xs, ys, labels):
        near = sum(abs(x - px) / span_x < 0.12 and abs(y - py) / span_y < 0.06 for px, py in placed)
        placed.append((x, y))
        ax.annotate(label, (x, y), fontsize=8, ha="center", va="bottom" if near % 2 == 0 else "top",
                    xytext=(0, 8 + 10 * (near // 2)) if near % 2 == 0 else (0, -8 - 10 * (near // 2)),
                    textcoords="offset points")


def _draw_lines(ax, rows: pd.DataFrame, x: str, y: str, colours: dict, *, band: tuple | None = None,
                loglog: bool = False, ylabel: str = "") -> None:
    """One line per series (median over duplicates), p20..p80 band, failures at the top edge."""
    top_edge = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    drawn_y, failed_at = [], {}
    for label in sorted(rows["_label"].unique()):
        sub = rows[rows["_label"] == label]
        ok = sub[(sub["status"] == "ok") & sub[y].notna()].groupby(x).median(numeric_only=True).sort_index()
        colour = colour_of(colours, label)
        ax.plot(ok.index.to_numpy(float), ok[y].to_numpy(float), marker="o", markersize=4, linewidth=1.5,
                color=colour, label=label)
        drawn_y.extend(ok[y].tolist())
        if band and len(ok):
            lo, hi = ok[band[0]].to_numpy(float), ok[band[1]].to_numpy(float)
            keep = np.isfinite(lo) & np.isfinite(hi)
            if keep.any():
                ax.fill_between(ok.index.to_numpy(float)[keep], lo[keep], hi[keep], color=colour, alpha=0.2,
                                linewidth=0)
        for status, (marker, _text, size) in FAIL_STYLE.items():
            for value in sorted(set(sub.loc[sub["status"] == status, x].dropna())):
                k = failed_at.get(value, 0)
                failed_at[value] = k + 1
                ax.plot([value], [0.97 - 0.06 * k], marker=marker, markersize=size * 0.8, linestyle="none",
                        color=colour, markeredgecolor=colour if marker == "x" else "black",
                        transform=top_edge, clip_on=False, zorder=5)
    xs = rows[x].dropna().to_numpy(float)
    if loglog or span_is_log(xs):
        ax.set_xscale("log", base=2)
    if len(xs):
        ticks = np.unique(xs)
        if len(ticks) <= 16:
            ax.set_xticks(ticks)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(format_number))
    if drawn_y and (loglog or span_is_log(drawn_y)) and min(drawn_y) > 0:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    elif drawn_y:
        ax.set_ylim(bottom=0, top=max(drawn_y) * (1.25 if failed_at else 1.08))
    if not drawn_y:
        _note_on(ax, "no successful measurements")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    ax.grid(True, alpha=0.3)


SLOPE_LEGEND_INSIDE_MAX = 8  # lines whose slope legend fits inside a panel; more go below it


def _slope_legend(ax, handles: list, texts: list[str], below: bool, inside: str = "upper left") -> None:
    """A panel's legend of fitted slopes: inside the axes at `inside`, or `below` its x label in two
    columns (past SLOPE_LEGEND_INSIDE_MAX lines, where it would cover the lines)."""
    under_label = ax.transAxes + mtransforms.ScaledTranslation(0, -0.55, ax.figure.dpi_scale_trans)
    placement = (dict(loc="upper left", bbox_to_anchor=(0.0, 0.0), bbox_transform=under_label, ncol=2)
                 if below else dict(loc=inside))
    ax.legend(handles, texts, fontsize=7, frameon=False, **placement)


def _time_memory_panels(panels: list, colours: dict, title: str, path: Path, *, loglog: bool = False,
                        slopes: dict | None = None) -> Path:
    """A row of (time, memory) panels per entry of `panels` = [(row_title, rows, x), ...].

    With `slopes` ({(row_title, "time" | "memory", line): slope}) every panel gets its own legend
    giving each line's fitted slope; otherwise one legend for the figure.
    """
    n_lines = max((rows["_label"].nunique() for _t, rows, _x in panels if rows is not None and not rows.empty), default=0)
    below = slopes is not None and n_lines > SLOPE_LEGEND_INSIDE_MAX  # too many to sit inside the axes
    legend_rows = -(-n_lines // 2) if below else 0
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, (3.9 + 0.14 * legend_rows) * len(panels)), squeeze=False)
    handles = {}
    for (row_title, rows, x), (ax_time, ax_mem) in zip(panels, axes):
        if rows is None or rows.empty:
            for ax in (ax_time, ax_mem):
                _note_on(ax, f"{row_title}: no rows in the CSVs")
                ax.set_xticks([])
                ax.set_yticks([])
            continue
        mem = memory_column(rows)
        workloads = set(rows["workload"])
        time_label = TIME_YLABEL.get(workloads.pop(), "step time (ms, median)") if len(workloads) == 1 else "step time (ms, median)"
        _draw_lines(ax_time, rows, x, "time_median_ms", colours, band=("time_p20_ms", "time_p80_ms"),
                    loglog=loglog, ylabel=f"{time_label}; p20..p80")
        _draw_lines(ax_mem, rows, x, mem, colours, loglog=loglog, ylabel=MEM_YLABEL[mem])
        for ax, kind in ((ax_time, "time"), (ax_mem, "memory")):
            ax.set_title(f"{row_title}: {kind}", fontsize=10)
            lines, labels = ax.get_legend_handles_labels()
            if slopes is None:
                for handle, label in zip(lines, labels):
                    handles.setdefault(label, handle)
            else:
                _slope_legend(ax, lines, [f"{label}: slope {slopes.get((row_title, kind, label), float('nan')):.2f}"
                                          for label in labels], below)
    statuses = set().union(*(set(rows["status"]) for _t, rows, _x in panels if rows is not None))
    for status, (marker, text, size) in FAIL_STYLE.items():
        if status in statuses:
            handles[f"{text} (at top edge)"] = Line2D([], [], linestyle="none", marker=marker, markersize=size * 0.7,
                                                      color="gray", markeredgecolor="gray" if marker == "x" else "black")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.0, 0.95),
                   frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def _lines_table(rows: pd.DataFrame, x: str, extra: tuple = ()) -> pd.DataFrame:
    """Tidy numbers of a scaling figure: one row per (line, workload, x)."""
    mem = memory_column(rows)
    cols = ["_label", "model", "variant", "workload", x, "status", "time_median_ms", "time_p20_ms",
            "time_p80_ms", mem, flops_column(rows), "params_total", "achieved_tflops", "mfu", *extra, "_run"]
    cols = list(dict.fromkeys(c for c in cols if c in rows.columns))
    table = rows[cols].sort_values(["_label", "workload", x]).rename(columns={"_label": "line", "_run": "run"})
    return table.reset_index(drop=True)


def _attach_metrics(table: pd.DataFrame, metrics: pd.DataFrame | None, join_on: tuple = ()) -> tuple[pd.DataFrame, list]:
    """Add the test metrics of each line (mean over matching training runs), joined by model spec.

    A line with no training run of its exact spec has no metrics (empty cells, listed as not
    trained): an ablation never shows its default spec's accuracy as if it were its own. Columns
    in `join_on` (e.g. n_layers) must match too. Among several trained configs of one spec, the
    runs at the line's own depth, heads and width are preferred; if none, the most recent run's
    config is used and the note says which.
    """
    notes = []
    if metrics is None or metrics.empty:
        return table, ["no training metrics (metrics.csv with split=test) among the inputs"]
    cols = metric_columns(metrics)
    joinable = [c for c in join_on if c in metrics.columns]
    missing_keys = [c for c in join_on if c not in metrics.columns]
    if missing_keys:
        notes.append(f"metrics.csv has no {', '.join(missing_keys)} column: metrics not joined per "
                     f"{', '.join(missing_keys)}")
        return table, notes
    out = {c: [] for c in cols}
    out["metrics_runs"] = []
    other_config = set()
    for _, row in table.iterrows():
        spec = spec_label(row["model"], row["variant"])
        match = metrics[metrics["model_spec"] == spec]
        for c in joinable:
            match = match[pd.to_numeric(match[c], errors="coerce") == row[c]]
        for c in CONFIG_KEYS:
            if c not in match.columns or c in joinable or c not in row.index or match[c].nunique() < 2:
                continue
            same = match[pd.to_numeric(match[c], errors="coerce") == row[c]]
            if same.empty:
                newest = match.sort_values("timestamp_utc").iloc[-1] if "timestamp_utc" in match else match.iloc[-1]
                same = match[match[c] == newest[c]]
                other_config.add(f"{row['line']} from training at {c}={newest[c]}")
            match = same
        for c in cols:
            out[c].append(match[c].mean() if len(match) else np.nan)
        out["metrics_runs"].append(len(match))
    table = table.assign(**out)
    if other_config:
        notes.append("no training run at the measured config, so: " + "; ".join(sorted(other_config)))
    untrained = sorted(set(table.loc[table["metrics_runs"] == 0, "line"]))
    if untrained:
        notes.append("not trained (no test metrics): " + ", ".join(untrained))
    return table, notes


def _absent(figure: Figure, wanted: list, rows: pd.DataFrame) -> None:
    """Note every wanted model absent from `rows`."""
    have = set(rows["model"]) if len(rows) else set()
    for name in wanted:
        if name not in have:
            figure.notes.append(f"{name}: no rows for this figure in the CSVs")


# ------------------------------------------------------------------------------------ figures


def fig3_memory_flops_ndcg(results: pd.DataFrame, metrics: pd.DataFrame | None, colours: dict,
                           out_dir: Path) -> Figure:
    """Fig. 3: training peak memory, step FLOPs and NDCG@10 of every model line at one grid point."""
    figure = Figure("fig3_memory_flops_ndcg", "Fig. 3: memory vs FLOPs vs NDCG@10 (all models)",
                    "Train step at one grid point: peak memory (x), NDCG@10 (y) and step FLOPs (bubble "
                    "area); without training metrics, memory (x) against FLOPs (y).")
    ok = results[(results["workload"] == "train") & (results["status"] == "ok")]
    twins = ok["model"].map(is_official) if len(ok) else pd.Series(False, index=ok.index)
    if twins.any():  # the paper's figure compares models; a twin is drawn against ours in ours_vs_official
        figure.notes.append("official twins left out (compared with ours in `ours_vs_official`): "
                            + ", ".join(sorted(set(ok.loc[twins, "_label"]))))
        ok = ok[~twins]
    if ok.empty:
        figure.missing = "no successful train rows of our models in the CSVs"
        return figure
    rows, note = closest_point(ok)
    figure.notes.append(note)
    rows = separate_settings(figure, rows)
    mem, flops = memory_column(rows), flops_column(rows)
    table = rows.groupby("_label", as_index=False).last()[
        ["_label", "model", "variant", "seq_len", "batch_size", "n_layers", "n_heads", "d_model", mem, flops,
         "params_total", "time_median_ms", "_run"]].rename(columns={"_label": "line", "_run": "run"})
    table, notes = _attach_metrics(table, metrics)
    figure.notes += notes
    figure.table, figure.runs = table, sorted(set(rows["_run"]))
    has_ndcg = "ndcg@10" in table.columns and table["ndcg@10"].notna().any()
    fig, ax = plt.subplots(figsize=(8, 5.2))
    gflops = table[flops].astype(float) / 1e9
    if has_ndcg:
        shown = table[table["ndcg@10"].notna()]
        area = 2000 * gflops[shown.index] / gflops.max()
        ax.scatter(shown[mem], shown["ndcg@10"], s=area.clip(lower=30), alpha=0.45,
                   c=[colour_of(colours, lab) for lab in shown["line"]], edgecolors="black")
        _label_points(ax, shown[mem].astype(float), shown["ndcg@10"].astype(float),
                      [f"{r['line']}\n{float(r[flops]) / 1e9:.3g} GFLOP" for _, r in shown.iterrows()])
        ax.set_ylabel("NDCG@10 (test)")
        ax.set_title(f"{figure.title}; bubble area = step FLOPs", fontsize=10)
        if len(shown) < len(table):
            figure.notes.append("lines without NDCG@10 are left off the chart (their numbers are in the table)")
    else:
        figure.notes.append("NDCG@10 not available: models are placed on the memory/FLOPs plane only")
        ax.scatter(table[mem], gflops, s=160, alpha=0.6, c=[colour_of(colours, lab) for lab in table["line"]],
                   edgecolors="black")
        _label_points(ax, table[mem].astype(float), gflops, list(table["line"]))
        ax.set_ylabel(f"train step GFLOPs ({flops})")
        ax.set_title("Fig. 3: memory vs FLOPs; NDCG@10 not available", fontsize=10)
    ax.set_xlabel(MEM_YLABEL[mem])
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    figure.png = save_figure(fig, out_dir / f"{figure.key}.png")
    return figure


def table3_recgrela_layers(results: pd.DataFrame, metrics: pd.DataFrame | None, colours: dict,
                           out_dir: Path) -> Figure:
    """Table 3: RecGRELA at 1..6 layers, step time and memory (+ test metrics where trained)."""
    figure = Figure("table3_recgrela_layers", "Table 3: RecGRELA depth 1..6 (time, memory, metrics)",
                    "RecGRELA (default config) train step against the number of layers; the paper reports "
                    "time per epoch on a GPU, this table the median time of one step.")
    rows = results[(results["model"] == "recgrela") & (results["variant"] == "default")
                   & (results["workload"] == "train") & (results["axis"] == "n_layers")]
    if rows.empty:
        figure.missing = "no RecGRELA train rows swept over layers (run `python -m bench.sweep --axis layers`)"
        return figure
    rows, note = coherent(rows, free=("n_layers",))
    if note:
        figure.notes.append(note)
    rows = separate_settings(figure, rows)
    layers = sorted(int(v) for v in rows["n_layers"].unique())
    if layers != list(range(1, 7)):
        figure.notes.append(f"layers measured: {', '.join(map(str, layers))} (the paper: 1..6)")
    table = _lines_table(rows, "n_layers")
    table, notes = _attach_metrics(table, metrics, join_on=("n_layers",))
    figure.notes += notes
    figure.table, figure.runs = table, sorted(set(rows["_run"]))
    figure.png = _time_memory_panels([("RecGRELA", rows, "n_layers")], colours, figure.title,
                                     out_dir / f"{figure.key}.png")
    return figure


def _scaling(results: pd.DataFrame, axis: str, wanted: list, lo: float = 0, hi: float = math.inf) -> tuple:
    rows = results[results["model"].isin(wanted) & (results["variant"] == "default")
                   & (results["workload"] == "train") & (results["axis"] == axis) & results[axis].between(lo, hi)]
    return coherent(rows, free=(axis,))


def fig6_layers_recgrela_sigma(results: pd.DataFrame, metrics, colours: dict, out_dir: Path) -> Figure:
    """Fig. 6: layers vs time and memory, RecGRELA vs SIGMA."""
    wanted = ["recgrela", "sigma"]
    figure = Figure("fig6_layers_recgrela_sigma", "Fig. 6: layer-wise scaling, RecGRELA vs SIGMA",
                    "Train step time and peak memory against the number of layers (default configs).")
    rows, note = _scaling(results, "n_layers", wanted)
    if note:
        figure.notes.append(note)
    rows = separate_settings(figure, rows)
    _absent(figure, wanted, rows)
    if rows.empty:
        figure.missing = ("no RecGRELA or SIGMA train rows swept over layers "
                          "(`python -m bench.sweep --axis layers --models recgrela,sigma`)")
        return figure
    figure.table, figure.runs = _lines_table(rows, "n_layers"), sorted(set(rows["_run"]))
    figure.png = _time_memory_panels([("layers", rows, "n_layers")], colours, figure.title,
                                     out_dir / f"{figure.key}.png")
    return figure


def fig7_seqlen_heads_recgrela_eulerformer(results: pd.DataFrame, metrics, colours: dict, out_dir: Path) -> Figure:
    """Fig. 7: sequence length 100..200 and heads vs time and memory, RecGRELA vs EulerFormer."""
    wanted = ["recgrela", "eulerformer"]
    figure = Figure("fig7_seqlen_heads_recgrela_eulerformer", "Fig. 7: length and heads, RecGRELA vs EulerFormer",
                    "Train step time and peak memory against L in the paper's range 100..200, and against "
                    "the number of heads (default configs).")
    by_len, note_len = _scaling(results, "seq_len", wanted, 100, 200)
    by_heads, note_heads = _scaling(results, "n_heads", wanted)
    for prefix, note in (("length", note_len), ("heads", note_heads)):
        if note:
            figure.notes.append(f"{prefix}: {note}")
    by_len, by_heads = separate_settings(figure, by_len), separate_settings(figure, by_heads)
    for part, rows in (("length (100 <= L <= 200)", by_len), ("heads", by_heads)):
        have = set(rows["model"]) if len(rows) else set()
        for name in wanted:
            if name not in have:
                figure.notes.append(f"{name}: no rows swept over {part} in the CSVs")
    if by_len.empty and by_heads.empty:
        figure.missing = ("no RecGRELA or EulerFormer train rows swept over L in 100..200 or over heads "
                          "(`python -m bench.sweep --axis seqlen --values 100,125,150,175,200 --models "
                          "recgrela,eulerformer` and `--axis heads`)")
        return figure
    tables = [_lines_table(rows, axis).assign(axis=axis)
              for rows, axis in ((by_len, "seq_len"), (by_heads, "n_heads")) if len(rows)]
    figure.table = pd.concat(tables, ignore_index=True)
    figure.runs = sorted(set(by_len["_run"]) | set(by_heads["_run"]))
    figure.png = _time_memory_panels([("length", by_len, "seq_len"), ("heads", by_heads, "n_heads")], colours,
                                     figure.title, out_dir / f"{figure.key}.png")
    return figure


ABLATIONS = {  # Fig. 5's two groups: config key -> (label of each value, the official default)
    "position": ({"rope": "RoPE", "ape": "APE", "lpe": "LPE"}, "rope"),
    "gate_activation": ({"silu": "SiLU", "relu": "ReLU", "gelu": "GELU"}, "silu"),
}


def fig5_position_activation(results: pd.DataFrame, metrics: pd.DataFrame | None, colours: dict,
                             out_dir: Path) -> Figure:
    """Fig. 5: RecGRELA with RoPE / APE / LPE and with SiLU / ReLU / GELU gates: speed and memory."""
    figure = Figure("fig5_position_activation", "Fig. 5: position encoding and gate activation (RecGRELA)",
                    "RecGRELA train step time and peak memory per position encoding and per gate activation, "
                    "at one grid point (the default config counts as RoPE and as SiLU).")
    rows = results[(results["model"] == "recgrela") & (results["workload"] == "train")]
    members = []
    for variant in sorted(set(rows["variant"])):
        keys = overrides(variant)
        for key, (labels, default) in ABLATIONS.items():
            if not keys or (set(keys) == {key} and keys[key] in labels):
                members.append((key, labels[keys.get(key, default)], variant))
    chosen = rows[rows["variant"].isin({v for _, _, v in members})]
    if chosen.empty or {v for _, _, v in members} <= {"default"}:
        figure.missing = ("no RecGRELA ablation rows (e.g. `--models recgrela,recgrela:position=ape,"
                          "recgrela:position=lpe,recgrela:gate_activation=relu,recgrela:gate_activation=gelu`)")
        return figure
    chosen, note = closest_point(chosen)
    figure.notes.append(note)
    mem, flops = memory_column(chosen), flops_column(chosen)
    main_axis = chosen.loc[chosen["variant"] != "default", "axis"].mode()
    records = []
    for key, setting, variant in members:
        got = chosen[chosen["variant"] == variant]
        if got.empty:
            continue
        # the default config may sit at this point on several axes: take the ablation sweep's own row
        r = got.assign(_same=got["axis"].isin(main_axis)).sort_values("_same", kind="stable").iloc[-1]
        records.append({"group": key, "setting": setting, "line": r["_label"], "model": "recgrela",
                        "variant": variant, "status": r["status"], "time_median_ms": r["time_median_ms"],
                        "time_p20_ms": r["time_p20_ms"], "time_p80_ms": r["time_p80_ms"], mem: r[mem],
                        flops: r[flops], "params_total": r["params_total"], "run": r["_run"]})
    rank = {(key, label): (i, j) for i, (key, (labels, _default)) in enumerate(ABLATIONS.items())
            for j, label in enumerate(labels.values())}
    records.sort(key=lambda r: rank[(r["group"], r["setting"])])
    table = pd.DataFrame(records)
    for key, (labels, _default) in ABLATIONS.items():
        absent = [label for label in labels.values() if label not in set(table.loc[table["group"] == key, "setting"])]
        if absent:
            figure.notes.append(f"{key}: no rows for {', '.join(absent)} at this grid point")
    table, notes = _attach_metrics(table, metrics)
    figure.notes += notes
    figure.table, figure.runs = table, sorted(set(chosen["_run"]))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    for (key, (labels, _default)), (ax_time, ax_mem) in zip(ABLATIONS.items(), axes):
        part = table[table["group"] == key].set_index("setting").reindex(list(labels.values()))
        xs = np.arange(len(part))
        for ax, col, label in ((ax_time, "time_median_ms", "train step time (ms, median)"),
                               (ax_mem, mem, MEM_YLABEL[mem])):
            values = part[col].astype(float).to_numpy()
            ax.bar(xs, np.nan_to_num(values), color=["C0", "C1", "C2"][: len(xs)], alpha=0.8)
            if col == "time_median_ms":
                lo, hi = part["time_p20_ms"].astype(float), part["time_p80_ms"].astype(float)
                ax.errorbar(xs, values, yerr=[values - lo, hi - values], fmt="none", color="black", capsize=4)
            tops = part["time_p80_ms"].astype(float).to_numpy() if col == "time_median_ms" else values
            for x, v, top in zip(xs, values, tops):
                ax.text(x, 0 if np.isnan(v) else max(v, np.nan_to_num(top)), "no data" if np.isnan(v) else f"{v:.3g}",
                        ha="center", va="bottom", fontsize=8)
            ax.set_xticks(xs, list(part.index))
            ax.set_ylabel(label)
            ax.set_title(f"{key}: {'time' if col == 'time_median_ms' else 'memory'}", fontsize=10)
            ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(figure.title, fontsize=11)
    fig.tight_layout()
    figure.png = save_figure(fig, out_dir / f"{figure.key}.png")
    return figure


def fig9_rank(rank_csv: Path | None, out_dir: Path) -> Figure:
    """Fig. 9: rank heatmaps, drawn by `bench.train.rank.plot_rank_figure` from the rank CSV."""
    figure = Figure("fig9_rank", "Fig. 9: feature-matrix rank heatmaps",
                    "Numerical rank of the last layer's [L, d] output per model, as heatmaps (bench.rank).")
    if rank_csv is None:
        figure.missing = "no rank CSV among the inputs (written by `python -m bench.rank`; or pass --rank-csv)"
        return figure
    try:
        from bench.train.rank import plot_rank_figure
    except ImportError as err:
        figure.missing = f"bench.rank is not available ({type(err).__name__}: {err}); the rank CSV is {rank_csv}"
        return figure
    try:
        table = pd.read_csv(rank_csv)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        figure.missing = f"cannot read the rank CSV {rank_csv}: {' '.join(str(err).split())}"
        return figure
    png = out_dir / f"{figure.key}.png"
    try:
        plot_rank_figure(Path(rank_csv), png)  # writes atomically (bench.report.plots.save_figure)
    except Exception as err:
        figure.missing = f"bench.train.rank.plot_rank_figure failed on {rank_csv}: {type(err).__name__}: {err}"
        return figure
    finally:
        plt.close("all")
    figure.table, figure.png, figure.runs = rank_summary(table), png, [str(Path(rank_csv).parent)]
    figure.notes.append(f"every rank, singular value and the drawn features: {rank_csv}")
    return figure


def rank_summary(ranks: pd.DataFrame) -> pd.DataFrame:
    """Fig. 9's table: per checkpoint and view, how many matrices and their rank (mean, min, max)."""
    table = ranks.drop(columns=[c for c in ("features", "singular_values") if c in ranks.columns])
    keys = [c for c in ("model_spec", "checkpoint", "view") if c in table.columns]
    if "rank" not in table.columns or not keys:
        return table
    table = table.assign(rank=pd.to_numeric(table["rank"], errors="coerce"))
    stats = {"matrices": ("rank", "size"), "rank_mean": ("rank", "mean"), "rank_min": ("rank", "min"),
             "rank_max": ("rank", "max")}
    if "max_rank" in table.columns:
        stats["max_rank"] = ("max_rank", "max")
    return table.groupby(keys, sort=False).agg(**stats).reset_index()


def crossover(lengths: list, ratio: list, reference_failed: list) -> tuple[float, str]:
    """Where a line becomes and stays cheaper than a reference (ratio line / reference < 1).

    `lengths` ascending; `ratio[i]` is NaN where the reference failed (`reference_failed[i]`, which
    counts as the line being cheaper). Between the last length where the line is not cheaper and
    the next one the crossing is interpolated log-log. Returns (length or NaN, text).
    """
    cheaper = [bool(f) or (r < 1) for r, f in zip(ratio, reference_failed)]
    if not lengths:
        return math.nan, "no common lengths"
    if all(cheaper):
        return float(lengths[0]), f"<= {lengths[0]} (cheaper at every measured length)"
    last = max(i for i, c in enumerate(cheaper) if not c)
    if last == len(lengths) - 1:
        return math.nan, f"not up to L={lengths[-1]}"
    lo, hi = lengths[last], lengths[last + 1]
    if reference_failed[last + 1]:
        return float(hi), f"<= {hi} (between {lo} and {hi}; SASRec failed at {hi})"
    r_lo, r_hi = ratio[last], ratio[last + 1]
    t = math.log(r_lo) / (math.log(r_lo) - math.log(r_hi))  # log r is linear in log L between the points
    at = math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))
    return at, f"~{at:,.0f} (interpolated between {lo} and {hi})"


def _fitted_slope(rows: pd.DataFrame, column: str) -> float:
    """Log-log slope of `column` against seq_len over the rows where both are positive (one line's ok rows)."""
    values = rows[["seq_len", column]].astype(float)
    values = values[(values > 0).all(axis=1)]
    return loglog_slope(values["seq_len"].tolist(), values[column].tolist())


def long_seq_loglog(results: pd.DataFrame, metrics, colours: dict, out_dir: Path) -> Figure:
    """L >= 256 for every line: time and memory log-log, fitted slopes, crossovers with SASRec."""
    figure = Figure("long_seq_loglog", "Long sequences: time and memory from L=256, log-log",
                    "Every line swept over L >= 256 (both workloads where measured), log-log; the table holds "
                    "each line's fitted log-log slope (1 = linear, 2 = quadratic) and the length where it "
                    "becomes cheaper than SASRec.")
    rows = results[(results["axis"] == "seq_len") & (results["seq_len"] >= LONG_FROM)]
    if rows.empty or rows.groupby(["_label", "workload"])["seq_len"].nunique().max() < 2:
        figure.missing = (f"no line swept over two or more lengths L >= {LONG_FROM} "
                          "(`python -m bench.sweep --axis seqlen --preset long`)")
        return figure
    groups, panels, records = [], [], []
    for workload in sorted(set(rows["workload"])):
        part, note = coherent(rows[rows["workload"] == workload], free=("seq_len",))
        if note:
            figure.notes.append(f"{workload}: {note}")
        part = separate_settings(figure, part)
        groups.append(part)
        panels.append((workload, part, "seq_len"))
    rows = pd.concat(groups, ignore_index=True)
    figure.runs = sorted(set(rows["_run"]))
    mem, flops = memory_column(rows), flops_column(rows)
    references = sorted(set(rows.loc[rows["model"] == "sasrec", "_label"]))
    if not references:
        figure.notes.append("sasrec: no rows at L >= 256, so no crossover lengths")
    for (label, workload), part in rows.groupby(["_label", "workload"]):
        ok = part[part["status"] == "ok"].sort_values("seq_len")
        flop_slope = _fitted_slope(ok, flops) if ok[flops].notna().all() else math.nan
        cost = "" if math.isnan(flop_slope) else ("linear" if flop_slope < LINEAR_FLOP_SLOPE else "quadratic")
        for metric_name, metric in (("time", "time_median_ms"), ("memory", mem)):
            top = ok[ok[metric].notna()].tail(3)
            record = {"line": label, "workload": workload, "metric": metric_name, "column": metric,
                      "from": int(part["seq_len"].min()), "to": int(part["seq_len"].max()),
                      "points_ok": int(ok[metric].notna().sum()),
                      "slope": round(_fitted_slope(ok, metric), 3) if ok[metric].notna().all() else math.nan,
                      "slope_last3": round(_fitted_slope(top, metric), 3),
                      "step_flops_slope": round(flop_slope, 3), "cost_class": cost,
                      "failed_at": ", ".join(f"{int(r.seq_len)} ({r.status})" for r in part.itertuples()
                                             if r.status != "ok")}
            for ref in references:
                if label == ref or part["model"].iloc[0] == "sasrec":
                    record[f"overtakes {ref} at L"] = ""
                    continue
                record[f"overtakes {ref} at L"] = _faster_from(rows[rows["workload"] == workload], part, ref, metric)
            records.append(record)
    figure.table = pd.DataFrame(records)
    fitted = {(r["workload"], r["metric"], r["line"]): r["slope"] for r in records}
    figure.png = _time_memory_panels(panels, colours, figure.title, out_dir / f"{figure.key}.png", loglog=True,
                                     slopes=fitted)
    return figure


# ------------------------------------------------------------------------------------ production costs

DOMINANT_SHARE = 0.5  # the catalogue "dominates" a step from the size where its share passes this


def _loglog_panel(ax, rows: pd.DataFrame, y: str, colours: dict, title: str, ylabel: str,
                  slopes: dict, x: str = "seq_len", band: tuple | None = None, inside: str = "upper left") -> None:
    """One log-log panel of `y` against `x`, a line per `_label`, its fitted slope in the legend."""
    _draw_lines(ax, rows, x, y, colours, band=band, loglog=True, ylabel=ylabel)
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        _slope_legend(ax, handles, [f"{label}: slope {slopes.get(label, math.nan):.2f}" for label in labels],
                      below=len(labels) > SLOPE_LEGEND_INSIDE_MAX, inside=inside)


def _swept(figure: Figure, rows: pd.DataFrame, x: str) -> pd.DataFrame:
    """The rows one figure draws along `x`: one coherent grid (`coherent`), lines split by setting
    (`separate_settings`), the notes and run folders recorded on `figure`."""
    rows, note = coherent(rows, free=(x,))
    if note:
        figure.notes.append(note)
    rows = separate_settings(figure, rows)
    figure.runs = sorted(set(rows["_run"]))
    return rows


def _faster_from(rows: pd.DataFrame, part: pd.DataFrame, ref: str, metric: str, x: str = "seq_len") -> str:
    """`crossover`'s text for one line (`part`, its rows) against the line `ref` among `rows` on
    `metric` along `x`: where it becomes and stays cheaper (a failed reference row counts as cheaper)."""
    base = rows[rows["_label"] == ref].set_index(x)
    mine = part.set_index(x)
    lengths = sorted(set(mine.index[mine["status"] == "ok"]) & set(base.index))
    ratio, failed = [], []
    for L in lengths:
        ref_row = base.loc[[L]].iloc[-1]
        failed.append(ref_row["status"] != "ok")
        ratio.append(math.nan if failed[-1] else float(mine.loc[[L]].iloc[-1][metric]) / float(ref_row[metric]))
    return crossover(lengths, ratio, failed)[1]


def stream_cost(results: pd.DataFrame, metrics, colours: dict, out_dir: Path) -> Figure:
    """The stream workload over L: time per event and state bytes per user, log-log, crossovers."""
    figure = Figure("stream_cost", "Streaming one new event: time per event and state kept per user vs L",
                    "Stream rows swept over L, log-log: the time of one new event and its full-catalogue "
                    "scores (median, p20..p80 band), and the bytes each model keeps per user between events "
                    "(K/V cache, recurrent state; recomputing models keep none and are listed in the table); "
                    "the table holds each line's slopes and the length from which it is faster per event "
                    "than each cache (attention) model.")
    rows = results[(results["workload"] == "stream") & (results["axis"] == "seq_len")]
    if rows.empty or rows.groupby("_label")["seq_len"].nunique().max() < 2:
        figure.missing = ("no stream rows swept over two or more lengths "
                          "(`python -m bench.sweep --axis seqlen --preset long --workload stream --batch-size 1`)")
        return figure
    rows = _swept(figure, rows, "seq_len")
    modes = {label: (part["stream_mode"].iloc[-1] or "not recorded") for label, part in rows.groupby("_label")}
    caches = sorted(label for label, mode in modes.items() if mode == "cache")
    records = []
    for label, part in rows.groupby("_label"):
        ok = part[part["status"] == "ok"].sort_values("seq_len")
        kept = ok["state_bytes_per_user"].dropna()
        record = {"line": label, "stream_mode": modes[label], "from": int(part["seq_len"].min()),
                  "to": int(part["seq_len"].max()), "points_ok": len(ok),
                  "time_slope": round(_fitted_slope(ok, "time_median_ms"), 3),
                  "state_bytes_slope": round(_fitted_slope(ok, "state_bytes_per_user"), 3) if (kept > 0).all()
                  and len(kept) > 1 else math.nan,
                  "state_bytes_per_user_at_max_L": int(kept.iloc[-1]) if len(kept) else math.nan,
                  "time_ms_at_max_L": float(ok["time_median_ms"].iloc[-1]) if len(ok) else math.nan,
                  "time_p99_ms_at_max_L": float(ok["time_p99_ms"].iloc[-1]) if len(ok) else math.nan,
                  "failed_at": ", ".join(f"{int(r.seq_len)} ({r.status})" for r in part.itertuples() if r.status != "ok")}
        for ref in caches:
            if label == ref:
                record[f"faster than {ref} from L"] = ""
                continue
            record[f"faster than {ref} from L"] = _faster_from(rows, part, ref, "time_median_ms")
        records.append(record)
    if not caches:
        figure.notes.append("no cache (attention) model among the stream rows, so no crossover lengths")
    figure.table = pd.DataFrame(records)
    kept_rows = rows[rows["state_bytes_per_user"] > 0]
    fig, (ax_time, ax_state) = plt.subplots(1, 2, figsize=(11, 4.2 + 0.14 * (-(-len(modes) // 2))))
    _loglog_panel(ax_time, rows, "time_median_ms", colours, "time per event",
                  "time per event (ms, median); p20..p80", {r["line"]: r["time_slope"] for r in records},
                  band=("time_p20_ms", "time_p80_ms"))
    if kept_rows.empty:
        _note_on(ax_state, "no model keeps a state (all recompute)")
        ax_state.set_xticks([])
        ax_state.set_yticks([])
    else:
        _loglog_panel(ax_state, kept_rows, "state_bytes_per_user", colours, "state kept per user",
                      "bytes per user between events", {r["line"]: r["state_bytes_slope"] for r in records},
                      inside="best")
    recompute = sorted(label for label, mode in modes.items() if mode == "recompute")
    if recompute:
        ax_state.text(0.98, 0.02, "keep nothing (recompute the window):\n" + "\n".join(recompute),
                      transform=ax_state.transAxes, ha="right", va="bottom", fontsize=7, color="dimgray")
    fig.suptitle(f"{figure.title}\n{environment(rows)}", fontsize=10)
    fig.tight_layout()
    figure.png = save_figure(fig, out_dir / f"{figure.key}.png")
    return figure


def catalogue_cost(results: pd.DataFrame, metrics, colours: dict, out_dir: Path) -> Figure:
    """Train rows swept over the catalogue size N: step time and peak memory per (line, loss)."""
    figure = Figure("catalogue_cost", "The catalogue as an axis: train step time and peak memory vs N",
                    "Train rows swept over the number of items N (log-log), one line per model and loss; the "
                    "table holds, per N, the share of the step's FLOPs in the loss's scoring products "
                    "(exact, analytic) and the share of step time the catalogue adds over the smallest N "
                    "measured (negative where a step at N timed faster than at the smallest N: timer noise), "
                    "and the N from which each passes one half.")
    rows = results[(results["workload"] == "train") & (results["axis"] == "n_items")]
    if rows.empty or rows.groupby("_label")["n_items"].nunique().max() < 2:
        figure.missing = ("no train rows swept over two or more catalogue sizes "
                          "(`python -m bench.sweep --axis items --models recgrela,sasrec --loss ce,sampled:128`)")
        return figure
    rows = _swept(figure, rows, "n_items")
    mem = memory_column(rows)
    records = []
    for label, part in rows.groupby("_label"):
        ok = part[part["status"] == "ok"].sort_values("n_items")
        if ok.empty:
            continue
        smallest = ok.iloc[0]
        for r in ok.itertuples():
            loss = parse_loss(row_loss({"loss": r.loss, "workload": "train"}))
            scoring = 3 * loss.output_flops(int(r.batch_size), int(r.d_model), int(r.n_items))
            step = r.step_flops_analytic
            records.append({"line": label, "loss": loss.spec, "n_items": int(r.n_items),
                            "time_median_ms": r.time_median_ms, mem: getattr(r, mem),
                            "loss_flop_share": round(scoring / step, 4) if step and step > 0 else math.nan,
                            "catalogue_time_share": round(1 - smallest.time_median_ms / r.time_median_ms, 4)})
    table = pd.DataFrame(records)
    for column in ("loss_flop_share", "catalogue_time_share"):
        dominant = {}
        for label, part in table.groupby("line"):
            over = part[part[column] > DOMINANT_SHARE]["n_items"]
            under = part[part[column] <= DOMINANT_SHARE]["n_items"]
            later = over[over > (under.max() if len(under) else 0)]
            dominant[label] = int(later.min()) if len(later) else math.nan
        table[f"{column} > {DOMINANT_SHARE:g} from N"] = table["line"].map(dominant).astype("Int64")  # empty: never
    figure.table = table
    slopes = {}
    for label, part in rows[rows["status"] == "ok"].groupby("_label"):
        values = part[["n_items", "time_median_ms", mem]].astype(float)
        slopes[("train", "time", label)] = loglog_slope(values["n_items"].tolist(), values["time_median_ms"].tolist())
        slopes[("train", "memory", label)] = loglog_slope(values["n_items"].tolist(), values[mem].tolist())
    figure.png = _time_memory_panels([("train", rows, "n_items")], colours, figure.title,
                                     out_dir / f"{figure.key}.png", loglog=True, slopes=slopes)
    return figure


# ------------------------------------------------------------------------------------ official twins

OFFICIAL = "official/"  # model spec prefix of an official twin (bench.adapters): official/NAME
POINT = GRID + ("device",)
# (panel, our column, the official column, ratio column); "flops" is chosen per pair (`flops_column`)
RATIOS = (("time", "time_ours_ms", "time_official_ms", "time_ratio"),
          ("memory", "peak_ours_bytes", "peak_official_bytes", "memory_ratio"),
          ("FLOPs", "flops_ours", "flops_official", "flops_ratio"))
RATIO_SOURCE = {"time": "time_median_ms", "memory": "tracked_peak_bytes"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
MAX_COMMANDS = 4  # sweep lines suggested for missing twins; more settings are counted, not listed


def is_official(model) -> bool:
    return str(model).startswith(OFFICIAL)


def _reconstructed(rows: pd.DataFrame) -> pd.Series:
    """Rows of a model rebuilt without public code (`reconstruction=True`: ELASTIC): no official twin."""
    if "reconstruction" not in rows.columns:
        return pd.Series(False, index=rows.index)
    return rows["reconstruction"].astype(str).str.strip().str.lower().isin(("true", "1", "1.0"))


def sweep_commands(missing: list) -> list:
    """`python -m bench.sweep` lines that would measure `missing` = [(spec, partner, workload, row), ...]
    together with each spec's partner (so that both sides' times come from one run): one line per
    setting of the fixed grid dimensions, device and threads, over the lengths needed."""
    groups = {}
    for spec, partner, workload, row in missing:
        fixed = tuple(str(row[c]) for c in ("batch_size", "n_layers", "n_heads", "d_model", "n_items", "device",
                                            "threads"))
        group = groups.setdefault(fixed, {"row": row, "specs": set(), "workloads": set(), "lengths": set()})
        group["specs"] |= {spec, partner}
        group["workloads"].add(workload)
        if pd.notna(row["seq_len"]):
            group["lengths"].add(int(row["seq_len"]))
    lines = []
    for group in groups.values():
        row, parts = group["row"], ["python -m bench.sweep --axis seqlen"]
        if group["lengths"]:
            parts.append("--values " + ",".join(map(str, sorted(group["lengths"]))))
        for flag, col in (("--batch-size", "batch_size"), ("--d-model", "d_model"), ("--layers", "n_layers"),
                          ("--heads", "n_heads"), ("--n-items", "n_items")):
            if pd.notna(row[col]):
                parts.append(f"{flag} {format_number(float(row[col]))}")
        if row["device"]:
            parts.append(f"--device {row['device']}")
        if pd.notna(row["threads"]) and row["threads"] > 0:
            parts.append(f"--threads {int(row['threads'])}")
        workloads = sorted(group["workloads"])
        if workloads != ["train"]:
            parts.append("--workload " + (workloads[0] if len(workloads) == 1 else "both"))
        parts.append("--models " + ",".join(sorted(group["specs"])))
        lines.append(" ".join(parts))
    return lines


def _commands_text(missing: list) -> str:
    lines = sweep_commands(missing)
    more = len(lines) - MAX_COMMANDS
    return "; ".join(f"`{c}`" for c in lines[:MAX_COMMANDS]) + (
        f" (and {more} more setting(s) of the fixed grid dimensions)" if more > 0 else "")


def _missing_text(missing: list) -> str:
    """`official/sasrec at L=200,1000 (train); recgrela at L=400 (infer)`."""
    what = {}
    for spec, _partner, workload, row in missing:
        what.setdefault((spec, workload), set()).add(row["seq_len"])
    return "; ".join(f"{spec} at L={','.join(format_number(float(v)) for v in sorted(lengths))} ({workload})"
                     for (spec, workload), lengths in sorted(what.items()))


def _ratio(ours, official) -> float:
    ours, official = float(ours), float(official)
    return ours / official if np.isfinite(ours) and np.isfinite(official) and official > 0 else math.nan


def _pair_record(name: str, mine: pd.Series, theirs: pd.Series) -> dict:
    """One table row: one of our lines and the official twin at one workload and grid point."""
    workload = theirs["workload"]
    flops_col, f_ours, f_off = "", math.nan, math.nan
    for col in ("step_flops_flopcounter",) + (("fwd_flops_fvcore",) if workload == "infer" else ()):
        if pd.notna(mine[col]) and pd.notna(theirs[col]):
            flops_col, f_ours, f_off = col, mine[col], theirs[col]
            break
    values = {"time": (mine["time_median_ms"], theirs["time_median_ms"]),
              "memory": (mine["tracked_peak_bytes"], theirs["tracked_peak_bytes"]), "FLOPs": (f_ours, f_off)}
    both_ok = mine["status"] == "ok" and theirs["status"] == "ok"
    record = {"model": name, "ours": mine["_label"], "official": theirs["_label"], "workload": workload,
              **{c: mine[c] for c in POINT}, "ours_status": mine["status"], "official_status": theirs["status"]}
    for kind, ours_col, official_col, ratio_col in RATIOS:
        a, b = values[kind]
        record[ours_col], record[official_col] = a, b
        record[ratio_col] = _ratio(a, b) if both_ok else math.nan
    record["flops_column"] = flops_col
    record["params_ours"], record["params_official"] = mine["params_total"], theirs["params_total"]
    record["same_run"] = "yes" if mine["_run"] == theirs["_run"] else "no"
    record["ours_run"], record["official_run"] = mine["_run"], theirs["_run"]
    return record


def ours_vs_official(results: pd.DataFrame, metrics, colours: dict, out_dir: Path) -> Figure:
    """Each of our models against its official twin (`official/NAME`: the official code measured in
    the same harness): ours / official of step time, tracked peak bytes and FLOPs at every workload
    and grid point both have, one line per variant of ours; parameter counts side by side."""
    figure = Figure("ours_vs_official", "Ours vs the official code: time, memory and FLOP ratios",
                    "Per model with an official twin (`official/NAME`), ours / official at every workload and "
                    "grid point where both were measured: median step time, tracked peak bytes and step FLOPs "
                    "(below 1 = ours cheaper), with both parameter counts.")
    if results.empty:
        figure.missing = ("no rows in the CSVs (e.g. `python -m bench.sweep --axis seqlen --values 200,1000 "
                          "--batch-size 64 --d-model 64 --layers 4 --heads 4 --models recgrela,official/recgrela`)")
        return figure
    key = ["model", "variant", "workload", *POINT]  # one row per line and point, whatever the axis
    latest = results.sort_values("timestamp_utc", kind="stable").drop_duplicates(key, keep="last")
    twins = latest[latest["model"].map(is_official)]
    ours = latest[~latest["model"].map(is_official) & ~_reconstructed(latest)]
    names = sorted({m[len(OFFICIAL):] for m in twins["model"]})
    from bench.adapters.official import twin_names

    # only models that have official code can miss a twin (not ELASTIC, a plugin or recbole/NAME)
    absent = [(OFFICIAL + r["model"], spec_label(r["model"], r["variant"]), r["workload"], r)
              for _, r in ours.iterrows() if r["model"] not in names and r["model"] in twin_names()]
    if twins.empty:
        figure.missing = ("no official twin rows (model `official/NAME`) in the CSVs; they would be measured, "
                          "beside ours in one run so the times compare, by " + _commands_text(absent))
        return figure
    # the lines of the ratio panels: each side of a pair split where its rows were measured differently
    paired = latest["model"].map(lambda m: m[len(OFFICIAL):] if is_official(m) else m).isin(names)
    latest = pd.concat([separate_settings(figure, latest[paired]), latest[~paired]]).sort_index()
    twins, ours = latest.loc[twins.index], latest.loc[ours.index]
    records = []
    for name in names:
        mine_rows, their_rows = ours[ours["model"] == name], twins[twins["model"] == OFFICIAL + name]
        for their_variant, theirs_v in their_rows.groupby("variant", sort=True):
            if mine_rows.empty:
                absent += [(name, spec_label(OFFICIAL + name, their_variant), r["workload"], r)
                           for _, r in theirs_v.iterrows()]
                continue
            for our_variant, mine_v in mine_rows.groupby("variant", sort=True):
                at = {tuple(map(str, r[["workload", *POINT]])): r for _, r in mine_v.iterrows()}
                for _, theirs in theirs_v.iterrows():
                    point = tuple(map(str, theirs[["workload", *POINT]]))
                    if point in at:
                        records.append(_pair_record(name, at.pop(point), theirs))
                    else:
                        absent.append((spec_label(name, our_variant), spec_label(OFFICIAL + name, their_variant),
                                       theirs["workload"], theirs))
                absent += [(spec_label(OFFICIAL + name, their_variant), spec_label(name, our_variant), r["workload"], r)
                           for r in at.values()]
    if not records:
        figure.missing = ("no workload and grid point where both one of our models and its official twin were "
                          f"measured; the sweep that measures both sides in one run: {_commands_text(absent)}")
        return figure
    table = pd.DataFrame(records).sort_values(["model", "ours", "official", "workload", *POINT], kind="stable")
    figure.table = table.reset_index(drop=True)
    figure.runs = sorted(set(table["ours_run"]) | set(table["official_run"]))
    measured = table[(table["ours_status"] == "ok") & (table["official_status"] == "ok")]
    apart = int((measured["same_run"] == "no").sum())
    figure.notes.append(
        "ratios are ours / official at the same workload and grid point; memory is `tracked_peak_bytes` (exact "
        "tensor accounting, any device); FLOPs are `step_flops_flopcounter` (the whole step), or "
        "`fwd_flops_fvcore` for infer rows without it (`flops_column` says which); where either side failed, "
        "both statuses are shown and no ratio")
    figure.notes.append(
        "time ratios are only as good as the two wall times, which compare within one run (same machine, load "
        f"and moment; 10-25 % drift between runs): {apart} of {len(measured)} measured pair(s) join rows of "
        "different run folders (`same_run` = no)" + ("; read their time ratios as rough" if apart else ""))
    for r in table[(table["ours_status"] != "ok") | (table["official_status"] != "ok")].itertuples():
        reasons = [f"{side} {status}" + (f" ({reason})" if reason else "") for side, status, reason in (
            ("ours", r.ours_status, _reason(latest, r.ours, r)),
            ("official", r.official_status, _reason(latest, r.official, r)))]
        figure.notes.append(f"{r.ours} vs {r.official} at L={format_number(float(r.seq_len))} ({r.workload}): "
                            + ", ".join(reasons))
    for (label, subs), part in twins.groupby(["_label", "official_substitutions"], sort=True):
        lengths = ",".join(format_number(float(v)) for v in sorted(set(part["seq_len"].dropna())))
        which = f"`{subs}`" if subs else "none recorded (the official code ran as published)"
        figure.notes.append(f"official_substitutions of {label} ({len(part)} row(s), L={lengths}): {which}")
    if (twins["official_substitutions"] != "").any():
        figure.notes.append("a substitution replaces an official import by a stand-in (e.g. Mamba's CUDA scan by "
                            "`selective_scan_ref`): that twin's time and memory are the stand-in's, not the "
                            "official kernel's")
    if absent:
        figure.notes.append(f"not compared, no twin measured: {_missing_text(absent)}. The sweep that measures "
                            f"them beside their partners (one run, so the times compare): {_commands_text(absent)}")
    figure.png = _ratio_panels(figure.table, colours, figure.title, out_dir / f"{figure.key}.png")
    return figure


def _reason(latest: pd.DataFrame, label: str, record) -> str:
    """The `reason` cell of the row behind one side of a table row ('' when ok)."""
    match = latest[(latest["_label"] == label) & (latest["workload"] == record.workload)]
    for c in POINT:
        match = match[match[c].astype(str) == str(getattr(record, c))]
    return "" if match.empty else str(match["reason"].iloc[-1])


def _ratio_panels(table: pd.DataFrame, colours: dict, title: str, path: Path) -> Path:
    """One panel per ratio (time, memory, FLOPs) against L, a line at 1.0, one marker series per
    pair of lines and workload; a point where either side failed is marked at the top edge."""
    varying = [c for c in ("batch_size", "n_layers", "n_heads", "d_model", "n_items", "device")
               if table[c].astype(str).nunique() > 1]
    series = table.assign(_series=[
        f"{r['ours']} / {r['official']} ({r['workload']}"
        + "".join(f", {c}={r[c] if c == 'device' else format_number(float(r[c]))}" for c in varying) + ")"
        for _, r in table.iterrows()])
    names = sorted(set(series["_series"]))
    fig, axes = plt.subplots(1, len(RATIOS), figsize=(15, 4.4), squeeze=False)
    handles, statuses = {}, set()
    xs = table["seq_len"].dropna().to_numpy(float)
    for ax, (kind, _ours, _official, ratio) in zip(axes[0], RATIOS):
        top_edge = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
        values, stacked = [], {}
        for i, name in enumerate(names):
            part = series[series["_series"] == name].sort_values("seq_len")
            colour = colour_of(colours, part["ours"].iloc[0])
            good = part[part[ratio].notna()]
            (handle,) = ax.plot(good["seq_len"].to_numpy(float), good[ratio].to_numpy(float),
                                marker=MARKERS[i % len(MARKERS)], markersize=7, linewidth=0.8, linestyle="--",
                                color=colour, label=name)
            handles.setdefault(name, handle)
            values += good[ratio].tolist()
            for r in part[(part["ours_status"] != "ok") | (part["official_status"] != "ok")].itertuples():
                status = r.official_status if r.official_status != "ok" else r.ours_status
                status = status if status in FAIL_STYLE else "error"
                marker, _text, size = FAIL_STYLE[status]
                k = stacked.get(r.seq_len, 0)
                stacked[r.seq_len] = k + 1
                ax.plot([r.seq_len], [0.97 - 0.06 * k], marker=marker, markersize=size * 0.8, linestyle="none",
                        color=colour, markeredgecolor=colour if marker == "x" else "black",
                        transform=top_edge, clip_on=False, zorder=5)
                statuses.add(status)
        ax.axhline(1.0, color="black", linewidth=1, alpha=0.7)
        if span_is_log(xs):
            ax.set_xscale("log", base=2)
        if len(xs) and len(np.unique(xs)) <= 16:
            ax.set_xticks(np.unique(xs))
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(format_number))
        positive = [v for v in values if v > 0] + [1.0]
        if len(positive) > 1 and max(positive) / min(positive) >= 4:  # ratios: log keeps 2x and 0.5x symmetric
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        else:
            ax.set_ylim(0, max(positive) * 1.1)
        if stacked:  # keep the data clear of the failure markers at the top edge (as bench.plots does)
            frac = max(0.97 - 0.06 * max(stacked.values()) - 0.04, 0.3)
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, lo * (hi / lo) ** (1 / frac) if ax.get_yscale() == "log" else lo + (hi - lo) / frac)
        if not values:
            _note_on(ax, "no point where both sides were measured")
        ax.set_xlabel("seq_len")
        ax.set_ylabel(f"{kind}: ours / official")
        source = RATIO_SOURCE.get(kind, "step FLOPs")
        ax.set_title(f"{kind} ({source})", fontsize=10)
        ax.grid(True, alpha=0.3)
    for status, (marker, text, size) in FAIL_STYLE.items():
        if status in statuses:
            handles[f"{text} on one side (at top edge)"] = Line2D(
                [], [], linestyle="none", marker=marker, markersize=size * 0.7, color="gray",
                markeredgecolor="gray" if marker == "x" else "black")
    fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.02),
               ncol=min(3, len(handles)), frameon=False, fontsize=8)
    fig.suptitle(f"{title} (1.0 = same cost)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


# The RecGRELA paper's GPU memory (RecBole's end-of-run "GPU" cell: torch.cuda.max_memory_reserved / 2**30,
# over training at B=2048 and full-ranking evaluation at B=4096, fp32, one RTX 4090) and its Fig. 3 ratios.
PAPER_TABLE3_GIB = {1: 5.96, 2: 7.71, 3: 10.16, 4: 12.70, 5: 15.14, 6: 17.68}  # RecGRELA, L=200, 1..6 layers
PAPER_FIG3_RATIOS = (  # (what, numerator line, denominator line, column, the paper's ratio)
    ("LinRec / RecGRELA memory", "linrec", "recgrela", "memory", 1.276),
    ("LinRec / RecGRELA FLOPs", "linrec", "recgrela", "flops", 1.231),
    ("RecGRELA / RecBLR memory", "recgrela", "recblr", "memory", 0.87),
)


def predicted_vs_paper(results: pd.DataFrame, metrics, colours: dict, out_dir: Path) -> Figure:
    """Predicted (bench.sweep --predict, fake tensors) train-step peak memory against the paper's GPU
    memory: Table 3 (RecGRELA and its official twin at 1..6 layers, ratio predicted / paper) and
    Fig. 3's ratios between models at the paper point."""
    figure = Figure("predicted_vs_paper", "Predicted memory vs the paper (Table 3 and Fig. 3)",
                    "Tracked peak of one train step predicted under fake tensors (no GPU ran), against the GPU "
                    "memory the paper reports (RecBole's max_memory_reserved over training and evaluation).")
    predicted = results[(results["status"] == "predicted") & (results["workload"] == "train")]
    if predicted.empty:
        figure.missing = ("no predicted train rows (run `python -m bench.sweep --axis layers --preset paper "
                          "--predict --device cuda --models recgrela,official/recgrela`)")
        return figure
    layers = predicted[predicted["model"].isin(["recgrela", "official/recgrela"]) & (predicted["variant"] == "default")
                       & (predicted["axis"] == "n_layers")]
    layers, note = coherent(layers, free=("n_layers",))
    if note:
        figure.notes.append(note)
    layers = separate_settings(figure, layers)
    tables = []
    if len(layers):
        table = layers[["_label", "n_layers", "seq_len", "batch_size", "tracked_peak_bytes", "_run"]].copy()
        table["predicted_gib"] = table["tracked_peak_bytes"] / 2**30
        table["paper_gib"] = table["n_layers"].map(PAPER_TABLE3_GIB)
        table["predicted_over_paper"] = table["predicted_gib"] / table["paper_gib"]
        table = table.rename(columns={"_label": "line", "_run": "run"}).sort_values(["line", "n_layers"])
        table.insert(0, "part", "Table 3")
        tables.append(table)
        if not (layers["batch_size"] == PRESETS["paper"].batch_size).all() or not (layers["seq_len"] == PAPER_SEQ_LEN).all():
            figure.notes.append("Table 3 rows are not at the paper's B=2048, L=200: the ratios compare other sizes")
    at_point = predicted[predicted["variant"] == "default"]
    paper = PRESETS["paper"]
    paper_point = at_point[(at_point["seq_len"] == paper.seq_len) & (at_point["batch_size"] == paper.batch_size)
                           & (at_point["n_layers"] == paper.n_layers) & (at_point["n_heads"] == paper.n_heads)
                           & (at_point["d_model"] == paper.d_model)]
    if len(at_point):
        if len(paper_point):
            rows = paper_point
            figure.notes.append(f"Fig. 3 ratios at the paper's point (B={paper.batch_size}, L={paper.seq_len}, "
                                f"{paper.n_layers} layers, {paper.n_heads} heads, d={paper.d_model})")
        else:
            rows, note = closest_point(at_point)
            figure.notes.append(f"Fig. 3 ratios, not at the paper's point: {note}")
        by_model = rows.groupby("model").last()
        ratios = []
        for what, top, bottom, kind, paper in PAPER_FIG3_RATIOS:
            column = "tracked_peak_bytes" if kind == "memory" else flops_column(rows)
            for prefix, code in (("", "ours"), ("official/", "official twins")):
                if prefix + top in by_model.index and prefix + bottom in by_model.index:
                    ours = float(by_model.loc[prefix + top, column]) / float(by_model.loc[prefix + bottom, column])
                    ratios.append({"part": "Fig. 3", "line": f"{what} ({code})", "predicted_ratio": ours,
                                   "paper_ratio": paper, "predicted_over_paper": ours / paper})
                elif not prefix:
                    figure.notes.append(f"{what}: no predicted row of {top} or {bottom} at that point")
        if ratios:
            tables.append(pd.DataFrame(ratios))
    if not tables:
        figure.missing = "no predicted RecGRELA rows over layers and no predicted models at one point"
        return figure
    figure.table = pd.concat(tables, ignore_index=True)
    figure.runs = sorted(set(predicted["_run"]))
    figure.notes.append("the paper's figure is max_memory_reserved (allocator blocks, its caching reserve and "
                        "fragmentation, the full-ranking evaluation at B=4096 included; CUDA context excluded); the "
                        "prediction counts live tensor bytes only (each row's `prediction` cell says what it corrects "
                        "for a CUDA target)")
    if len(layers):
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        for label in sorted(layers["_label"].unique()):
            part = table[table["line"] == label]
            ax.plot(part["n_layers"], part["predicted_gib"], marker="o", linestyle="--",
                    color=colour_of(colours, label), label=f"{label} (predicted)")
        paper = sorted(PAPER_TABLE3_GIB.items())
        ax.plot([k for k, _ in paper], [v for _, v in paper], marker="s", color="black",
                label="RecGRELA, paper Table 3 (GPU, reserved)")
        ax.set_xlabel("n_layers")
        ax.set_ylabel("train peak memory (GiB)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
        ax.set_title("Table 3: predicted tracked peak vs the paper's GPU memory", fontsize=10)
        figure.png = save_figure(fig, out_dir / f"{figure.key}.png")
    return figure


FIGURES = (fig3_memory_flops_ndcg, table3_recgrela_layers, fig6_layers_recgrela_sigma,
           fig7_seqlen_heads_recgrela_eulerformer, fig5_position_activation, long_seq_loglog, stream_cost,
           catalogue_cost, ours_vs_official, predicted_vs_paper)


def all_figures(results: pd.DataFrame, metrics: pd.DataFrame | None, rank_csv: Path | None,
                out_dir: Path) -> list[Figure]:
    """Every figure into `out_dir`; a figure that fails to draw is reported, never raised."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = line_colours(sorted(set(results["_label"]))) if len(results) else {}
    figures = []
    measured = results[results["status"] != "predicted"]  # predicted rows meet the paper in their own figure only
    for make in FIGURES:
        try:
            figure = make(results if make is predicted_vs_paper else measured, metrics, colours, out_dir)
        except Exception as err:
            key = make.__name__
            figure = Figure(key, key, "", missing=f"drawing failed: {type(err).__name__}: {err}")
        finally:
            plt.close("all")
        if figure.missing is not None and make is not predicted_vs_paper and (results["status"] == "predicted").any():
            figure.missing += "; predicted rows (--predict) have no time and are drawn only in predicted_vs_paper"
        if figure.missing is None and len(figure.runs) > 1:
            figure.notes.append(f"rows from {len(figure.runs)} run folders: wall times compare reliably only "
                                "within one run (10-25 % drift between runs); tracked memory and FLOPs are exact")
        figures.append(figure)
    figures.insert(5, fig9_rank(rank_csv, out_dir))
    return figures
