"""Figures for the sweep results, redrawn from a results CSV.

Examples:
  python -m bench.plots reports/x/results.csv                  # figures next to the CSV
  python -m bench.plots reports/x/results.csv --out /tmp/figs

Figures are pure functions of result CSVs: nothing here ever builds or re-runs a
model.  ``plot_sweep`` turns the tidy results frame (one row per model, variant,
workload and grid point) into one PNG per (workload, metric[, axis]), and
``python -m bench.plots RESULTS_CSV [--out DIR]`` regenerates them from disk.
Bad input (a CSV that is not a results.csv of bench.sweep, a cell that cannot be
drawn, an --out that cannot be written) is one line on stderr, exit 2, and
nothing written.

Conventions
-----------
* One line per (model, variant), labelled by :func:`bench.grid.spec_label`; colours are
  assigned over the whole frame so a series keeps its colour in every figure.
  Rows of one (model, variant, workload) measured with different settings
  (bench.results.SETTINGS_COLUMNS: threads, warmup, repeats, seed, FLOP
  counting, dtype, torch, device name, environment) are never one line: they
  are split into lines labelled by the differing setting, ``linrec (threads 2)``,
  and the title says so (:func:`line_labels`).
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
* Every PNG is written to a temporary sibling and renamed into place, so an
  interrupted redraw leaves whole figures only.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
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

from bench import cli
from bench.cli import UsageError
from bench.results import COLUMNS, SETTINGS_COLUMNS, STATUSES, atomic_output, row_loss, spec_label

__all__ = ["line_labels", "plot_sweep", "plot_results_csv", "read_results_csv", "main"]

AXES: tuple[str, ...] = ("seq_len", "n_heads", "n_layers", "batch_size", "d_model", "n_items")
METRICS: tuple[str, ...] = ("time", "memory")
DPI = 120

TIME_YLABEL = {
    "train": "train step time (ms, median)",
    "infer": "inference time (ms, median)",
    "stream": "time per event (ms, median)",
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
    "n_items",
    "time_median_ms",
    "time_p20_ms",
    "time_p80_ms",
    "tracked_peak_mib",
    "cuda_peak_alloc_mib",
)
_STRINGS = ("model", "variant", "workload", "status", "reason", "axis", "device", "device_name", "loss")


# --------------------------------------------------------------------------- reading a results CSV


class ResultsCSVError(UsageError, ValueError):
    """A CSV that cannot be drawn: one line naming the file, the line and the column, and why.

    Both a `cli.UsageError` (commands report it as one line, exit 2) and a ValueError (for callers
    such as bench.sweep that catch ValueError)."""


# Columns a results.csv written by an older schema may lack (bench.results.read_rows reads them as
# empty); every other column of bench.results.COLUMNS has been written since the first sweep.
ADDED_LATER = ("attention_ops", "flopcounter_device", "scan_flops_analytic", "flops_analytic_reason",
               "fvcore_reason", "perf_env_json", "official_substitutions", "flops_counted", "achieved_tflops",
               "peak_tflops", "peak_source", "mfu", "tracked_categories_json", "prediction", "compile_backend",
               "compile_time_s", "graph_breaks", "tracked_reason", "loss", "stream_mode", "state_bytes_per_user",
               "time_p99_ms", "node")
REQUIRED_COLUMNS = tuple(c for c in COLUMNS if c not in ADDED_LATER)
WORKLOADS = ("train", "infer", "stream")
GRID_COLUMNS = ("seq_len", "batch_size", "n_layers", "n_heads", "d_model", "n_items")  # positive integers
# measurements: empty (not measured; status/reason say why) or a finite number >= 0
MEASURED_COLUMNS = (
    "params_total", "params_trainable", "time_median_ms", "time_iqr_ms", "time_p20_ms", "time_p80_ms",
    "time_min_ms", "tracked_peak_bytes", "tracked_peak_mib", "tracked_activation_bytes", "cuda_peak_alloc_mib",
    "cuda_peak_reserved_mib", "fwd_flops_fvcore", "fwd_flops_flopcounter", "step_flops_flopcounter",
    "fwd_flops_analytic", "step_flops_analytic", "scan_flops_analytic", "achieved_tflops", "peak_tflops", "mfu",
    "compile_time_s", "graph_breaks", "state_bytes_per_user", "time_p99_ms",
    # settings that are numbers
    "time_repeats", "time_warmup", "threads", "mem_limit_gib", "time_limit_s", "seed",
)
SIGNED_COLUMNS = ("nvml_peak_used_mib",)  # device memory minus a baseline: finite, either sign
MEMORY_COLUMNS = ("tracked_peak_mib", "cuda_peak_alloc_mib")  # an ok row has at least one
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"\+?\d+")


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def number_problem(text: str, *, signed: bool = False, high: float | None = None) -> str | None:
    """Why the cell `text` is not a finite number (>= 0 unless `signed`, <= `high` if given); None if it is."""
    value = text.strip()
    if not _NUMBER.fullmatch(value):
        try:
            float(value)
        except ValueError:
            return f"{_shown(text)} is not a number"
        return f"{_shown(text)} is not a finite number"
    number = float(value)
    if not math.isfinite(number):
        return f"{_shown(text)} is not a finite number"
    if number < 0 and not signed:
        return f"{_shown(text)} is negative"
    if high is not None and number > high:
        return f"{_shown(text)} is above {format_number(high)}"
    return None


def integer_problem(text: str, low: int = 1) -> str | None:
    """Why `text` is not an integer in `low`..cli.MAX_INT (a grid size: `low` 1); None if it is."""
    value = text.strip()
    kind = "positive integer" if low == 1 else f"integer >= {low}"
    if not _INTEGER.fullmatch(value) or int(value) < low:
        return f"{_shown(text)} is not a {kind}"
    if int(value) > cli.MAX_INT:
        return f"{_shown(text)} is not a {kind} of at most 2**31-1"
    return None


def read_csv_records(path, what: str, required: Iterable[str] = ()) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and the records of a CSV, each with the line it starts on (the header is line 1).

    Refuses (ResultsCSVError, one line) a path that does not exist or is a folder, an unreadable or
    non-UTF-8 file, an empty file, a header naming a column twice or lacking one of `required`, and
    a record whose number of cells differs from the header's (a torn or hand-edited line). Blank
    lines are skipped. `what` names the file in messages ("RESULTS_CSV", "metrics.csv").
    """
    path = Path(path)
    if not path.exists():
        raise ResultsCSVError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ResultsCSVError(f"{what} {path} is a folder, not a CSV file")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise ResultsCSVError(f"{path} is empty (not even a header)")
            names = [name.strip() for name in header]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise ResultsCSVError(f"{path} line 1: column {twice[0]!r} appears twice in the header")
            missing = [c for c in required if c not in names]
            if missing:
                raise ResultsCSVError(f"{path}: no column {', '.join(missing)} (a {what} has it)")
            records, line = [], reader.line_num
            for cells in reader:
                start, line = line + 1, reader.line_num
                if not cells:
                    continue
                if len(cells) != len(names):
                    raise ResultsCSVError(f"{path} line {start} has {len(cells)} cells, the header {len(names)} "
                                          "(a torn or hand-edited line)")
                records.append((start, dict(zip(names, cells))))
    except UnicodeDecodeError as err:
        raise ResultsCSVError(f"{path} is not UTF-8 text (byte {err.start}): not a {what}") from None
    except csv.Error as err:
        raise ResultsCSVError(f"{path} line {reader.line_num}: not a well-formed CSV ({err})") from None
    except OSError as err:
        raise ResultsCSVError(f"cannot read {what} {path}: {err.strerror or err}") from None
    return names, records


