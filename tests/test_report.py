"""bench.report / bench.figures: every figure from synthetic CSVs whose answers are known by construction."""
from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from bench import results
from bench.report import figures, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(model, axis, variant="default", workload="train", status="ok", *, time_ms, mib, flops, **grid):
    dims = dict(seq_len=200, batch_size=8, n_layers=2, n_heads=2, d_model=64, n_items=100)
    dims.update(grid)
    ok = status == "ok"
    return {"model": model, "variant": variant, "workload": workload, "status": status,
            "reason": "" if ok else f"{status} here", "axis": axis, **dims,
            "params_total": 1000, "params_trainable": 1000,
            "time_median_ms": time_ms if ok else None, "time_p20_ms": 0.9 * time_ms if ok else None,
            "time_p80_ms": 1.1 * time_ms if ok else None, "tracked_peak_mib": mib if ok else None,
            "tracked_peak_bytes": int(mib * 2**20) if ok else None, "step_flops_flopcounter": flops,
            "step_flops_analytic": flops, "device": "cpu", "device_name": "Test CPU", "dtype": "float32",
            "threads": 1, "torch_version": "2.13.0", "python_version": "3.11", "git_commit": "abc",
            "timestamp_utc": "2026-01-01T00:00:00Z"}


def _write_run(folder: Path, rows: list[dict], command="python -m bench.sweep --axis seqlen") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        results.append_row(folder / "results.csv", row)
    (folder / "command.txt").write_text(f"2026-01-01T00:00:00Z  {command}\n")
    return folder


# Long grid: SASRec's time is c L^2, a linear model's is k L; they cross where k L = c L^2.
LONG = [256, 512, 1024, 2048, 4096, 8192]
C_SASREC, K_LINEAR = 1e-4, 0.15  # crossing at L* = K / C = 1500


def long_rows():
    rows = []
    for L in LONG:
        rows.append(_row("sasrec", "seq_len", seq_len=L, time_ms=C_SASREC * L * L, mib=1e-4 * L * L,
                         flops=L * L, status="oom" if L == 8192 else "ok"))
        rows.append(_row("linrec", "seq_len", seq_len=L, time_ms=K_LINEAR * L, mib=0.5 * L, flops=1000 * L))
        rows.append(_row("recgrela", "seq_len", seq_len=L, time_ms=1e-6 * L, mib=1e-6 * L, flops=1000 * L))
    return rows


def paper_rows():
    rows = []
    for layers in range(1, 7):
        rows.append(_row("recgrela", "n_layers", n_layers=layers, time_ms=10 * layers, mib=5 * layers, flops=layers))
        rows.append(_row("sigma", "n_layers", n_layers=layers, time_ms=15 * layers, mib=8 * layers, flops=layers))
    for L in (100, 125, 150, 175, 200, 400):
        for model in ("recgrela", "eulerformer"):
            rows.append(_row(model, "seq_len", seq_len=L, time_ms=L / 10, mib=L / 5, flops=L))
    for heads in (1, 2, 4, 8):
        for model in ("recgrela", "eulerformer"):
            rows.append(_row(model, "n_heads", n_heads=heads, time_ms=heads, mib=heads, flops=heads))
    for variant in ("position=ape", "position=lpe", "gate_activation=relu", "gate_activation=gelu"):
        rows.append(_row("recgrela", "seq_len", variant=variant, time_ms=30, mib=12, flops=5))
    rows.append(_row("linrec", "seq_len", time_ms=25, mib=11, flops=4))
    return rows


def _figure(figs, key):
    return next(f for f in figs if f.key == key)


def _assert_png(path):
    assert path is not None and path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_crossover_interpolates_the_known_crossing():
    lengths = [1024, 2048]
    ratio = [K_LINEAR * L / (C_SASREC * L * L) for L in lengths]
    at, text = figures.crossover(lengths, ratio, [False, False])
    assert at == pytest.approx(K_LINEAR / C_SASREC) and "1024 and 2048" in text
    assert figures.crossover([256, 512], [0.5, 0.4], [False, False])[1].startswith("<= 256")
    assert math.isnan(figures.crossover([256, 512], [2.0, 1.5], [False, False])[0])
    assert figures.crossover([256, 512], [2.0, math.nan], [False, True]) == (512.0, pytest.approx(
        "<= 512 (between 256 and 512; SASRec failed at 512)"))


