"""The physical limit a step is measured against: peak matrix-multiply throughput of the device.

Model FLOPs utilisation (MFU) = achieved TFLOP/s (a step's counted FLOPs / its median time) / the
device's peak at the step's dtype. FLOPs here follow the suite's convention (2 x multiply-adds of
matrix-product ops; the element-wise scan work in `scan_flops_analytic` is not in them), so MFU
says how much of the device's matmul throughput the model's matmuls get.

- GPUs: dense (no 2:4 sparsity) peak TFLOP/s from the vendor's datasheet, looked up by the device
  name torch reports (`GPU_PEAK_TFLOPS`; each figure's source beside it). fp32 is the plain FP32
  figure: PyTorch does not use TF32 for float32 matmuls unless asked (`allow_tf32` off by default).
- CPUs (and GPUs not in the table): no datasheet figure applies to a shared VM's cores, so the peak
  is measured once per sweep with a calibration matmul (`calibrate_cpu_peak`) at the sweep's
  threads and dtype, and recorded with its source in every row.
"""
from __future__ import annotations

import time

import torch

# name fragment (matched in order, case-insensitive) -> dense peak TFLOP/s by --dtype
GPU_PEAK_TFLOPS = [
    # NVIDIA H200 datasheet (SXM): FP32 67; BF16/FP16 Tensor Core 1,979 with sparsity -> 989.5 dense
    ("H200", {"fp32": 67.0, "bf16": 989.5, "fp16": 989.5}),
    # NVIDIA H100 datasheet, PCIe: FP32 51; BF16/FP16 Tensor Core 1,513 with sparsity -> 756.5 dense
    ("H100 PCIe", {"fp32": 51.0, "bf16": 756.5, "fp16": 756.5}),
    # NVIDIA H100 datasheet, SXM: FP32 67; BF16/FP16 Tensor Core 1,979 with sparsity -> 989.5 dense
    ("H100", {"fp32": 67.0, "bf16": 989.5, "fp16": 989.5}),
    # NVIDIA A100 datasheet (SXM and PCIe): FP32 19.5; BF16/FP16 Tensor Core 312 dense (624 sparse)
    ("A100", {"fp32": 19.5, "bf16": 312.0, "fp16": 312.0}),
    # NVIDIA L40S datasheet: FP32 91.6; BF16/FP16 Tensor Core 733 with sparsity -> 366.5 dense
    ("L40S", {"fp32": 91.6, "bf16": 366.5, "fp16": 366.5}),
    # NVIDIA Ada Lovelace architecture whitepaper, RTX 4090: FP32 82.6; FP16/BF16 Tensor with FP32
    # accumulate 165.2 dense (330.4 sparse)
    ("RTX 4090", {"fp32": 82.6, "bf16": 165.2, "fp16": 165.2}),
]
CALIBRATION_SIZE = 1024  # n of the n x n x n matmul timed on the CPU (2 n^3 FLOPs)
CALIBRATION_REPEATS = 10
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gpu_peak_tflops(device_name: str, dtype: str) -> tuple[float | None, str]:
    """(dense peak TFLOP/s, source) of a GPU by its name; (None, why) when the table lacks it."""
    for fragment, peaks in GPU_PEAK_TFLOPS:
        if fragment.lower() in device_name.lower():
            return peaks[dtype], f"datasheet: {fragment} {dtype} dense"
    return None, f"no datasheet peak for {device_name!r} in bench.measure.peak.GPU_PEAK_TFLOPS"


def calibrate_cpu_peak(dtype: str = "fp32", threads: int = 0, size: int = CALIBRATION_SIZE,
                       repeats: int = CALIBRATION_REPEATS) -> tuple[float, str]:
    """(TFLOP/s, source): the best of `repeats` timed `size`^3 matmuls in `dtype` at `threads`
    intra-op threads (0: torch's default), after one untimed warm-up. The best, not the median:
    a peak is what the cores can reach, and a shared machine only ever slows a run down."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen).to(_TORCH_DTYPES[dtype])
        b = torch.randn(size, size, generator=gen).to(_TORCH_DTYPES[dtype])
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    tflops = 2 * size**3 / best / 1e12
    return tflops, f"calibration: best of {repeats} {size}^3 {dtype} matmuls, {used} threads"


def device_peak(device: str, device_name: str, dtype: str, threads: int = 0) -> tuple[float | None, str]:
    """The peak a sweep's rows are measured against: the GPU table on CUDA (calibration where the
    table lacks the GPU is not attempted: a single matmul does not reach a GPU's peak), the
    calibration matmul on the CPU."""
    if device.startswith("cuda"):
        return gpu_peak_tflops(device_name, dtype)
    return calibrate_cpu_peak(dtype, threads)


def utilisation(step_flops: int | None, median_ms: float | None, peak_tflops: float | None):
    """(achieved TFLOP/s, MFU) of a step; None where a factor is missing."""
    if not step_flops or not median_ms:
        return None, None
    achieved = step_flops / (median_ms / 1e3) / 1e12
    return achieved, (achieved / peak_tflops if peak_tflops else None)