def check_results_header(path: Path, header: list[str]) -> None:
    """Refuse a header that is not bench.results.COLUMNS, or that schema minus columns added later
    (ADDED_LATER), in the schema's order: the only files bench.results.read_rows reads too."""
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise ResultsCSVError(f"{path} line 1: column {unknown[0]!r} is not a results column (bench.results.COLUMNS); "
                              "give a results.csv written by bench.sweep")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ResultsCSVError(f"{path}: no column {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                              "(every results.csv of bench.sweep has it)")
    expected = [c for c in COLUMNS if c in header]
    if header != expected:
        first = next(i for i, (a, b) in enumerate(zip(header, expected)) if a != b)
        raise ResultsCSVError(f"{path} line 1: the columns are not in the order of bench.results.COLUMNS "
                              f"(column {first + 1} is {header[first]!r}, expected {expected[first]!r})")


def results_row_problem(row: dict) -> tuple[str, str] | None:
    """(column, why) for the first cell of a results row that cannot be drawn; None for a good row.

    Refused: a status outside bench.results.STATUSES; a workload other than train/infer; an axis
    other than a grid column (or empty, as older rows have it); an empty model or device; a grid
    cell that is not a positive integer; a measurement or numeric setting that is not empty or a
    finite number >= 0; an ok row without its median time or its peak memory."""
    status, workload, axis = row["status"], row["workload"], row["axis"]
    if status not in STATUSES:
        return "status", f"{_shown(status)} is not one of {', '.join(STATUSES)}"
    if workload not in WORKLOADS:
        return "workload", f"{_shown(workload)} is not one of {', '.join(WORKLOADS)}"
    if axis not in AXES + ("",):
        return "axis", f"{_shown(axis)} is not one of {', '.join(AXES)} (or empty)"
    for column in ("model", "device"):
        if not row[column].strip():
            return column, "empty (every row names its model and device)"
    for column in GRID_COLUMNS:
        problem = integer_problem(row[column])
        if problem:
            return column, problem
    for column in MEASURED_COLUMNS + SIGNED_COLUMNS:
        if row.get(column, "").strip():
            problem = number_problem(row[column], signed=column in SIGNED_COLUMNS)
            if problem:
                return column, problem
    if status == "predicted":
        if row.get("time_median_ms", "").strip():
            return "time_median_ms", "a predicted row has no time (nothing ran), but this one has"
        if not row.get("tracked_peak_mib", "").strip():
            return "tracked_peak_mib", "a predicted row must have its predicted peak memory (empty here)"
        if not row.get("prediction", "").strip():
            return "prediction", "a predicted row must say how it was predicted (empty here)"
    if status == "ok":
        if not row["time_median_ms"].strip():
            return "time_median_ms", "an ok row must have its median step time (empty here)"
        if not any(row[c].strip() for c in MEMORY_COLUMNS) and not row.get("tracked_reason", "").strip():
            return "tracked_peak_mib", "an ok row must have its peak memory (tracked_peak_mib empty here)"
    return None


def read_results_csv(path, what: str = "RESULTS_CSV") -> pd.DataFrame:
    """A results CSV that can be drawn, as a frame of strings over bench.results.COLUMNS (columns of
    older schemas that are absent read as empty), one row per line in file order.

    Refused (ResultsCSVError: one line naming the file, the line and the column): everything
    `read_csv_records` refuses, a header other than bench.results.COLUMNS or its older subsets
    (`check_results_header`), any row `results_row_problem` refuses, and a file without rows
    ("no rows to draw"). Nothing is written."""
    path = Path(path)
    header, records = read_csv_records(path, what)
    check_results_header(path, header)
    for line, row in records:
        problem = results_row_problem(row)
        if problem:
            column, why = problem
            raise ResultsCSVError(f"{path} line {line}, column {column}: {why}")
    if not records:
        raise ResultsCSVError(f"{path}: no rows to draw (only a header)")
    return pd.DataFrame([{c: row.get(c, "") for c in COLUMNS} for _line, row in records], columns=COLUMNS)


# --------------------------------------------------------------------------- lines and their settings


# settings whose empty cell is a value, not "not recorded": an eager row has no compile backend and a
# measured row no prediction method (also in files from before those columns, when neither existed)
EMPTY_SETTING_MEANS = {"compile_backend": "none", "prediction": "measured"}


def _setting(column: str, value) -> str:
    """A setting cell as compared and shown: numbers as numbers (1.0 == 1), booleans lower case;
    an empty cell of EMPTY_SETTING_MEANS reads as what it means."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip().lower() in ("", "nan"):
        return EMPTY_SETTING_MEANS.get(column, "")
    text = str(value).strip()
    if text.lower() in ("true", "false"):
        return text.lower()
    if text and _NUMBER.fullmatch(text):
        return format_number(float(text))
    return "" if text.lower() == "nan" else text


def line_labels(rows: pd.DataFrame, by: Sequence[str] = ("model", "variant", "workload")
                ) -> tuple[pd.Series, pd.Series, list[str]]:
    """The line each row is drawn on, the settings its line was split by, and notes saying so.

    A line is (model, variant) within a workload, labelled by :func:`bench.grid.spec_label`. When its rows
    differ in a setting of bench.results.SETTINGS_COLUMNS (two or more non-empty values), they were
    measured differently and are not one series: each setting of those columns becomes its own
    line, labelled by the values, e.g. ``linrec (threads 1)`` and ``linrec (threads 2)``; a row with
    that cell empty gets ``threads not recorded``. Empty cells alone (an older schema without the
    column) split nothing. Returns (labels and the tuple of setting columns that split each row's
    line (empty: not split), both aligned with `rows.index`; one note per split line)."""
    labels = pd.Series([spec_label(m, v) for m, v in zip(rows["model"], rows["variant"])], index=rows.index,
                       dtype=object)
    if "loss" in rows.columns:  # train rows of several objectives (--loss): one line per loss, named
        losses = pd.Series([row_loss({"loss": loss, "workload": workload})
                            for loss, workload in zip(rows["loss"], rows["workload"])], index=rows.index)
        if losses.nunique() > 1:
            labels = labels + " [" + losses + "]"
            rows = rows.assign(_loss=losses)
            by = (*by, "_loss")
    split_by = pd.Series([()] * len(rows), index=rows.index, dtype=object)
    notes = []
    present = [c for c in SETTINGS_COLUMNS if c in rows.columns]
    if rows.empty or not present:
        return labels, split_by, notes
    settings = pd.DataFrame({c: [_setting(c, v) for v in rows[c]] for c in present}, index=rows.index)
    for key, group in rows.groupby(list(by), sort=True, dropna=False):
        values = settings.loc[group.index]
        differing = [c for c in present if len(set(values[c]) - {""}) > 1]
        if not differing:
            continue
        base = labels[group.index[0]]
        for index in group.index:
            labels[index] = f"{base} (" + ", ".join(
                f"{c} {values.at[index, c] or 'not recorded'}" for c in differing) + ")"
            split_by[index] = tuple(differing)
        what = "; ".join(f"{c} " + ", ".join(sorted(set(values[c]) - {""})) for c in differing)
        workload = key[list(by).index("workload")] if "workload" in by else ""
        notes.append(f"{base} ({workload}): rows measured with different {', '.join(differing)} ({what}) are drawn "
                     f"as separate lines: {', '.join(sorted(set(labels[group.index])))}")
    return labels, split_by, notes


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
    df["_label"] = [spec_label(m, v) for m, v in zip(df["model"], df["variant"])]
    return df


def prepare(results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows ``plot_sweep`` draws, typed, with their axis filled in and each row's line in
    ``_label``: within each figure (workload, axis), rows of one model and variant measured with
    different settings are separate lines (:func:`line_labels`); ``_split_by`` names the settings
    that split a row's line. Returns (rows, the split notes)."""
    df = _normalise(results)
    df = df[df["workload"] != ""]
    if df.empty:
        return df, []
    df = _fill_axis(df)
    df["_split_by"] = pd.Series([()] * len(df), index=df.index, dtype=object)
    notes = []
    for _key, figure in df.groupby(["workload", "axis"], sort=True):
        labels, split_by, split_notes = line_labels(figure)
        df.loc[figure.index, "_label"] = labels
        df.loc[figure.index, "_split_by"] = split_by
        notes += split_notes
    return df, notes


def series(group: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The lines of one figure: label -> its rows (every status), labels sorted."""
    return {label: rows for label, rows in sorted(group.groupby("_label", sort=False), key=lambda item: item[0])}


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
    """A value made safe for a file name: letters, digits, '_' and '-' only (no '.', no '/')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_") or "unknown"


def line_colours(labels: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    n = cmap.N
    return {lab: cmap(i % n) for i, lab in enumerate(labels)}


def colour_of(colours: dict, label: str) -> tuple:
    """The colour of a line: its own in `colours`, else (a line split by settings after the colours
    were assigned) the first tab20 colour no line has yet, kept in `colours` for the next figure."""
    if label not in colours:
        cmap = plt.get_cmap("tab20")
        used = set(colours.values())
        free = [cmap(i) for i in range(cmap.N) if cmap(i) not in used]
        colours[label] = free[0] if free else cmap(len(colours) % cmap.N)
    return colours[label]


def span_is_log(values: Iterable[float]) -> bool:
    pos = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    return bool(pos) and max(pos) / min(pos) >= LOG_SPAN


def _all_powers_of_two(values: Iterable[float]) -> bool:
    vals = [v for v in values if np.isfinite(v)]
    return bool(vals) and all(v > 0 and float(v).is_integer() and (int(v) & (int(v) - 1)) == 0 for v in vals)


def format_number(v: float, _pos=None) -> str:
    if not np.isfinite(v):
        return ""
    if float(v).is_integer():
        return f"{int(v)}"
    return f"{v:g}"


def _memory_not_tracked(group: pd.DataFrame) -> bool:
    """Every row ran (ok) and none has a memory figure, each saying why (`tracked_reason`, --compile)."""
    ok = group[group["status"] == "ok"]
    reasons = group["tracked_reason"].astype(object).fillna("").astype(str).str.strip() if "tracked_reason" in group else None
    return (len(ok) == len(group) > 0 and reasons is not None and (reasons != "").all()
            and not any(group[c].notna().any() for c in MEMORY_COLUMNS if c in group))


def memory_column(rows: pd.DataFrame) -> str:
    """The memory column a figure of `rows` plots: CUDA's allocator peak where every ok row ran on
    CUDA and has one, else the exact tracked peak."""
    ok = rows[rows["status"] == "ok"]
    devices = set(ok["device"].str.lower()) - {""}
    if devices == {"cuda"} and ok["cuda_peak_alloc_mib"].notna().any():
        return "cuda_peak_alloc_mib"
    return "tracked_peak_mib"


def _title(workload: str, axis: str, metric: str, group: pd.DataFrame, split: Sequence[str] = ()) -> str:
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
            fixed.append(f"{col}={format_number(vals[0])}")
    if "threads" in group.columns:
        threads = {_setting("threads", v) for v in group["threads"]} - {""}
        if len(threads) == 1:
            fixed.append(f"threads={threads.pop()}")
    head = f"{workload} {metric} vs {axis} — {device}"
    lines = [head] + ([", ".join(fixed)] if fixed else [])
    if split:
        lines.append("separate lines: rows measured with different " + ", ".join(split))
    return "\n".join(lines)


# --------------------------------------------------------------------------- drawing


def _draw(
    group: pd.DataFrame,
    *,
    workload: str,
    axis: str,
    metric: str,
    colours: dict[str, tuple],
    path: Path,
    split: Sequence[str] = (),
) -> Path:
    # a predicted row (bench.sweep --predict) has memory but no time; its line is dashed and says so
    drawn = ("ok", "predicted") if metric == "memory" else ("ok",)
    ok = group[group["status"].isin(drawn)]
    if metric == "time":
        ycol, lo_col, hi_col = "time_median_ms", "time_p20_ms", "time_p80_ms"
        ylabel = TIME_YLABEL.get(workload, f"{workload} time (ms, median)")
    else:
        ycol = memory_column(ok)
        lo_col = hi_col = None
        ylabel = MEM_YLABEL[ycol]
        if len(ok) and (ok["status"] == "predicted").all():
            ylabel = "predicted " + ylabel

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    top_edge = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)

    handles: list = []
    all_y: list[float] = []
    fail_kinds: set[str] = set()
    stacked: dict[float, int] = {}  # x -> failure markers already drawn there

    for lab, rows in series(group).items():
        colour = colours[lab]
        sub = rows[rows["status"].isin(drawn) & rows[ycol].notna() & rows[axis].notna()]
        predicted = len(sub) > 0 and (sub["status"] == "predicted").all()
        label = f"{lab} (predicted)" if predicted else lab
        style = "--" if predicted else "-"
        agg_cols = {ycol: "median"}
        if lo_col and hi_col:
            agg_cols.update({lo_col: "median", hi_col: "median"})
        pts = sub.groupby(axis, sort=True).agg(agg_cols) if len(sub) else None
        if pts is not None and len(pts):
            xs = pts.index.to_numpy(dtype=float)
            ys = pts[ycol].to_numpy(dtype=float)
            (line,) = ax.plot(xs, ys, marker="o", markersize=5, linewidth=1.6, linestyle=style, color=colour,
                              label=label)
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

        failed = rows[rows["status"].isin(FAIL_STYLE) & rows[axis].notna()]
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
    if span_is_log(all_x):
        ax.set_xscale("log", base=2 if _all_powers_of_two(all_x) else 10)
    ux = np.unique(all_x[np.isfinite(all_x)])
    if 0 < len(ux) <= 16:
        ax.set_xticks(ux)
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(format_number))

    if all_y:
        if span_is_log(all_y) and min(all_y) > 0:
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
    ax.set_title(_title(workload, axis, metric, group, split), fontsize=10)
    ax.grid(True, which="major", alpha=0.3)

    return save_figure(fig, path)


def save_figure(fig, path: Path, dpi: int = DPI, bbox_inches: str | None = "tight") -> Path:
    """Write ``fig`` as a PNG atomically and close it: drawn into a unique temporary sibling
    (``.<name>.XXXX.tmp``), flushed to disk, then renamed over ``path``; an interrupt or error on
    the way removes the temporary, so ``path`` is the old file or the whole new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=dpi, bbox_inches=bbox_inches)
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- public API


def plot_sweep(results: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write ``time_<workload>[_<axis>].png`` and ``memory_<workload>[_<axis>].png``.

    One figure per workload present, per metric, and per swept axis when the
    workload's rows cover several axes (file names then carry an ``_<axis>``
    suffix).  Returns the written paths in a deterministic order.  A file name
    built from a value keeps only letters, digits, '_' and '-', so it never
    leaves ``out_dir``.
    """
    out_dir = Path(out_dir)
    df, notes = prepare(results)
    if df.empty:
        return []
    colours = line_colours(sorted(df["_label"].unique()))

    written: list[Path] = []
    for workload in sorted(df["workload"].unique()):
        wdf = df[df["workload"] == workload]
        axes = _order_axes(wdf["axis"].unique())
        for axis in axes:
            group = wdf[wdf["axis"] == axis]
            if axis not in group.columns:  # unknown axis name without a grid column
                group = group.assign(**{axis: np.nan})
            split = [c for c in SETTINGS_COLUMNS if any(c in cols for cols in group["_split_by"])]
            suffix = f"_{_safe(axis)}" if len(axes) > 1 else ""
            for metric in METRICS:
                if metric == "time" and (group["status"] == "predicted").any() and not (group["status"] == "ok").any():
                    continue  # a predicted sweep (its error rows aside) has no time to draw
                if metric == "memory" and _memory_not_tracked(group):
                    continue  # compiled CPU rows: no memory figure (tracked_reason says why)
                path = out_dir / f"{metric}_{_safe(workload)}{suffix}.png"
                if path.parent != out_dir:  # never: _safe keeps no separator
                    raise ValueError(f"figure name {path.name!r} would leave {out_dir}")
                written.append(
                    _draw(group, workload=workload, axis=axis, metric=metric, colours=colours, path=path, split=split)
                )
    return written


def plot_results_csv(csv_path, out_dir=None) -> list[Path]:
    """Read a results CSV and write its figures (default: next to the CSV).

    Everything is checked before anything is written: the CSV (:func:`read_results_csv`: one line
    naming the file, line and column) and the output folder (`cli.output_dir`: not a file, not
    under a file, writable). Raises ResultsCSVError (a `cli.UsageError` and a ValueError) for either."""
    csv_path = Path(csv_path)
    frame = read_results_csv(csv_path)
    try:
        out = cli.output_dir(out_dir if out_dir is not None else csv_path.parent,
                             "--out" if out_dir is not None else "--out (default: the CSV's folder)")
    except UsageError as err:
        raise ResultsCSVError(str(err)) from None
    return plot_sweep(frame, out)


def parser() -> argparse.ArgumentParser:
    p = cli.parser("bench.plots", __doc__)
    p.add_argument("results_csv", metavar="RESULTS_CSV", help="tidy results.csv written by bench.sweep")
    p.add_argument("--out", help="output folder (default: the CSV's folder)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser().parse_args(argv)
        paths = plot_results_csv(Path(args.results_csv), args.out)
    except UsageError as err:
        return cli.report_usage_error("bench.plots", err)
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    cli.run(main)
