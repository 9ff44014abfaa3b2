"""The stream workload and the catalogue axis through the harness: the rows a point writes, the
sweep's flags and resume, and the two report figures (stream_cost, catalogue_cost) on synthetic CSVs
whose answers are known by construction."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch

from bench import results
from bench.grid import Point
from bench.report import report
from bench.sweep.point import run
from bench.workload import build_workload
from tests.badinput import REPO_ROOT
from tests.test_report import _assert_png, _figure, _row, _write_run

TINY = dict(seq_len=12, batch_size=2, n_layers=2, n_heads=2, d_model=16, n_items=60)


def _point(name, **kw):
    return Point(name, (), "stream", "seq_len", repeats=kw.pop("repeats", 5), warmup=1, **dict(TINY, **kw))


@pytest.mark.parametrize("name", ["sasrec", "mamba4rec", "lrurec", "recblr", "eulerformer", "linrec", "sigma"])
def test_a_stream_row(name):
    """Mode, state bytes (0 for recompute), p99, the analytic FLOPs equal to both counters."""
    row = run(_point(name))
    assert row["status"] == "ok", row["reason"]
    import models

    mode = models.model_class(name).stream_mode
    assert row["stream_mode"] == mode and row["loss"] == ""
    if mode == "recompute":
        assert row["state_bytes_per_user"] == 0
    else:
        w = build_workload(name, Point(name, (), "stream", "seq_len", **TINY).model_config(), "stream", 2)
        assert row["state_bytes_per_user"] == w.model.stream_state_bytes(w.state) // 2 > 0
    assert row["time_p99_ms"] >= row["time_median_ms"] > 0
    assert row["fwd_flops_flopcounter"] == row["step_flops_analytic"] == row["fwd_flops_analytic"]
    assert row["fwd_flops_fvcore"] == row["fwd_flops_flopcounter"] or row.get("fvcore_reason")


def test_the_stream_step_scores_the_full_window_users():
    """Every stream user's history fills all L slots; a cached step's scores equal the full forward's."""
    w = build_workload("sasrec", Point("sasrec", (), "stream", "seq_len", **TINY).model_config(), "stream", 2)
    assert w.state["length"] == TINY["seq_len"] - 1
    window = torch.cat([torch.zeros(2, 0, dtype=torch.long), w.inputs[0][:, None]], dim=1)
    assert window.shape == (2, 1)
    recompute = build_workload("linrec", Point("linrec", (), "stream", "seq_len", **TINY).model_config(), "stream", 2)
    assert recompute.state is None and (recompute.inputs[0] != 0).all()  # [B, L], no padding
    with torch.inference_mode():
        scores = w.step()
    assert scores.shape == (2, TINY["n_items"])


