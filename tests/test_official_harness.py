"""Official twins in the harness: a sweep point of `official/NAME` is measured like ours and says
what it could not measure and what stood in for the official kernels."""
from __future__ import annotations

import pytest

from bench.grid import Point, parse_model_spec
from bench.sweep.point import run
from tests.test_official_equivalence import _require_peers

TINY = {"seq_len": 12, "batch_size": 3, "n_layers": 1, "n_heads": 2, "d_model": 8, "n_items": 29}


def point(model: str, workload: str = "train") -> Point:
    return Point(model, (), workload, "seq_len", threads=1, warmup=0, repeats=1, **TINY)


@pytest.mark.parametrize("name", ["recgrela", "lrurec"])
def test_twin_row_has_every_measurement_but_the_analytic_flops(name, one_thread):
    _require_peers()
    twin, ours = run(point(f"official/{name}")), run(point(name))
    assert twin["status"] == "ok", twin["reason"]
    assert twin["params_total"] == ours["params_total"]
    for column in ("time_median_ms", "tracked_peak_bytes", "fwd_flops_fvcore", "fwd_flops_flopcounter",
                   "step_flops_flopcounter"):
        assert twin[column] and twin[column] > 0, column
    assert twin.get("fwd_flops_analytic") is None and "no analytic formula" in twin["flops_analytic_reason"]
    if name == "recgrela":
        assert "causal_conv1d_ref" in twin["official_substitutions"]
    assert not ours.get("official_substitutions")


def test_value_reading_code_is_counted_on_the_real_device(one_thread):
    """The official LRURec port calls `.item()`, which the meta device cannot answer: its FLOPs are
    counted on the CPU, and the row says so (a CPU point counts every model on the CPU; the meta
    device's fallback for other devices: tests/test_flops_onepass.py)."""
    _require_peers()
    row = run(point("official/lrurec"))
    assert row["status"] == "ok", row["reason"]
    assert row["flopcounter_device"] == "cpu"
    assert run(point("official/recgrela"))["flopcounter_device"] == "cpu"


def test_official_spec_parses_and_unknown_names_are_refused():
    _require_peers()
    assert parse_model_spec("official/sasrec:hidden_dropout_prob=0.1").label == \
        "official/sasrec:hidden_dropout_prob=0.1"
    with pytest.raises(ValueError, match="official/ names"):
        parse_model_spec("official/elastic")
    with pytest.raises(ValueError, match="unknown config key"):
        parse_model_spec("official/sasrec:dropout=0.1")


def test_code_the_jit_trace_cannot_follow_keeps_its_other_measurements(one_thread):
    """The official RecBLR calls `int.bit_length` on a size, which is a tensor while fvcore traces:
    the fvcore cell stays empty with the reason, and the point is still measured."""
    _require_peers()
    row = run(point("official/recblr"))
    assert row["status"] == "ok", row["reason"]
    assert row.get("fwd_flops_fvcore") is None and "bit_length" in row["fvcore_reason"]
    assert row["step_flops_flopcounter"] > 0 and row["tracked_peak_bytes"] > 0


def test_ab_and_profile_take_official_specs(tmp_path, monkeypatch, capsys):
    """Every command that reads a spec reads `official/NAME` (sweep: bench.grid; regress: its own test)."""
    _require_peers()
    from bench import ab, profile

    out = tmp_path / "ab.csv"
    assert ab.main(["recgrela", "official/recgrela", "--batch-size", "2", "--seq-len", "8", "--layers", "1",
                    "--heads", "2", "--d-model", "8", "--n-items", "20", "--rounds", "1", "--warmup", "0",
                    "--out", str(out)]) == 0
    assert "official/recgrela" in out.read_text()
    monkeypatch.setattr(profile, "tb_plugin_installed", lambda: False)
    assert profile.main(["--model", "official/sasrec", "--workload", "infer", "--active", "1", "--seq-len", "8",
                         "--batch-size", "2", "--layers", "1", "--heads", "1", "--d-model", "8",
                         "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "top_ops_by_time.csv").exists()


def test_regress_gates_an_official_twin(tmp_path, capsys):
    _require_peers()
    from bench import regress

    baseline = tmp_path / "twins.json"
    assert regress.main(["--update", "--models", "official/linrec", "--baseline", str(baseline)]) == 0
    assert regress.main(["--models", "official/linrec", "--baseline", str(baseline), "--no-time"]) == 0
    assert "official/linrec" in baseline.read_text()