def test_long_sequence_view_slopes_and_crossovers(tmp_path):
    run = _write_run(tmp_path / "long", long_rows())
    page, figs = report.build_report([run], tmp_path / "out")
    long = _figure(figs, "long_seq_loglog")
    _assert_png(long.png)
    table = pd.read_csv(tmp_path / "out" / "long_seq_loglog.csv")
    by = table.set_index(["line", "metric"])
    assert by.loc[("linrec", "time"), "slope"] == pytest.approx(1.0, abs=1e-3)
    assert by.loc[("sasrec", "time"), "slope"] == pytest.approx(2.0, abs=1e-3)
    assert by.loc[("linrec", "time"), "cost_class"] == "linear"
    assert by.loc[("sasrec", "time"), "cost_class"] == "quadratic"
    assert "~1,500 (interpolated between 1024 and 2048)" == by.loc[("linrec", "time"), "overtakes sasrec at L"]
    assert by.loc[("recgrela", "time"), "overtakes sasrec at L"].startswith("<= 256")
    assert "8192 (oom)" in by.loc[("sasrec", "time"), "failed_at"]
    text = page.read_text()
    assert "long_seq_loglog.png" in text and "python -m bench.sweep --axis seqlen" in text


def test_every_paper_figure_from_synthetic_rows(tmp_path):
    run = _write_run(tmp_path / "paper", paper_rows())
    train = tmp_path / "train"
    train.mkdir()
    pd.DataFrame([
        {"model": "recgrela", "model_spec": "recgrela", "split": "test", "ndcg@10": 0.19, "hr@10": 0.33, "n_layers": 2},
        {"model": "recgrela", "model_spec": "recgrela", "split": "valid", "ndcg@10": 0.99, "hr@10": 0.99, "n_layers": 2},
        {"model": "recgrela", "model_spec": "recgrela", "split": "test", "ndcg@10": 0.5, "hr@10": 0.6, "n_layers": 4},
        {"model": "linrec", "model_spec": "linrec", "split": "test", "ndcg@10": 0.18, "hr@10": 0.31, "n_layers": 2},
        {"model": "recgrela", "model_spec": "recgrela:position=ape", "split": "test", "ndcg@10": 0.17,
         "hr@10": 0.30, "n_layers": 2},
    ]).to_csv(train / "metrics.csv", index=False)
    out = tmp_path / "out"
    page, figs = report.build_report([run, train], out)
    for key in ("fig3_memory_flops_ndcg", "table3_recgrela_layers", "fig6_layers_recgrela_sigma",
                "fig7_seqlen_heads_recgrela_eulerformer", "fig5_position_activation"):
        fig = _figure(figs, key)
        assert fig.missing is None, (key, fig.missing)
        _assert_png(fig.png)
        assert (out / f"{key}.csv").is_file() and f"({key}.png)" in page.read_text()
    fig3 = pd.read_csv(out / "fig3_memory_flops_ndcg.csv").set_index("line")
    assert fig3.loc["recgrela", "ndcg@10"] == pytest.approx(0.19)  # the test split at the point's depth
    assert fig3.loc["linrec", "ndcg@10"] == pytest.approx(0.18)
    table3 = pd.read_csv(out / "table3_recgrela_layers.csv").set_index("n_layers")
    assert list(table3.index) == [1, 2, 3, 4, 5, 6]
    assert table3.loc[3, "time_median_ms"] == 30 and table3.loc[3, "tracked_peak_mib"] == 15
    assert table3.loc[2, "ndcg@10"] == pytest.approx(0.19) and table3.loc[4, "ndcg@10"] == pytest.approx(0.5)
    assert math.isnan(table3.loc[5, "ndcg@10"])
    fig7 = pd.read_csv(out / "fig7_seqlen_heads_recgrela_eulerformer.csv")
    assert sorted(set(fig7.loc[fig7["axis"] == "seq_len", "seq_len"])) == [100, 125, 150, 175, 200]
    fig5 = pd.read_csv(out / "fig5_position_activation.csv")
    assert sorted(fig5["setting"]) == sorted(["RoPE", "APE", "LPE", "SiLU", "ReLU", "GELU"])
    assert fig5.set_index("setting").loc["APE", "ndcg@10"] == pytest.approx(0.17)
    # an ablation without its own training run shows no metric, never the default spec's
    by_setting = fig5.set_index("setting")["ndcg@10"]
    assert by_setting["RoPE"] == by_setting["SiLU"] > 0  # the default config is both
    assert by_setting[["LPE", "ReLU", "GELU"]].isna().all()
    assert _figure(figs, "long_seq_loglog").missing is not None  # this grid has no L >= 256 sweep
    assert "Not drawn: no line swept over two or more lengths L >= 256" in page.read_text()


