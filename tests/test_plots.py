"""Tests for bench.plots: figures are pure functions of the results frame/CSV."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench import results
from bench.grid import ModelSpec, parse_model_spec
from bench.report.plots import (
    _safe,
    _title,
    line_labels,
    main,
    plot_results_csv,
    plot_sweep,
    prepare,
    read_results_csv,
    series,
)
from bench.results import spec_label

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEQ_LENS = [64, 128, 256, 512, 1024]


def _row(model, workload, seq_len, status="ok", variant="default", axis="seq_len", **grid):
    ok = status == "ok"
    base = 0.02 * seq_len * (2.0 if model == "sasrec" else 1.0) * (3.0 if workload == "train" else 1.0)
    row = {
        "model": model,
        "variant": variant,
        "workload": workload,
        "status": status,
        "reason": "" if ok else f"{status} at seq_len={seq_len}",
        "axis": axis,
        "seq_len": seq_len,
        "batch_size": 32,
        "n_layers": 2,
        "n_heads": 2,
        "d_model": 64,
        "time_median_ms": base if ok else float("nan"),
        "time_p20_ms": base * 0.9 if ok else float("nan"),
        "time_p80_ms": base * 1.15 if ok else float("nan"),
        "tracked_peak_mib": (seq_len**2 / 2000 if model == "sasrec" else seq_len / 10) if ok else float("nan"),
        "cuda_peak_alloc_mib": float("nan"),
        "device": "cpu",
        "device_name": "Test CPU",
        "extra_column_to_ignore": "x",
    }
    row.update(grid)
    return row


def _frame() -> pd.DataFrame:
    rows = []
    for workload in ("train", "infer"):
        for model in ("sasrec", "linrec"):
            for L in SEQ_LENS:
                status = "ok"
                if model == "sasrec" and workload == "train" and L == 1024:
                    status = "oom"
                if model == "sasrec" and workload == "infer" and L == 1024:
                    status = "timeout"
                rows.append(_row(model, workload, L, status=status))
    return pd.DataFrame(rows)


def _write_results_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The frame's rows as a results.csv of today's schema (columns outside it dropped, NaN empty, n_items 100)."""
    rows = [{c: (None if pd.isna(v) else v) for c, v in row.items() if c in results.COLUMNS}
            for row in frame.assign(n_items=100).to_dict("records")]
    path.write_text(results.csv_text(results.COLUMNS, rows))
    return path


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))


def test_spec_label_is_the_one_spelling_of_a_model():
    assert spec_label("sasrec", "default") == "sasrec" == ModelSpec("sasrec").label
    assert spec_label("sasrec", "attention=math") == "sasrec:attention=math" == parse_model_spec("sasrec:attention=math").label
    assert spec_label("linrec", "") == spec_label("linrec", float("nan")) == "linrec"


def test_plot_sweep_writes_expected_files(tmp_path):
    paths = plot_sweep(_frame(), tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(["time_train.png", "memory_train.png", "time_infer.png", "memory_infer.png"])
    for p in paths:
        assert p.parent == tmp_path
        _assert_png(p)


def test_only_failed_rows_still_produce_figures(tmp_path):
    df = pd.DataFrame([_row("sasrec", "train", L, status="oom") for L in SEQ_LENS])
    paths = plot_sweep(df, tmp_path)
    assert sorted(p.name for p in paths) == ["memory_train.png", "time_train.png"]
    for p in paths:
        _assert_png(p)


def test_several_axes_get_suffixed_names_and_variant_lines(tmp_path):
    rows = [_row("sasrec", "infer", L) for L in SEQ_LENS]
    rows += [_row("sasrec", "infer", L, variant="attention=math") for L in SEQ_LENS]
    rows += [_row("linrec", "infer", 256, axis="n_layers", n_layers=n) for n in (1, 2, 4)]
    paths = plot_sweep(pd.DataFrame(rows), tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        ["time_infer_seq_len.png", "memory_infer_seq_len.png", "time_infer_n_layers.png", "memory_infer_n_layers.png"]
    )
    for p in paths:
        _assert_png(p)


def test_cuda_rows_plot_cuda_counter(tmp_path):
    df = _frame()
    df = df[df["workload"] == "infer"].copy()
    df["device"] = "cuda"
    df["device_name"] = "Fake GPU"
    df["cuda_peak_alloc_mib"] = df["tracked_peak_mib"] * 1.1
    paths = plot_sweep(df, tmp_path)
    assert sorted(p.name for p in paths) == ["memory_infer.png", "time_infer.png"]
    for p in paths:
        _assert_png(p)


def test_plot_results_csv_defaults_to_csv_folder(tmp_path):
    df = _frame()
    csv = _write_results_csv(df[df["workload"] == "train"], tmp_path / "results.csv")
    paths = plot_results_csv(csv)
    assert {p.name for p in paths} == {"time_train.png", "memory_train.png"}
    assert all(p.parent == tmp_path for p in paths)


def test_main_regenerates_pngs(tmp_path, capsys):
    csv = _write_results_csv(_frame(), tmp_path / "results.csv")
    out = tmp_path / "figs"
    assert main([str(csv), "--out", str(out)]) == 0
    printed = [Path(line) for line in capsys.readouterr().out.split()]
    assert len(printed) == 4 and all(p.parent == out and p.is_file() for p in printed)


def test_main_empty_csv_exits_2(tmp_path, capsys):
    csv = tmp_path / "empty.csv"
    csv.write_text("")
    assert main([str(csv)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_missing_csv_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.plots", "missing.csv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_rows_measured_with_different_threads_are_separate_lines(tmp_path):
    """Outside case 05: two linrec rows that differ only in threads are two lines, and the title says why."""
    rows = [_row("linrec", "train", 64, threads=1), _row("linrec", "train", 128, threads=2),
            _row("sasrec", "train", 64, threads=1), _row("sasrec", "train", 128, threads=1)]
    csv = _write_results_csv(pd.DataFrame(rows), tmp_path / "results.csv")
    frame, notes = prepare(read_results_csv(csv))
    drawn = {label: rows["seq_len"].tolist() for label, rows in series(frame).items()}
    assert drawn == {"linrec (threads 1)": [64.0], "linrec (threads 2)": [128.0], "sasrec": [64.0, 128.0]}
    assert notes == ["linrec (train): rows measured with different threads (threads 1, 2) are drawn as separate "
                     "lines: linrec (threads 1), linrec (threads 2)"]
    title = _title("train", "seq_len", "time", frame, ["threads"])
    assert title.endswith("separate lines: rows measured with different threads")
    assert {p.name for p in plot_results_csv(csv)} == {"time_train.png", "memory_train.png"}


def test_empty_setting_cells_do_not_split_a_line():
    rows = [_row("linrec", "train", 64, threads=None, seed=0), _row("linrec", "train", 128, threads=1, seed=0),
            _row("linrec", "train", 256, threads="1.0", seed="0"), _row("linrec", "infer", 64, threads=4)]
    labels, split_by, notes = line_labels(pd.DataFrame(rows))
    assert labels.tolist() == ["linrec"] * 4 and not notes  # infer is its own line, whatever its threads
    rows[2]["seed"] = 7
    labels, split_by, notes = line_labels(pd.DataFrame(rows))
    assert labels.tolist() == ["linrec (seed 0)", "linrec (seed 0)", "linrec (seed 7)", "linrec"]
    assert split_by.tolist() == [("seed",), ("seed",), ("seed",), ()]


def test_figure_names_keep_inside_the_output_folder():
    assert _safe("../../x") == "x" and _safe("a/b") == "a_b" and _safe("..") == "unknown"
