"""--predict: the fake-tensor step predicts exactly what a real CPU step measures (bench.measure.predict)."""
from __future__ import annotations

import json

import pytest
import torch

import models
from bench.grid import DEFAULT_MODELS, Point
from bench.measure.memory import tracked_peak
from bench.measure.predict import (
    CUDA_MIN_BLOCK_BYTES,
    PREDICTION_CUDA,
    cuda_kernels,
    cuda_storage_rounding,
    fake_workload,
    predicted_peak,
)
from bench.sweep import point as bench_point


def small_point(name: str, workload: str, **extra) -> Point:
    return Point(name, (), workload, "seq_len", seq_len=24, batch_size=4, n_layers=2, n_heads=2, d_model=16,
                 n_items=101, warmup=0, repeats=1, **extra)


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["train", "infer"])
@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_predicted_equals_measured_on_cpu(name, workload):
    """Every model: the predicted row's tracked peak (total and by category), FLOPs and attention
    kernels equal the measured row's, exactly."""
    point = small_point(name, workload)
    measured, predicted = bench_point.base_row(point), bench_point.base_row(small_point(name, workload, predict=True))
    bench_point.measure(point, measured)
    bench_point.predict(small_point(name, workload, predict=True), predicted)
    for column in ("tracked_peak_bytes", "tracked_activation_bytes", "tracked_categories_json", "params_total",
                   "fwd_flops_flopcounter", "step_flops_flopcounter", "fwd_flops_analytic", "attention_ops"):
        assert predicted.get(column) == measured.get(column), column
    assert measured["tracked_peak_bytes"] > 0 and predicted["step_flops_flopcounter"] > 0
    assert predicted["flopcounter_device"] == "fake" and "time_median_ms" not in predicted
    assert predicted["fvcore_reason"].startswith("not run when predicting")


def test_prediction_allocates_nothing_at_paper_scale():
    """The paper's B=2048, L=200 step of RecGRELA is predicted while real allocations stay small
    (the model's parameters only: a few MiB, next to a predicted peak of GiB)."""
    config = vars(models.make_config("recgrela", max_len=200, n_items=3417, d_model=64, n_layers=4, n_heads=4))
    w, mode = fake_workload("recgrela", config, "train", 2048)
    peak = predicted_peak(w, mode)
    assert peak.total_bytes > 2**30
    params = sum(p.numel() for p in w.model.parameters()) * 4
    assert peak.by_category_bytes["Parameter"] == params


