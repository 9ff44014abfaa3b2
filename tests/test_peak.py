"""Utilisation against the physical limit: the GPU table, the CPU calibration, MFU in a row."""
from __future__ import annotations

import pytest

from bench.grid import Point
from bench.measure.peak import calibrate_cpu_peak, gpu_peak_tflops, utilisation
from bench.sweep.point import run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("name,dtype,peak", [
    ("NVIDIA H200", "bf16", 989.5),
    ("NVIDIA H100 80GB HBM3", "fp32", 67.0),
    ("NVIDIA H100 PCIe", "bf16", 756.5),
    ("NVIDIA A100-SXM4-80GB", "fp16", 312.0),
    ("NVIDIA L40S", "fp32", 91.6),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
])
def test_known_gpus_by_name(name, dtype, peak):
    value, source = gpu_peak_tflops(name, dtype)
    assert value == peak and source.startswith("datasheet")


def test_an_unknown_gpu_has_no_peak_and_says_why():
    value, source = gpu_peak_tflops("NVIDIA T4", "fp32")
    assert value is None and "no datasheet peak" in source


def test_cpu_calibration_is_a_positive_rate_and_restores_threads():
    import torch

    before = torch.get_num_threads()
    tflops, source = calibrate_cpu_peak("fp32", threads=1, size=128, repeats=3)
    assert tflops > 0 and "calibration" in source and "1 threads" in source
    assert torch.get_num_threads() == before


def test_utilisation_arithmetic():
    achieved, mfu = utilisation(2_000_000_000, 4.0, 1.0)  # 2 GFLOP in 4 ms = 0.5 TFLOP/s
    assert achieved == pytest.approx(0.5) and mfu == pytest.approx(0.5)
    assert utilisation(None, 4.0, 1.0) == (None, None) and utilisation(10, 4.0, None)[1] is None


def test_a_row_records_achieved_tflops_and_mfu_against_its_peak():
    point = Point("linrec", (), "train", "seq_len", seq_len=32, batch_size=4, n_layers=1, n_heads=2, d_model=32,
                  n_items=200, warmup=0, repeats=2, threads=1, peak_tflops=0.05, peak_source="test")
    row = run(point)
    assert row["status"] == "ok", row["reason"]
    expected = row["step_flops_flopcounter"] / (row["time_median_ms"] / 1e3) / 1e12
    assert row["achieved_tflops"] == pytest.approx(expected, rel=1e-3)
    assert row["mfu"] == pytest.approx(row["achieved_tflops"] / 0.05, rel=1e-3)
    assert row["peak_tflops"] == 0.05 and row["peak_source"] == "test"
