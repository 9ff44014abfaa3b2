"""bench.report's `ours_vs_official`: ratios to the official twins, from synthetic CSVs whose answers are known."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.report import figures, plots, report
from tests.test_report import PNG_MAGIC, _figure, _row, _write_run

SUBS = "mamba_ssm.selective_scan_fn=selective_scan_ref causal_conv1d=None"


def _twin(name, variant="default", substitutions="", **kw):
    row = _row(f"official/{name}", "seq_len", variant=variant, **kw)
    row.update(official_substitutions=substitutions, step_flops_analytic=None,
               flops_analytic_reason="official twin: no analytic formula")
    return row


def twin_rows():
    """recgrela and its twin at L=200, 1000 (the twin OOMs at 1000); mamba4rec and its twin at L=200;
    sasrec (two variants) with a twin measured only at L=200 while ours also ran at 1000."""
    rows = []
    for L in (200, 1000):
        rows.append(_row("recgrela", "seq_len", seq_len=L, time_ms=2.0 * L, mib=L / 4, flops=6 * L))
        rows.append(_twin("recgrela", seq_len=L, time_ms=2.5 * L, mib=L / 2, flops=8 * L,
                          status="oom" if L == 1000 else "ok"))
    rows.append(_row("mamba4rec", "seq_len", time_ms=10.0, mib=3.0, flops=1000))
    rows.append(_twin("mamba4rec", substitutions=SUBS, time_ms=40.0, mib=6.0, flops=1000))
    for L in (200, 1000):
        rows.append(_row("sasrec", "seq_len", seq_len=L, time_ms=1.0 * L, mib=L / 8, flops=3 * L))
        rows.append(_row("sasrec", "seq_len", variant="attention=math", seq_len=L, time_ms=3.0 * L, mib=L / 2,
                         flops=3 * L))
    rows.append(_twin("sasrec", time_ms=400.0, mib=50.0, flops=600))
    for row in rows:
        row["params_total"] = 2000 if row["model"].startswith("official/") else 1000
    return rows


def test_ratios_are_computed_from_the_rows(tmp_path):
    rows = twin_rows()
    run = _write_run(tmp_path / "run", rows, command="python -m bench.sweep --axis seqlen --models "
                     "recgrela,official/recgrela")
    out = tmp_path / "out"
    page, figs = report.build_report([run], out)
    fig = _figure(figs, "ours_vs_official")
    assert fig.missing is None and fig.png.read_bytes()[:8] == PNG_MAGIC
    table = pd.read_csv(out / "ours_vs_official.csv")
    by = table.set_index(["ours", "workload", "seq_len"])

    def source(model, L, variant="default"):
        return next(r for r in rows if r["model"] == model and r["seq_len"] == L and r["variant"] == variant)

    for ours, twin, L, variant in (("recgrela", "official/recgrela", 200, "default"),
                                   ("mamba4rec", "official/mamba4rec", 200, "default"),
                                   ("sasrec", "official/sasrec", 200, "default"),
                                   ("sasrec:attention=math", "official/sasrec", 200, "attention=math")):
        a, b, got = source(ours.split(":")[0], L, variant), source(twin, L), by.loc[(ours, "train", L)]
        assert got["official"] == twin
        assert got["time_ratio"] == pytest.approx(a["time_median_ms"] / b["time_median_ms"])
        assert got["memory_ratio"] == pytest.approx(a["tracked_peak_bytes"] / b["tracked_peak_bytes"])
        assert got["flops_ratio"] == pytest.approx(a["step_flops_flopcounter"] / b["step_flops_flopcounter"])
        assert got["flops_column"] == "step_flops_flopcounter"
        assert (got["params_ours"], got["params_official"]) == (1000, 2000)
        assert got["same_run"] == "yes"
    assert by.loc[("sasrec:attention=math", "train", 200), "time_ratio"] == pytest.approx(1.5)  # one line per variant
    text = page.read_text()
    assert "[ours_vs_official.csv](ours_vs_official.csv)" in text and "(ours_vs_official.png)" in text
    assert "| recgrela | recgrela | official/recgrela | train | 200 |" in text  # the markdown table
    assert not [p for p in out.rglob("*") if "official" in p.name and not p.name.startswith("ours_vs_official")]
    assert not (out / "official").exists()


def test_a_failed_side_shows_its_status_and_no_ratio(tmp_path):
    run = _write_run(tmp_path / "run", twin_rows())
    page, _figs = report.build_report([run], tmp_path / "out")
    got = pd.read_csv(tmp_path / "out" / "ours_vs_official.csv").set_index(["ours", "seq_len"]).loc[("recgrela", 1000)]
    assert (got["ours_status"], got["official_status"]) == ("ok", "oom")
    assert all(math.isnan(got[c]) for c in ("time_ratio", "memory_ratio", "flops_ratio"))
    assert got["time_ours_ms"] == 2000.0  # our side's measurement is still shown
    assert "recgrela vs official/recgrela at L=1000 (train): ours ok, official oom (oom here)" in page.read_text()


def test_substitutions_and_the_run_warning_are_listed(tmp_path):
    rows = twin_rows()
    a = _write_run(tmp_path / "a", [r for r in rows if not r["model"].startswith("official/")])
    b = _write_run(tmp_path / "b", [r for r in rows if r["model"].startswith("official/")])
    page, _figs = report.build_report([a, b], tmp_path / "out")
    text = page.read_text()
    assert f"official_substitutions of official/mamba4rec (1 row(s), L=200): `{SUBS}`" in text
    assert "official_substitutions of official/recgrela (2 row(s), L=200,1000): none recorded" in text
    assert "that twin's time and memory are the stand-in's" in text
    assert "4 of 4 measured pair(s) join rows of different run folders" in text
    assert "rows from 2 run folders: wall times compare reliably only within one run" in text
    table = pd.read_csv(tmp_path / "out" / "ours_vs_official.csv")
    assert set(table["same_run"]) == {"no"}


def test_missing_twin_says_what_and_which_sweep(tmp_path):
    rows = twin_rows() + [_row("linrec", "seq_len", time_ms=5.0, mib=1.0, flops=100)]
    page, _figs = report.build_report([_write_run(tmp_path / "run", rows)], tmp_path / "out")
    text = page.read_text()
    assert "official/linrec at L=200 (train)" in text  # our model without any twin
    assert "official/sasrec at L=1000 (train)" in text  # our sasrec measured where the twin was not
    assert ("`python -m bench.sweep --axis seqlen --values 200,1000 --batch-size 8 --d-model 64 --layers 2 "
            "--heads 2 --n-items 100 --device cpu --threads 1 --models linrec,official/linrec,official/sasrec,sasrec,"
            "sasrec:attention=math`") in text  # both sides in one run, so their times compare
    # a twin without our model: the page names our spec
    only_twin = _write_run(tmp_path / "twin", [_twin("lrurec", time_ms=1.0, mib=1.0, flops=10)])
    page, figs = report.build_report([only_twin], tmp_path / "out2")
    fig = _figure(figs, "ours_vs_official")
    assert fig.missing.startswith("no workload and grid point where both")
    assert "--models lrurec,official/lrurec`" in fig.missing and "Not drawn: no workload and grid point" in page.read_text()
    assert not (tmp_path / "out2" / "ours_vs_official.png").exists()


def test_no_twin_rows_at_all(tmp_path):
    rows = [_row("recgrela", "seq_len", time_ms=1.0, mib=1.0, flops=10),
            dict(_row("elastic", "seq_len", time_ms=1.0, mib=1.0, flops=10), reconstruction=True)]
    _page, figs = report.build_report([_write_run(tmp_path / "run", rows)], tmp_path / "out")
    missing = _figure(figs, "ours_vs_official").missing
    assert missing.startswith("no official twin rows (model `official/NAME`) in the CSVs")
    assert "--models official/recgrela,recgrela`" in missing and "elastic" not in missing  # no public code, no twin


def test_infer_rows_fall_back_to_fvcore():
    mine = pd.Series({"workload": "infer", "status": "ok", "_label": "linrec", "time_median_ms": 2.0,
                      "tracked_peak_bytes": 10, "step_flops_flopcounter": math.nan, "fwd_flops_fvcore": 30.0,
                      "params_total": 5, "_run": "r", **{c: 1 for c in figures.GRID}, "device": "cpu"})
    theirs = mine.copy()
    theirs.update({"_label": "official/linrec", "fwd_flops_fvcore": 60.0, "time_median_ms": 4.0})
    record = figures._pair_record("linrec", mine, theirs)
    assert record["flops_column"] == "fwd_flops_fvcore" and record["flops_ratio"] == 0.5
    assert record["time_ratio"] == 0.5 and record["memory_ratio"] == 1.0
    mine["workload"] = theirs["workload"] = "train"
    assert math.isnan(figures._pair_record("linrec", mine, theirs)["flops_ratio"])  # train: whole step only


def test_twins_in_the_other_figures(tmp_path):
    rows = twin_rows()
    for L in (256, 512, 1024):
        rows.append(_row("recgrela", "seq_len", seq_len=L, time_ms=L, mib=L, flops=L))
        rows.append(_twin("recgrela", seq_len=L, time_ms=2 * L, mib=L, flops=L))
    out = tmp_path / "out"
    page, figs = report.build_report([_write_run(tmp_path / "run", rows)], out)
    fig3 = _figure(figs, "fig3_memory_flops_ndcg")
    assert fig3.missing is None and not fig3.table["model"].str.startswith("official/").any()
    assert "official twins left out (compared with ours in `ours_vs_official`): official/mamba4rec" in page.read_text()
    long = pd.read_csv(out / "long_seq_loglog.csv")
    assert "official/recgrela" in set(long["line"])  # labelled as the twin in the long view
    written = plots.plot_sweep(pd.read_csv(tmp_path / "run" / "results.csv"), tmp_path / "sweep")
    assert written and all(p.parent == tmp_path / "sweep" and "/" not in p.name for p in written)
    assert all(p.parent == out for p in out.rglob("*"))  # no model name made a folder
