"""Which failures are out-of-memory rows: the CPU's and the CUDA stack's allocation failures, nothing else."""
from __future__ import annotations

import pytest
import torch

from bench.cli import is_out_of_memory


@pytest.mark.parametrize("err", [
    MemoryError(),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.64 GiB total capacity)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_NOT_ENOUGH_MEMORY"),
])
def test_allocation_failures_are_oom(err):
    assert is_out_of_memory(err)


@pytest.mark.parametrize("err", [
    RuntimeError("view size is not compatible with input tensor's size and stride"),
    RuntimeError("out of resource: shared memory, Required: 262144, Hardware limit: 232448"),  # a triton kernel
    ValueError("out of memory"),  # not an allocation error type
    RuntimeError("CUDA error: device-side assert triggered"),
])
def test_other_failures_are_not_oom(err):
    assert not is_out_of_memory(err)
