"""Tests for bench.plots: figures are pure functions of the results frame/CSV."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.plots import line_label, main, plot_results_csv, plot_sweep

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


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))


def test_line_label():
    assert line_label("sasrec", "default") == "sasrec"
    assert line_label("sasrec", "attention=math") == "sasrec[attention=math]"
    assert line_label("linrec", "") == "linrec"


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
    csv = tmp_path / "results.csv"
    df = _frame()
    df[df["workload"] == "train"].to_csv(csv, index=False)
    paths = plot_results_csv(csv)
    assert {p.name for p in paths} == {"time_train.png", "memory_train.png"}
    assert all(p.parent == tmp_path for p in paths)


def test_main_regenerates_pngs(tmp_path, capsys):
    csv = tmp_path / "results.csv"
    _frame().to_csv(csv, index=False)
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