def test_cuda_rounding_rounds_every_storage_up_to_512_bytes():
    sizes = [1, 511, 512, 513, 4000]

    def step():
        return [torch.empty(n, dtype=torch.uint8) for n in sizes]

    exact = tracked_peak(step)
    with cuda_storage_rounding():
        rounded = tracked_peak(step)
    assert exact.total_bytes == sum(sizes)
    assert rounded.total_bytes == sum(-(-n // CUDA_MIN_BLOCK_BYTES) * CUDA_MIN_BLOCK_BYTES for n in sizes)
    after = tracked_peak(step)  # restored
    assert after.total_bytes == sum(sizes)


def test_cuda_target_predicted_on_this_cpu():
    """--device cuda with --predict needs no GPU: the row says how it was predicted, and its peak
    is the CPU one with every storage rounded up (never smaller)."""
    cpu_point, cuda_point = small_point("sasrec", "train", predict=True), small_point("sasrec", "train", predict=True,
                                                                                       device="cuda")
    cpu_row, cuda_row = bench_point.run(cpu_point), bench_point.run(cuda_point)
    assert cpu_row["status"] == cuda_row["status"] == "predicted", (cpu_row["reason"], cuda_row["reason"])
    assert cuda_row["prediction"] == PREDICTION_CUDA and cuda_row["device"] == "cuda"
    assert cuda_row["device_name"].startswith("none: predicted on")
    assert cuda_row["tracked_peak_bytes"] != cpu_row["tracked_peak_bytes"]
    assert cuda_row["tracked_peak_bytes"] % CUDA_MIN_BLOCK_BYTES == 0
    categories = json.loads(cuda_row["tracked_categories_json"])
    assert sum(categories.values()) == cuda_row["tracked_peak_bytes"]


def test_predict_in_bf16_follows_the_dtypes_allocated():
    point = small_point("sasrec", "train", predict=True, dtype="bf16")
    measured, predicted = bench_point.base_row(point), bench_point.base_row(point)
    bench_point.measure(small_point("sasrec", "train", dtype="bf16"), measured)
    bench_point.predict(point, predicted)
    assert predicted["tracked_peak_bytes"] == measured["tracked_peak_bytes"]


@pytest.mark.slow
def test_sweep_predict_writes_predicted_rows_and_a_memory_figure_only(tmp_path):
    from bench import results
    from bench.sweep import sweep

    out = tmp_path / "run"
    code = sweep.main(["--axis", "seqlen", "--values", "16,32", "--models", "linrec", "--batch-size", "4",
                       "--layers", "1", "--predict", "--device", "cuda", "--out", str(out)])
    assert code == 0
    rows = results.read_rows(out / "results.csv")
    assert [r["status"] for r in rows] == ["predicted", "predicted"]
    assert all(r["time_median_ms"] == "" and r["prediction"] == PREDICTION_CUDA for r in rows)
    assert int(rows[1]["tracked_peak_bytes"]) > int(rows[0]["tracked_peak_bytes"])
    assert sorted(p.name for p in out.glob("*.png")) == ["memory_train.png"]
    # resuming it as a measured sweep would mix predicted and measured rows: refused
    from tests.badinput import refused

    line = refused(sweep.main, ["--axis", "seqlen", "--values", "16,32", "--models", "linrec", "--batch-size", "4",
                                "--layers", "1", "--device", "cpu", "--out", str(out), "--resume"], watched=[out])
    assert "--predict" in line


@pytest.mark.parametrize("extra", [["--compile"], ["--repeats", "3"], ["--warmup", "0"]])
def test_predict_refuses_flags_that_time_a_real_step(tmp_path, extra):
    from bench.sweep import sweep
    from tests.badinput import refused

    line = refused(sweep.main, ["--axis", "seqlen", "--values", "16", "--models", "linrec", "--predict", *extra,
                                "--out", str(tmp_path / "run")], watched=[tmp_path])
    assert "--predict" in line and extra[0] in line


def test_a_predicted_row_without_its_memory_is_refused_by_the_plots():
    from bench.report.plots import results_row_problem
    from bench.results import COLUMNS

    row = dict.fromkeys(COLUMNS, "")
    row.update(model="sasrec", workload="train", status="predicted", axis="seq_len", device="cpu", seq_len="8",
               batch_size="2", n_layers="1", n_heads="1", d_model="8", n_items="20", prediction="fake")
    assert results_row_problem(row)[0] == "tracked_peak_mib"
    row["tracked_peak_mib"] = "1.5"
    assert results_row_problem(row) is None
    row["time_median_ms"] = "3"
    assert results_row_problem(row)[0] == "time_median_ms"


def test_a_predicted_sweep_with_an_error_row_draws_no_time_figure(tmp_path):
    from bench import results
    from bench.report.plots import plot_results_csv

    def row(model, status, **cells):
        base = dict(model=model, variant="default", workload="train", status=status, axis="n_layers", seq_len=200,
                    batch_size=2048, n_layers=1, n_heads=4, d_model=64, n_items=3417, device="cuda",
                    device_name="none: predicted on a CPU", dtype="float32", prediction="fake tensors")
        return dict(base, **cells)

    csv_path = tmp_path / "results.csv"
    results.append_row(csv_path, row("recgrela", "predicted", tracked_peak_mib=3539.1, tracked_peak_bytes=3711000000))
    results.append_row(csv_path, row("official/lrurec", "error", reason="cannot be predicted: .item()"))
    assert [p.name for p in plot_results_csv(csv_path)] == ["memory_train.png"]


def test_cuda_dropout_keeps_a_bool_mask_as_cuda_does():
    """On the CPU, dropout multiplies by a float mask and keeps it for backward (4 B per element);
    CUDA's fused kernel keeps a bool mask (1 B). Under cuda_kernels the CPU runs CUDA's kernel:
    same scaling, a bool mask saved, the same gradient rule."""
    def saved_dtypes(fn):
        dtypes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: dtypes.append(t.dtype) or t, lambda t: t):
            fn()
        return dtypes

    x = torch.randn(1000, requires_grad=True)
    layer = torch.nn.Dropout(0.25)
    assert torch.bool not in saved_dtypes(lambda: layer(x))
    with cuda_kernels():
        assert saved_dtypes(lambda: layer(x)) == [torch.bool]
        y = layer(x)
        layer.eval()
        assert layer(x) is x or torch.equal(layer(x), x)  # eval: untouched
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)


def test_cuda_kernels_run_attention_with_dropout_fused_keeping_no_l_by_l_tensor():
    """With dropout the CPU runs attention in its math form (the L x L probabilities and their mask
    are kept for backward); CUDA's memory-efficient kernel keeps neither. Under cuda_kernels the
    CPU runs that kernel: no saved tensor has an L x L trailing shape, gradients still flow."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    L = 32
    mode = FakeTensorMode()
    with mode:
        q, k, v = (torch.randn(2, 2, L, 8, requires_grad=True) for _ in range(3))

    def saved_shapes():
        shapes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=True)
        return shapes, out

    with mode:
        plain, _ = saved_shapes()
        with cuda_kernels():
            fused, out = saved_shapes()
        out.sum().backward()
    assert any(s[-2:] == (L, L) for s in plain)
    assert fused and not any(s[-2:] == (L, L) for s in fused)
    assert all(t.grad is not None and t.grad.shape == t.shape for t in (q, k, v))
