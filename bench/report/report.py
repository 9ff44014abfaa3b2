"""A report page with the paper's figures, drawn from result CSVs (never re-runs a model).

Examples:
  python -m bench.report reports/cpu-long-seqlen-card              # page + figures into that folder
  python -m bench.report reports/layers-paper reports/seqlen-paper reports/train-ml1m --out reports/paper
  python -m bench.report reports/cpu-long-seqlen reports/cpu-long-seqlen-card --out /tmp/long
  python -m bench.report reports/x --rank-csv reports/_scratch/rank/ranks.csv

Inputs: each RUN_DIR is a folder written by `python -m bench.sweep` (results.csv, command.txt), by
`python -m bench.train` (metrics.csv: test-split rows with model, model_spec, ndcg@10, ...) or by
`python -m bench.rank` (a rank CSV, any *rank*.csv). Rows from several sweeps are pooled; a point
measured twice keeps its latest row.

Output (into --out, default the first RUN_DIR): index.md, and per figure <key>.png and <key>.csv:
Fig. 3 (memory vs FLOPs vs NDCG@10), Table 3 (RecGRELA depth), Fig. 6 (layers, RecGRELA vs
SIGMA), Fig. 7 (L = 100..200 and heads, RecGRELA vs EulerFormer), Fig. 5 (position encoding and
gate activation), Fig. 9 (rank heatmaps, via bench.rank), the long-sequence view (L >= 256,
log-log slopes, where each model overtakes SASRec) and ours vs the official code (ratios to each
`official/NAME` twin, with the twin's official_substitutions) and the predicted memory against the paper's
(`bench.sweep --predict` rows: Table 3's GiB per depth and Fig. 3's ratios; predicted rows enter no other
figure). A figure whose data is missing is not drawn:
the page says what is missing and how to measure it. The page also gives, per figure, the
environment of its rows and the commands that made them. Rows of one model line measured with
different settings (threads, warmup, repeats, seed, limits, FLOP counting, dtype, torch, device
name, environment) are drawn as separate lines, `linrec (threads 1)` and `linrec (threads 2)`, and
the page says so.

Bad input is one line on stderr, exit 2, and nothing written: every input is read and checked
first (a results.csv: bench.results' columns, statuses, workloads, positive integer grid cells,
measurements empty or finite and >= 0, ok rows with time and memory, at least one row; a
metrics.csv: model, split and metric columns, metrics in 0..1, split=test rows; a rank CSV: the
columns bench.rank writes, single_sequence rows), each error naming the file, line and column;
then --out (not a file, writable).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import pandas as pd

from bench import cli
from bench.cli import UsageError
from bench.report import figures as F
from bench.results import git_commit, utc_now, write_text_atomic


def parser() -> argparse.ArgumentParser:
    p = cli.parser("bench.report", __doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="sweep, training or rank output folders")
    p.add_argument("--out", help="folder for index.md and the figures (default: the first RUN_DIR)")
    p.add_argument("--rank-csv", help="the rank CSV for Fig. 9 (default: a *rank*.csv found in a RUN_DIR)")
    return p


def find_rank_csv(run_dirs: list[Path]) -> Path | None:
    """`rank.csv` / `ranks.csv` first, else any other *rank*.csv (our own fig9_rank.csv and bench.rank's
    rank_summary.csv, which hold no feature matrices to draw, excluded)."""
    for run in run_dirs:
        for name in ("rank.csv", "ranks.csv"):
            if (run / name).is_file():
                return run / name
    for run in run_dirs:
        found = sorted(p for p in run.glob("*rank*.csv") if p.is_file() and not p.name.startswith("fig9_")
                       and p.name != "rank_summary.csv")
        if found:
            return found[0]
    return None


def _command_lines(path: Path) -> list[str]:
    """The command lines of a run's command.txt ([] without one); refuses one that cannot be read."""
    if not path.exists():
        return []
    try:
        return path.read_text(encoding="utf-8").strip().splitlines()
    except UnicodeDecodeError as err:
        raise UsageError(f"{path} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None


def load_inputs(run_dirs: list[Path], rank_csv: Path | None):
    """Read and check every input before anything is written. Raises UsageError (one line naming
    the file, line and column) for a RUN_DIR that is not a folder or holds none of results.csv,
    metrics.csv and a rank CSV, and for any input `figures.read_results`, `figures.read_metrics`
    or `figures.check_rank_csv` refuses (see there), or an unreadable command.txt."""
    frames, metric_frames, commands = [], [], {}
    for run in run_dirs:
        if not run.is_dir():
            raise UsageError(f"RUN_DIR {run} is not a folder")
        results_csv, metrics_csv = run / "results.csv", run / "metrics.csv"
        for path in (results_csv, metrics_csv):
            if path.exists() and not path.is_file():
                raise UsageError(f"{path} is a folder, not a CSV file")
        found_rank = find_rank_csv([run])
        if not (results_csv.is_file() or metrics_csv.is_file() or found_rank):
            raise UsageError(f"{run} holds no results.csv, metrics.csv or rank CSV")
        if results_csv.is_file():
            frames.append(F.read_results(results_csv, str(run)))
        if metrics_csv.is_file():
            metric_frames.append(F.read_metrics(metrics_csv, str(run)))
        commands[str(run)] = _command_lines(run / "command.txt")
    if rank_csv is not None and not rank_csv.is_file():
        raise UsageError(f"--rank-csv {rank_csv} is not a file")
    rank_csv = rank_csv or find_rank_csv(run_dirs)
    if rank_csv is not None:
        F.check_rank_csv(rank_csv)
    results, notes = F.combine_results(frames)
    metrics = pd.concat(metric_frames, ignore_index=True) if metric_frames else None
    return results, metrics, rank_csv, commands, notes


# ------------------------------------------------------------------------------------ the page


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if not value.is_integer() or abs(value) < 1e15 else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: pd.DataFrame, max_rows: int = 60) -> str:
    head = "| " + " | ".join(_cell(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.head(max_rows).itertuples(index=False)]
    more = [f"\n({len(table) - max_rows} more rows in the CSV)"] if len(table) > max_rows else []
    return "\n".join([head, rule, *body, *more])


def _link(path: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(path, page_dir)).as_posix()


def render_page(figures: list, results: pd.DataFrame, commands: dict, command: str, notes: list,
                out_dir: Path, inputs: list[str]) -> str:
    lines = [f"# Efficiency report: {out_dir.name}", "",
             f"Made by `{command}` at {utc_now()} (git {git_commit() or 'unknown'}), from "
             + ", ".join(f"`{run}`" for run in inputs) + ". Figures are drawn from the CSVs only; no model was run.",
             ""]
    lines += ["## Inputs", "", "| input | rows | commands that made it |", "| --- | --- | --- |"]
    for run in inputs:
        count = int((results["_run"] == run).sum()) if len(results) else 0
        made = "<br>".join(f"`{c}`" for c in commands.get(run, [])) or "(no command.txt)"
        lines.append(f"| `{run}` | {count} | {made} |")
    if len(results):
        lines += ["", f"Environment of all rows: {F.environment(results)}."]
    lines += [f"\nNote: {n}" for n in notes]
    lines += ["", "## Contents", ""]
    lines += [f"- [{f.title}](#{f.key}){'' if f.missing is None else ' (not drawn: data missing)'}" for f in figures]
    for figure in figures:
        lines += ["", f'<a id="{figure.key}"></a>', f"## {figure.title}", ""]
        if figure.caption:
            lines += [figure.caption, ""]
        if figure.missing is not None:
            lines += [f"**Not drawn: {figure.missing}.**", ""]
            lines += [f"- {n}" for n in figure.notes]
            continue
        picture = (f"![{figure.title}]({_link(figure.png, out_dir)})" if figure.png is not None
                   else "(a table only: nothing among its rows to draw)")
        lines += [picture, "", f"Table: [{figure.key}.csv]({figure.key}.csv)", ""]
        lines += [f"- {n}" for n in figure.notes]
        runs = [r for r in figure.runs if r in commands]
        rows = results[results["_run"].isin(figure.runs)] if len(results) else results
        if len(rows):
            lines.append(f"- Measured on: {F.environment(rows)}")
        for run in runs:
            lines.append(f"- Rows from `{run}`, made by: " + "; ".join(f"`{c}`" for c in commands[run])
                         if commands[run] else f"- Rows from `{run}` (no command.txt)")
        lines += ["", markdown_table(figure.table) if figure.table is not None else ""]
    sweep_pngs = []
    for run in inputs:
        sweep_pngs += sorted(Path(run).glob("time_*.png")) + sorted(Path(run).glob("memory_*.png"))
    if sweep_pngs:
        lines += ["", "## Sweep figures", "", "Drawn by the sweep itself (`python -m bench.plots`).", ""]
        lines += [f"![{p.name}]({_link(p.resolve(), out_dir.resolve())})" for p in sweep_pngs]
    lines.append("")
    return "\n".join(lines)


def build_report(run_dirs: list[Path], out_dir: Path | str, rank_csv: Path | None = None,
                 command: str = "python -m bench.report") -> tuple[Path, list]:
    """Load and check the inputs, check `out_dir` (`cli.output_dir`), then draw every figure into
    `out_dir` and write `out_dir/index.md`; returns (page, figures). Raises UsageError before
    anything is written for any bad input (see `load_inputs`) or an --out that cannot be written."""
    results, metrics, rank, commands, notes = load_inputs(run_dirs, rank_csv)
    out_dir = cli.output_dir(out_dir, "--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = F.all_figures(results, metrics, rank, out_dir)
    for figure in figures:
        csv_path, png_path = out_dir / f"{figure.key}.csv", out_dir / f"{figure.key}.png"
        if figure.missing is None and figure.table is not None:
            write_text_atomic(csv_path, figure.table.to_csv(index=False))
        else:  # never leave an older drawing that the page no longer vouches for
            for stale in (csv_path, png_path):
                if stale.exists():
                    stale.unlink()
    page = out_dir / "index.md"
    write_text_atomic(page, render_page(figures, results, commands, command, notes, out_dir,
                                        [str(r) for r in run_dirs]))
    return page, figures


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(argv)
        run_dirs = [Path(r) for r in args.run_dirs]
        out_dir = args.out if args.out is not None else run_dirs[0]  # "" stays "" (refused), not "."
        command = "python -m bench.report " + shlex.join(argv)
        page, figures = build_report(run_dirs, out_dir, Path(args.rank_csv) if args.rank_csv is not None else None, command)
    except UsageError as err:
        return cli.report_usage_error("bench.report", err)
    for figure in figures:
        if figure.missing is not None:
            state = f"not drawn: {figure.missing}"
        else:
            table_only = f"wrote the table {Path(out_dir) / figure.key}.csv (nothing to draw)"
            state = f"wrote {figure.png}" if figure.png is not None else table_only
        print(f"{figure.title}: {state}", flush=True)
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    cli.run(main)
