"""Mixed precision as a measured setting (`--dtype`): the step runs under autocast, the row says
so, tracked bytes follow the dtypes actually allocated, FLOP counts do not change."""
from __future__ import annotations

import pytest
import torch

from bench.grid import Point
from bench.sweep import sweep
from bench.sweep.point import run
from bench.workload import build_workload

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
SMALL = dict(axis="seq_len", seq_len=32, batch_size=4, n_layers=1, n_heads=2, d_model=32, n_items=200,
             warmup=0, repeats=1, threads=1)


def _row(model: str, workload: str, dtype: str) -> dict:
    row = run(Point(model, (), workload, dtype=dtype, **SMALL))
    assert row["status"] == "ok", row["reason"]
    return row


@pytest.mark.parametrize("model", ["sasrec", "recgrela"])
@pytest.mark.parametrize("dtype,name", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_rows_record_the_dtype_and_its_bytes(model, dtype, name):
    base, mixed = _row(model, "train", "fp32"), _row(model, "train", dtype)
    assert base["dtype"] == "float32" and mixed["dtype"] == name
    # autocast keeps float32 weights and Adam state and adds half-precision copies and activations:
    # the exact peak moves (which way depends on the model), the counts do not
    assert mixed["tracked_peak_bytes"] != base["tracked_peak_bytes"]
    for column in ("fwd_flops_fvcore", "fwd_flops_flopcounter", "step_flops_flopcounter", "fwd_flops_analytic",
                   "params_total"):
        assert mixed[column] == base[column], column


def test_autocast_really_runs_in_half_precision():
    w = build_workload("sasrec", dict(n_items=50, max_len=16, d_model=16, n_layers=1, n_heads=2), "infer", 2,
                       dtype="bf16")
    assert w.step().dtype == torch.bfloat16
    assert next(w.model.parameters()).dtype == torch.float32  # weights stay float32


def test_fp16_training_steps_with_a_grad_scaler():
    w = build_workload("linrec", dict(n_items=50, max_len=16, d_model=16, n_layers=1, n_heads=2), "train", 2,
                       dtype="fp16")
    before = [p.detach().clone() for p in w.model.parameters()]
    for _ in range(3):
        w.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, w.model.parameters()))


def test_a_model_fp16_cannot_train_is_an_error_row_not_a_crash():
    """LRURec's complex parameters: the CPU GradScaler has no complex unscale kernel."""
    row = run(Point("lrurec", (), "train", dtype="fp16", **SMALL))
    assert row["status"] == "error" and "ComplexFloat" in row["reason"] and row["dtype"] == "float16"


def test_sweep_flag_reaches_the_points(tmp_path):
    args = sweep.parser().parse_args(["--axis", "seqlen", "--values", "8", "--models", "linrec", "--dtype", "bf16",
                                      "--out", str(tmp_path / "run")])
    _, points, _, _ = sweep.plan(args)
    assert {p.dtype for p in points} == {"bf16"}
    assert sweep.expected_settings(points[0])["dtype"] == "bfloat16"
