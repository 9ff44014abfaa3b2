"""--compile: torch.compile of the step's forward and loss, compile time apart from step time."""
from __future__ import annotations

import os

import pytest
import torch

from bench import results
from bench.grid import Point
from bench.sweep import sweep
from bench.sweep.point import COMPILED_NOT_TRACKED, run
from bench.workload import build_workload

SMALL = dict(axis="seq_len", seq_len=16, batch_size=4, n_layers=1, n_heads=2, d_model=16, n_items=50, warmup=1,
             repeats=2)


@pytest.mark.parametrize("workload", ["train", "infer"])
def test_compiled_step_computes_what_the_eager_step_computes(workload):
    config = dict(n_items=50, max_len=16, d_model=16, n_layers=1, n_heads=2, hidden_dropout=0.0, attn_dropout=0.0)
    eager = build_workload("sasrec", config, workload, 4)
    compiled = build_workload("sasrec", config, workload, 4, compile="aot_eager")
    torch.testing.assert_close(compiled.step(), eager.step())
    if workload == "train":  # the compiled graph's backward reached the parameters, and Adam moved them
        for p, q in zip(eager.model.parameters(), compiled.model.parameters()):
            torch.testing.assert_close(p, q)


def test_compiled_row_records_compile_time_apart_and_no_borrowed_memory():
    row = run(Point("sasrec", (), "train", compile="aot_eager", **SMALL))
    assert row["status"] == "ok", row["reason"]
    assert row["compile_backend"] == "aot_eager" and row["compile_time_s"] > 0
    assert row["graph_breaks"] >= 0 and row["time_median_ms"] > 0
    # MemTracker would see the eager step (dynamo steps aside under a dispatch mode): no figure, a reason
    assert "tracked_peak_bytes" not in row and row["tracked_reason"] == COMPILED_NOT_TRACKED
    assert row["step_flops_flopcounter"] > 0


def test_a_compile_failure_is_an_error_row_not_a_crash(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(torch, "compile", lambda fn, backend: lambda *a, **k: broken())
    row = run(Point("linrec", (), "infer", compile="inductor", **SMALL))
    assert row["status"] == "error" and "backend exploded" in row["reason"]


@pytest.mark.slow
def test_sweep_compile_flag_reaches_rows_and_resume_compares_it(tmp_path):
    from tests.badinput import refused

    out = tmp_path / "run"
    argv = ["--axis", "seqlen", "--values", "16", "--models", "sasrec", "--batch-size", "4", "--layers", "1",
            "--repeats", "2", "--warmup", "1", "--no-flops", "--out", str(out)]
    assert sweep.main(argv + ["--compile", "aot_eager"]) == 0
    (row,) = results.read_rows(out / "results.csv")
    assert row["status"] == "ok" and row["compile_backend"] == "aot_eager" and float(row["compile_time_s"]) > 0
    assert sorted(p.name for p in out.glob("*.png")) == ["time_train.png"]  # no empty memory figure
    line = refused(sweep.main, argv + ["--resume"], watched=[out])
    assert "--compile" in line
    assert sweep.parser().parse_args(["--axis", "seqlen", "--compile"]).compile == "inductor"


def test_every_compiled_point_compiles_with_empty_caches_of_its_own(monkeypatch):
    """compile_time_s is a cold compile: the child's inductor and Triton caches are new folders in its
    scratch directory (a warm on-disk cache made a second compile 5x faster on this CPU)."""
    import subprocess

    from bench.sweep import runner

    seen = []

    class Stop(Exception):
        pass

    def popen(args, env, **kwargs):
        seen.append(env)
        raise Stop

    monkeypatch.setattr(subprocess, "Popen", popen)
    for backend in ("inductor", ""):
        with pytest.raises(Stop):
            runner.run_isolated(Point("linrec", (), "train", compile=backend, **SMALL))
    compiled, eager = seen
    for var in runner.COMPILE_CACHE_VARS:
        assert runner.POINT_DIR_PREFIX in compiled[var] and compiled[var].endswith(var.lower())
    assert compiled["TORCHINDUCTOR_CACHE_DIR"] != compiled["TRITON_CACHE_DIR"]
    assert all(eager.get(var) == os.environ.get(var) for var in runner.COMPILE_CACHE_VARS)
