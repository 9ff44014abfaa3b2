"""Measurements for the benchmark: wall time, peak memory and FLOPs, one module each."""

from bench.measure.flops import FvcoreCount, check_nonzero, flopcounter_flops, fvcore_forward_flops
from bench.measure.memory import (
    CudaPeak,
    NvmlSampler,
    TrackedPeak,
    cuda_allocator_peak,
    tracked_peak,
)
from bench.measure.timing import TimingResult, measure_time, set_cpu_threads

__all__ = [
    "CudaPeak",
    "FvcoreCount",
    "NvmlSampler",
    "TimingResult",
    "TrackedPeak",
    "check_nonzero",
    "cuda_allocator_peak",
    "flopcounter_flops",
    "fvcore_forward_flops",
    "measure_time",
    "set_cpu_threads",
    "tracked_peak",
]