def test_missing_data_is_said_in_the_page_not_silently_skipped(tmp_path):
    run = _write_run(tmp_path / "run", [r for r in paper_rows() if r["model"] == "recgrela" and r["axis"] == "n_layers"])
    page, figs = report.build_report([run], tmp_path / "out")
    text = page.read_text()
    assert _figure(figs, "fig6_layers_recgrela_sigma").missing is None
    assert "sigma: no rows for this figure in the CSVs" in text
    assert "NDCG@10 not available" in text and "no training metrics" in text
    assert "Not drawn: no rank CSV among the inputs" in text
    assert not (tmp_path / "out" / "fig9_rank.png").exists()


def test_rank_figure_through_bench_rank(tmp_path, monkeypatch):
    rank_csv = tmp_path / "rank.csv"
    pd.DataFrame([{"model": "linrec", "rank": 47}, {"model": "recgrela", "rank": 58}]).to_csv(rank_csv, index=False)
    assert report.find_rank_csv([tmp_path]) == rank_csv
    monkeypatch.setitem(sys.modules, "bench.train.rank", None)  # the module is absent: the page says so
    assert "bench.rank is not available" in figures.fig9_rank(rank_csv, tmp_path).missing
    calls = []

    def plot_rank_figure(csv_path, png_path):
        calls.append(csv_path)
        Path(png_path).write_bytes(PNG_MAGIC + b"fake")

    monkeypatch.setitem(sys.modules, "bench.train.rank", types.SimpleNamespace(plot_rank_figure=plot_rank_figure))
    fig9 = figures.fig9_rank(rank_csv, tmp_path)
    assert calls == [rank_csv] and fig9.missing is None
    assert fig9.png.read_bytes().startswith(PNG_MAGIC) and fig9.table["rank"].tolist() == [47, 58]

    def broken(csv_path, png_path):
        raise KeyError("rank")

    monkeypatch.setitem(sys.modules, "bench.train.rank", types.SimpleNamespace(plot_rank_figure=broken))
    assert "plot_rank_figure failed" in figures.fig9_rank(rank_csv, tmp_path).missing


def test_environment_line_names_cost_changing_variables(tmp_path):
    rows = [dict(r, perf_env_json=env) for r, env in zip(paper_rows()[:3], ["{}", '{"THP_MEM_ALLOC_ENABLE": "1"}', ""])]
    frame = figures.read_results(_write_run(tmp_path / "run", rows) / "results.csv", "run")
    line = figures.environment(frame)
    assert 'environment variables {"THP_MEM_ALLOC_ENABLE": "1"}' in line and line.count("THP") == 1
    assert "environment variables" not in figures.environment(frame.iloc[[0, 2]])


def test_duplicate_points_keep_the_latest_row(tmp_path):
    old = _row("linrec", "seq_len", seq_len=256, time_ms=1.0, mib=1.0, flops=1)
    new = dict(old, time_median_ms=2.0, timestamp_utc="2026-02-01T00:00:00Z")
    a, b = _write_run(tmp_path / "a", [new]), _write_run(tmp_path / "b", [old])
    frame, notes = figures.combine_results([figures.read_results(a / "results.csv", "a"),
                                            figures.read_results(b / "results.csv", "b")])
    assert len(frame) == 1 and frame["time_median_ms"].iloc[0] == 2.0 and "latest" in notes[0]