def _sweep(*argv, check=True):
    proc = subprocess.run([sys.executable, "-m", "bench.sweep", *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_sweep_stream_and_train_resume_together(tmp_path):
    """Stream points take their own repeats; a file holding train and stream rows resumes (each
    workload checked against its own settings) and measures nothing twice."""
    out = tmp_path / "run"
    args = ["--axis", "seqlen", "--values", "8,12", "--models", "linrec", "--workload", "train,stream",
            "--batch-size", "1", "--d-model", "16", "--layers", "1", "--no-flops", "--out", str(out)]
    _sweep(*args)
    rows = results.read_rows(out / "results.csv")
    assert sorted((r["workload"], r["time_repeats"]) for r in rows) == [
        ("stream", "100"), ("stream", "100"), ("train", "5"), ("train", "5")]
    again = _sweep(*args, "--resume")
    assert "4 of 4 points already" in again.stdout + again.stderr
    assert len(results.read_rows(out / "results.csv")) == 4


def test_sweep_refuses_a_loss_without_a_train_step(tmp_path):
    proc = _sweep("--axis", "seqlen", "--workload", "infer,stream", "--loss", "sampled:8", "--out",
                  str(tmp_path / "x"), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "measures no train step" in lines[0]
    proc = _sweep("--axis", "seqlen", "--workload", "stream,stream", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "twice" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_an_old_train_row_is_a_ce_row():
    old = {"model": "sasrec", "variant": "default", "workload": "train", "seq_len": "8", "batch_size": "1",
           "n_layers": "1", "n_heads": "1", "d_model": "8", "n_items": "10", "device": "cpu"}
    assert results.row_key(old) == results.row_key(dict(old, loss="ce"))
    assert results.row_key(old) != results.row_key(dict(old, loss="sampled:4"))
    assert results.row_key(dict(old, workload="infer"))[-1] == ""


# ---------------------------------------------------------------------------- figures, by construction

LENGTHS = [256, 512, 1024, 2048, 4096]
# a cache's event costs a L (attention over L keys), a state's a constant: they cross at L* = c / a
A_CACHE, C_STATE = 1e-3, 1.5  # L* = 1500


def stream_rows():
    rows = []
    for L in LENGTHS:
        rows.append(dict(_row("sasrec", "seq_len", workload="stream", seq_len=L, batch_size=1, time_ms=A_CACHE * L,
                              mib=1.0, flops=L), stream_mode="cache", state_bytes_per_user=2 * 2 * L * 64 * 4,
                         time_p99_ms=2 * A_CACHE * L))
        rows.append(dict(_row("mamba4rec", "seq_len", workload="stream", seq_len=L, batch_size=1, time_ms=C_STATE,
                              mib=1.0, flops=1), stream_mode="state", state_bytes_per_user=70_000,
                         time_p99_ms=2 * C_STATE))
        rows.append(dict(_row("recgrela", "seq_len", workload="stream", seq_len=L, batch_size=1, time_ms=0.01 * L,
                              mib=1.0, flops=L), stream_mode="recompute", state_bytes_per_user=0,
                         time_p99_ms=0.02 * L))
    return rows


def test_stream_cost_figure(tmp_path):
    run_dir = _write_run(tmp_path / "stream", stream_rows(), "python -m bench.sweep --axis seqlen --workload stream")
    _page, figs = report.build_report([run_dir], tmp_path / "out")
    figure = _figure(figs, "stream_cost")
    assert figure.missing is None, figure.missing
    _assert_png(figure.png)
    table = pd.read_csv(tmp_path / "out" / "stream_cost.csv").set_index("line")
    assert table.loc["sasrec", "time_slope"] == pytest.approx(1.0, abs=1e-3)
    assert table.loc["mamba4rec", "time_slope"] == pytest.approx(0.0, abs=1e-3)
    assert table.loc["sasrec", "state_bytes_slope"] == pytest.approx(1.0, abs=1e-3)
    assert table.loc["mamba4rec", "state_bytes_slope"] == pytest.approx(0.0, abs=1e-3)
    assert table.loc["recgrela", "state_bytes_per_user_at_max_L"] == 0
    crossing = table.loc["mamba4rec", "faster than sasrec from L"]
    assert crossing.startswith("~1,500"), crossing  # interpolated log-log between 1024 and 2048: exact here
    assert table.loc["recgrela", "faster than sasrec from L"].startswith("not up to")  # 10x the cache's slope


def catalogue_rows():
    """Step time t(N) = 10 + N / 1e3 ms (ce) or 10 ms (sampled); analytic step FLOPs from the loss."""
    rows = []
    B, d = 8, 64
    for N in (1_000, 10_000, 100_000, 1_000_000):
        for loss, ms, scored in (("ce", 10 + N / 1e3, N), ("sampled:128", 10.0, 129)):
            flops = 3 * 2 * B * d * scored + 3 * 10_000_000  # the loss's products + 10 M of layers per forward
            rows.append(dict(_row("sasrec", "n_items", n_items=N, batch_size=B, d_model=d, time_ms=ms,
                                  mib=N / 1e4, flops=flops), loss=loss))
    return rows


def test_catalogue_cost_figure(tmp_path):
    run_dir = _write_run(tmp_path / "items", catalogue_rows(), "python -m bench.sweep --axis items")
    _page, figs = report.build_report([run_dir], tmp_path / "out")
    figure = _figure(figs, "catalogue_cost")
    assert figure.missing is None, figure.missing
    _assert_png(figure.png)
    table = pd.read_csv(tmp_path / "out" / "catalogue_cost.csv")
    ce = table[table["line"] == "sasrec [ce]"].set_index("n_items")
    # loss FLOP share = 3072 N / (3072 N + 3e7): 0.09 at N = 1e3, 0.51 at N = 1e4
    assert ce.loc[1_000, "loss_flop_share"] < 0.5 < ce.loc[10_000, "loss_flop_share"]
    assert ce["loss_flop_share > 0.5 from N"].iloc[0] == 10_000
    # time share = 1 - 11 / (10 + N/1e3): 0.45 at N = 1e4, 0.9 at N = 1e5
    assert ce.loc[10_000, "catalogue_time_share"] == pytest.approx(1 - 11 / 20, abs=1e-4)
    assert ce["catalogue_time_share > 0.5 from N"].iloc[0] == 100_000
    sampled = table[table["line"] == "sasrec [sampled:128]"]
    assert (sampled["catalogue_time_share"] == 0).all() and sampled["loss_flop_share > 0.5 from N"].isna().all()


def test_a_predicted_only_report_writes_its_page(tmp_path):
    """A --predict sweep gives predicted_vs_paper a table and no picture (no RecGRELA layer rows):
    the page says so instead of failing, and the other figures say predicted rows are not theirs."""
    run_dir = tmp_path / "p"
    _sweep("--axis", "seqlen", "--values", "8", "--models", "recgrela,sasrec,linrec", "--predict", "--device", "cuda",
           "--batch-size", "1", "--d-model", "16", "--layers", "1", "--heads", "1", "--n-items", "100",
           "--out", str(run_dir))
    page, figs = report.build_report([run_dir], tmp_path / "out")
    predicted = _figure(figs, "predicted_vs_paper")
    assert predicted.missing is None and predicted.png is None and predicted.table is not None
    assert "(a table only" in page.read_text()
    assert "drawn only in predicted_vs_paper" in _figure(figs, "stream_cost").missing


def test_compiled_and_eager_rows_are_separate_lines():
    """An eager row's compile_backend is empty: it means `none`, so a compiled line (even with the
    backend named `eager`) never joins it."""
    from bench.report.plots import line_labels

    rows = pd.DataFrame([
        {"model": "sasrec", "variant": "default", "workload": "stream", "compile_backend": "", "seq_len": 8},
        {"model": "sasrec", "variant": "default", "workload": "stream", "compile_backend": "eager", "seq_len": 8},
        {"model": "sasrec", "variant": "default", "workload": "stream", "compile_backend": "", "seq_len": 16},
    ])
    labels, _split, notes = line_labels(rows)
    assert list(labels) == ["sasrec (compile_backend none)", "sasrec (compile_backend eager)",
                            "sasrec (compile_backend none)"]
    assert notes
