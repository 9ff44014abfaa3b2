"""Tests for bench/measure: timing, memory and FLOP counters (CPU-only, tiny shapes)."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.measure import flops as flops_mod
from bench.measure.flops import (
    FvcoreCount,
    check_nonzero,
    flopcounter_flops,
    fvcore_forward_flops,
)
from bench.measure.memory import (
    MEMTRACKER_CATEGORIES,
    CudaPeak,
    NvmlSampler,
    TrackedPeak,
    cuda_allocator_peak,
    tracked_peak,
)
from bench.measure.timing import TimingResult, measure_time, percentile, set_cpu_threads

CUDA = torch.cuda.is_available()


# --------------------------------------------------------------------------- helpers


class TinyAttention(nn.Module):
    """Fused QKV projection, causal SDPA, output projection."""

    def __init__(self, d_model: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, l, d))


def tiny_attention_flops(b: int, l: int, d: int, h: int) -> int:
    """Hand formula: 2 x MACs of qkv Linear + QK^T + AV (full, not causal-halved) + out Linear."""
    dh = d // h
    macs = b * l * d * 3 * d + b * h * l * l * dh + b * h * l * l * dh + b * l * d * d
    return 2 * macs


def mlp(d: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, 8))


def train_setup(batch: int, seed: int = 0):
    torch.manual_seed(seed)
    model = TinyAttention()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 8, 16)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()

    return model, opt, x, step


# --------------------------------------------------------------------------- timing


def test_measure_time_cpu_counts_and_order() -> None:
    calls = []
    result = measure_time(lambda: calls.append(1), warmup=3, repeats=7)
    assert isinstance(result, TimingResult)
    assert len(calls) == 10
    assert (result.repeats, result.warmup, result.timer) == (7, 3, "perf_counter")
    assert result.threads == torch.get_num_threads()
    assert 0 <= result.min_ms <= result.p20_ms <= result.median_ms <= result.p80_ms
    assert result.iqr_ms >= 0
    assert result.wall_median_ms == result.median_ms


def test_measure_time_sees_real_work() -> None:
    result = measure_time(lambda: time.sleep(0.002), warmup=0, repeats=3)
    assert result.min_ms >= 1.9


def test_measure_time_min_total_extends_repeats() -> None:
    result = measure_time(lambda: time.sleep(0.002), warmup=0, repeats=2, min_total_s=0.02)
    assert result.repeats > 2
    assert result.repeats * result.median_ms >= 15


def testpercentile_matches_numpy_linear() -> None:
    values = sorted([5.0, 1.0, 3.0, 9.0, 2.5, 7.0])
    for q in (0, 20, 25, 50, 75, 80, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([4.0], 80) == 4.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup": -1},
        {"repeats": 0},
        {"repeats": 2.5},
        {"min_total_s": -1.0},
        {"device": "meta"},
        {"device": "not-a-device"},
    ],
)
def test_measure_time_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        measure_time(lambda: None, **kwargs)


@pytest.mark.skipif(CUDA, reason="checks the error raised when CUDA is absent")
def test_measure_time_cuda_without_gpu_is_value_error() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        measure_time(lambda: None, device="cuda")


def test_set_cpu_threads_roundtrip() -> None:
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        set_cpu_threads(0)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_measure_time_cuda_events() -> None:
    a = torch.randn(256, 256, device="cuda")
    result = measure_time(lambda: a @ a, device="cuda", warmup=2, repeats=5)
    assert result.timer == "cuda_event"
    assert result.median_ms > 0 and result.wall_median_ms is not None


# --------------------------------------------------------------------------- memory


def test_tracked_peak_repeatable_and_categorised() -> None:
    model, opt, x, step = train_setup(batch=2)
    first = tracked_peak(step, model, opt, x)
    second = tracked_peak(step, model, opt, x)
    assert isinstance(first, TrackedPeak)
    assert first == second
    assert set(first.by_category_bytes) == set(MEMTRACKER_CATEGORIES)
    assert first.total_bytes == sum(first.by_category_bytes.values())
    n_param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert first.by_category_bytes["Parameter"] == n_param_bytes
    assert first.by_category_bytes["Other"] == x.numel() * x.element_size()


def _forward_backward(batch: int) -> tuple:
    model, _, x, _ = train_setup(batch)
    return (lambda: model(x).sum().backward()), model, x


def test_tracked_peak_grows_with_batch() -> None:
    small = tracked_peak(*_forward_backward(batch=2))
    large = tracked_peak(*_forward_backward(batch=16))
    assert large.total_bytes > small.total_bytes
    assert large.by_category_bytes["Activation"] > small.by_category_bytes["Activation"]


def test_tracked_peak_forward_only_counts_activations() -> None:
    model = mlp()
    x = torch.randn(4, 16)
    with torch.no_grad():
        peak = tracked_peak(lambda: model(x), model, x)
    assert peak.by_category_bytes["Activation"] > 0
    assert peak.by_category_bytes["Gradient"] == 0


def test_tracked_peak_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        tracked_peak(lambda: None, "not trackable")
    with pytest.raises(ValueError):
        tracked_peak("not callable")  # type: ignore[arg-type]


def test_cuda_allocator_peak_requires_cuda_device() -> None:
    with pytest.raises(ValueError, match="CUDA device"):
        cuda_allocator_peak(lambda: None, "cpu")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_allocator_peak_and_tracker_on_gpu() -> None:
    x = torch.randn(1024, 1024, device="cuda")  # 4 MiB
    peak = cuda_allocator_peak(lambda: x * 2, "cuda")
    assert isinstance(peak, CudaPeak)
    assert peak.peak_reserved_mib >= peak.peak_alloc_mib >= 8.0 - 1e-6
    tracked = tracked_peak(lambda: x * 2, x, device="cuda")
    assert tracked.total_bytes == 2 * 4 * 2**20


def _nvml_device_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


def test_nvml_sampler_never_raises() -> None:
    with NvmlSampler(interval_s=0.001) as sampler:
        time.sleep(0.005)
    if _nvml_device_present():
        assert sampler.status == "ok", sampler.status
        assert sampler.peak_used_mib is not None and sampler.peak_used_mib >= 0
        assert sampler.baseline_used_mib is not None and sampler.samples >= 2
    else:
        assert sampler.status.startswith("unavailable"), sampler.status
        assert "\n" not in sampler.status
        assert sampler.peak_used_mib is None


def test_nvml_sampler_without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with NvmlSampler() as sampler:
        pass
    assert sampler.status.startswith("unavailable: pynvml")
    assert sampler.peak_used_mib is None


def test_nvml_sampler_propagates_step_errors_and_validates() -> None:
    with pytest.raises(KeyError):
        with NvmlSampler():
            raise KeyError("from the step")
    with pytest.raises(ValueError):
        NvmlSampler(interval_s=0)
    with pytest.raises(ValueError):
        NvmlSampler(device_index=-1)


# --------------------------------------------------------------------------- flops


def test_attention_flops_fvcore_equals_flopcounter_equals_formula() -> None:
    b, l, d, h = 2, 8, 16, 2
    torch.manual_seed(0)
    model = TinyAttention(d, h)
    x = torch.randn(b, l, d)
    expected = tiny_attention_flops(b, l, d, h)
    fv = fvcore_forward_flops(model, (x,))
    assert isinstance(fv, FvcoreCount)
    assert fv.flops == expected
    assert fv.unsupported_ops == {}
    with torch.no_grad():
        assert flopcounter_flops(lambda: model(x)) == expected


def test_fvcore_sdpa_handle_counts_attention() -> None:
    class SdpaOnly(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    q = torch.randn(2, 3, 5, 4)  # batch 2, heads 3, Lq 5, E 4
    k = torch.randn(2, 3, 7, 4)  # Lk 7
    v = torch.randn(2, 3, 7, 6)  # Ev 6
    fv = fvcore_forward_flops(SdpaOnly(), (q, k, v))
    assert fv.flops == 2 * (6 * 5 * 7 * 4 + 6 * 5 * 7 * 6) > 0
    assert flopcounter_flops(lambda: SdpaOnly()(q, k, v)) == fv.flops


def test_flopcounter_backward_is_twice_forward_for_linear() -> None:
    model = mlp()
    x = torch.randn(4, 16, requires_grad=True)
    forward = flopcounter_flops(lambda: model(x))
    total = flopcounter_flops(lambda: model(x).sum().backward())
    assert forward == 2 * (4 * 16 * 32 + 4 * 32 * 8)
    assert total == 3 * forward


def test_layernorm_counts_zero_under_convention() -> None:
    model = nn.LayerNorm(16)
    x = torch.randn(4, 16)
    fv = fvcore_forward_flops(model, (x,))
    fc = flopcounter_flops(lambda: model(x))
    assert fv.flops == 0 and fc == 0
    assert "aten::layer_norm" not in fv.unsupported_ops
    with pytest.raises(RuntimeError, match="fvcore counted 0 FLOPs"):
        check_nonzero("fvcore", fv.flops)
    with pytest.raises(RuntimeError, match="FlopCounterMode counted 0 FLOPs"):
        check_nonzero("FlopCounterMode", fc)
    assert check_nonzero("ok", 5) == 5


def test_fvcore_reports_unsupported_ops() -> None:
    class Softmaxed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.lin(x), dim=-1)

    fv = fvcore_forward_flops(Softmaxed(), (torch.randn(2, 8),))
    assert fv.flops == 2 * 2 * 8 * 8
    assert fv.unsupported_ops.get("aten::softmax") == 1


def test_fvcore_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        fvcore_forward_flops(mlp(), torch.randn(2, 16))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fvcore_forward_flops(lambda x: x, (torch.randn(2),))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        flopcounter_flops(42)  # type: ignore[arg-type]
    assert flops_mod.__doc__ and "2 x multiply-adds" in flops_mod.__doc__


def test_tracked_peak_on_a_device_the_step_never_used_is_an_error_not_zero() -> None:
    model, x = nn.Linear(4, 4), torch.randn(2, 4)
    with pytest.raises(RuntimeError, match="saw no tensor on meta"):
        tracked_peak(lambda: model(x), model, x, device="meta")