def test_committed_long_grid_renders(tmp_path):
    out = tmp_path / "card"
    assert report.main(["reports/cpu-long-seqlen-card", "--out", str(out)]) == 0
    table = pd.read_csv(out / "long_seq_loglog.csv")
    assert {"eulerformer", "lrurec", "mamba4rec", "recgrela", "linrec"} <= set(table["line"])
    assert (out / "index.md").read_text().count("Not drawn") >= 4  # no layer, heads, ablation or rank data


@pytest.mark.parametrize("argv,message", [
    (["{tmp}/nope"], "is not a folder"),
    (["{tmp}/empty"], "holds no results.csv"),
    (["{tmp}/bad"], "is not a results column"),
    (["{tmp}/long", "--out", "{tmp}/file.txt"], "is a file"),
    (["{tmp}/long", "--rank-csv", "{tmp}/missing.csv"], "is not a file"),
    ([], "required"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    _write_run(tmp_path / "long", long_rows()[:3])
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.csv").write_text("a,b\n1,2\n")
    (tmp_path / "file.txt").write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert report.main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_help_shows_examples():
    text = report.parser().format_help()
    assert "python -m bench.report reports/cpu-long-seqlen-card" in text and "--out" in text


def test_rank_figure_with_the_real_bench_rank(tmp_path):
    rank = pytest.importorskip("bench.train.rank")
    L, d = 6, 4
    rows = []
    for spec, user_ranks in (("linrec", [3, 4]), ("recgrela", [4, 4])):
        base = {"model": spec, "model_spec": spec, "checkpoint": f"{spec}/checkpoint.pt", "tolerance": 1e-6,
                "sigma_max": 1.0, "d_model": d, "max_len": L, "dataset": "synthetic", "epoch": 1,
                "singular_values": "1 0.5 0.25 0.1"}
        for user, r in enumerate(user_ranks):
            rows.append(dict(base, view="per_user", user=user, n_real=L, rank=r, max_rank=d, rows=L, features=""))
        features = " ".join(str(0.1 * i) for i in range(L * d))
        rows.append(dict(base, view="single_sequence", user=0, n_real=L, rank=user_ranks[0], max_rank=d, rows=L,
                         features=features))
    pd.DataFrame(rows, columns=rank.RANK_COLUMNS).to_csv(tmp_path / "ranks.csv", index=False)
    fig9 = figures.fig9_rank(tmp_path / "ranks.csv", tmp_path)
    assert fig9.missing is None and fig9.png.read_bytes()[:8] == PNG_MAGIC
    summary = fig9.table.set_index(["model_spec", "view"])
    assert summary.loc[("linrec", "per_user"), "rank_mean"] == 3.5 and summary.loc[("linrec", "per_user"), "matrices"] == 2
    assert "features" not in fig9.table.columns


def test_rows_measured_with_other_settings_are_not_one_line(tmp_path):
    """Outside case 05, pooled by the report: linrec at 1 thread in one run and at 2 in another are two lines."""
    def linrec(L, threads):
        return dict(_row("linrec", "seq_len", seq_len=L, time_ms=K_LINEAR * L, mib=0.5 * L, flops=1000 * L), threads=threads)

    sasrec = [_row("sasrec", "seq_len", seq_len=L, time_ms=C_SASREC * L * L, mib=1e-4 * L * L, flops=L * L) for L in LONG[:4]]
    a = _write_run(tmp_path / "a", sasrec + [linrec(L, 1) for L in LONG[:2]])
    b = _write_run(tmp_path / "b", [linrec(L, 2) for L in LONG[2:4]])
    frame, _notes = figures.combine_results([figures.read_results(a / "results.csv", "a"),
                                             figures.read_results(b / "results.csv", "b")])
    figure = figures.Figure("key", "title", "caption")
    drawn = figures.separate_settings(figure, frame)
    lines = {label: sorted(rows["seq_len"]) for label, rows in drawn.groupby("_label")}
    assert lines == {"linrec (threads 1)": LONG[:2], "linrec (threads 2)": LONG[2:4], "sasrec": LONG[:4]}
    assert figure.notes == ["linrec (train): rows measured with different threads (threads 1, 2) are drawn as separate "
                            "lines: linrec (threads 1), linrec (threads 2)"]
    page, figs = report.build_report([a, b], tmp_path / "out")
    long = pd.read_csv(tmp_path / "out" / "long_seq_loglog.csv")
    assert set(long["line"]) == {"linrec (threads 1)", "linrec (threads 2)", "sasrec"}
    assert (long.set_index(["line", "metric"]).loc[("linrec (threads 2)", "time"), "slope"] == pytest.approx(1.0, abs=1e-3))
    assert "- linrec (train): rows measured with different threads (threads 1, 2) are drawn as separate" in page.read_text()


def test_predicted_rows_meet_the_paper_table_and_never_replace_measured_ones(tmp_path):
    """Predicted train rows give the Table 3 ratios predicted / paper and Fig. 3's model ratios; a
    measured row of the same point stays in the measured figures (no dedup across the two)."""
    def predicted(model, axis, mib, flops, **grid):
        row = _row(model, axis, status="predicted", time_ms=1, mib=mib, flops=flops, batch_size=2048, **grid)
        row.update(reason="", tracked_peak_mib=mib, tracked_peak_bytes=int(mib * 2**20), prediction="fake tensors",
                   time_p20_ms=None, time_p80_ms=None)
        return row

    rows = [predicted("recgrela", "n_layers", 1024 * layers, 10 * layers, n_layers=layers) for layers in range(1, 7)]
    rows += [predicted("linrec", "seq_len", 1300, 13, n_layers=4, n_heads=4), predicted("recblr", "seq_len", 2000, 9,
             n_layers=4, n_heads=4), predicted("recgrela", "seq_len", 1000, 10, n_layers=4, n_heads=4)]
    measured = _row("recgrela", "n_layers", time_ms=5, mib=7, flops=3, n_layers=4, batch_size=2048)
    out = tmp_path / "out"
    page, figs = report.build_report([_write_run(tmp_path / "pred", rows), _write_run(tmp_path / "real", [measured])], out)
    fig = _figure(figs, "predicted_vs_paper")
    assert fig.missing is None, fig.missing
    _assert_png(fig.png)
    table = pd.read_csv(out / "predicted_vs_paper.csv")
    t3 = table[table["part"] == "Table 3"].set_index("n_layers")
    assert list(t3.index) == [1, 2, 3, 4, 5, 6]
    assert t3.loc[4, "predicted_gib"] == pytest.approx(4.0)
    assert t3.loc[4, "predicted_over_paper"] == pytest.approx(4.0 / figures.PAPER_TABLE3_GIB[4])
    f3 = table[table["part"] == "Fig. 3"].set_index("line")
    assert f3.loc["LinRec / RecGRELA memory (ours)", "predicted_ratio"] == pytest.approx(1.3)
    assert f3.loc["RecGRELA / RecBLR memory (ours)", "predicted_over_paper"] == pytest.approx(0.5 / 0.87)
    table3 = pd.read_csv(out / "table3_recgrela_layers.csv")  # the measured figure keeps the measured row
    assert list(table3["tracked_peak_mib"]) == [7]


def test_a_line_joining_two_machines_is_warned_about(tmp_path):
    """Rows of one line from two nodes (a sweep resumed elsewhere, or spread over a cluster) draw as
    one line, and the figure's notes warn that its times compare across machines only roughly."""
    rows = [dict(r, node="node-a" if r["seq_len"] < 1024 else "node-b") for r in long_rows()]
    run = _write_run(tmp_path / "run", rows, "python -m bench.sweep --axis seqlen --preset long")
    _page, figs = report.build_report([run], tmp_path / "out")
    notes = " ".join(_figure(figs, "long_seq_loglog").notes)
    assert "joins rows measured on 2 machines (node-a, node-b)" in notes
    same = _write_run(tmp_path / "same", [dict(r, node="node-a") for r in long_rows()])
    _page, figs = report.build_report([same], tmp_path / "out2")
    assert "machines" not in " ".join(_figure(figs, "long_seq_loglog").notes)


def test_every_row_names_its_node():
    from bench.grid import Point
    from bench.sweep.point import base_row

    row = base_row(Point("linrec", (), "infer", "seq_len", seq_len=8, batch_size=1, n_layers=1, n_heads=1,
                         d_model=8, n_items=20))
    assert row["node"] == results.node_name() and row["node"]
