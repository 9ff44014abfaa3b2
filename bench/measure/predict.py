"""Predicted cost of one step without running it: the step under fake tensors.

Under ``torch._subclasses.fake_tensor.FakeTensorMode`` every op computes only its output's
shape, dtype and device; no storage is allocated and nothing is computed, so a step at the
paper's B=2048 takes seconds and no memory. The same dispatch-level tools then see the same
graph as a real step:

- memory: ``MemTracker`` (bench.measure.memory.tracked_peak) counts fake storages exactly as it
  counts real ones (numel x element size per storage, by category), so on the CPU the predicted
  peak equals the measured one byte for byte (tests/test_predict.py checks every model);
- FLOPs: ``FlopCounterMode`` counts the fake step's products (same formulas, same graph).

How a workload becomes fake (:func:`fake_workload`): the model is built for real on the CPU
(its parameters only: small next to a step's activations), copied into fake tensors with
``FakeCopyMode`` (parameters stay parameters), and the batch, the optimizer and the step are made
inside the fake mode (``bench.workload.make_workload``). Building the model under the fake mode
directly fails for some models (``trunc_normal_`` reads a value: LRURec), which is why the real
build comes first; its values never matter.

A CUDA target on a machine without CUDA: fake CUDA tensors cannot be used with a CPU-only torch
(creating one works, but the first indexing op fails with "PyTorch is not linked with support for
cuda devices": the device guard needs CUDA's hooks). The prediction for a CUDA target is therefore
the CPU graph with what CUDA does differently applied:
- every storage rounded up to 512 B, the caching allocator's smallest block
  (:func:`cuda_storage_rounding`; MemTracker does the same on a real CUDA device);
- dropout as CUDA runs it (:func:`cuda_kernels`): ATen's `dropout` takes the fused
  `native_dropout` kernel only for CUDA tensors (`is_fused_kernel_acceptable`), which keeps a
  bool mask (1 B per element) for backward; on the CPU it multiplies by a mask of the input's
  dtype (4 B per element in fp32), so the CPU graph holds 3 B per element more per dropout site.
  For RecGRELA at the paper's point that was 0.37 GiB per layer of the CPU graph's 2.86.
- attention with dropout as CUDA runs it (:func:`cuda_kernels` too): with dropout the CPU runs
  `scaled_dot_product_attention` in its math form, keeping the L x L probabilities and their
  dropout mask; CUDA keeps neither (memory-efficient kernel in fp32, flash in half precision).
  At the paper's point (4 layers) this took SASRec's prediction from 21.71 to 7.09 GiB.
What no prediction sees, on any device: the CUDA context (~0.5 GiB), the caching allocator's reserve and fragmentation, and the
scratch space of fused kernels (cuDNN, cuBLAS workspaces).

What cannot be predicted: code that reads a tensor's value on the host (``.item()``, a
data-dependent shape) raises DataDependentOutputException under fake tensors; fvcore, which traces
a real forward, is not run.
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.overrides import TorchFunctionMode

from bench.measure.memory import TrackedPeak, tracked_peak

__all__ = ["CUDA_MIN_BLOCK_BYTES", "PREDICTION_CPU", "PREDICTION_CUDA", "cuda_kernels",
           "cuda_storage_rounding", "fake_workload", "predicted_peak", "prediction_method"]

CUDA_MIN_BLOCK_BYTES = 512  # c10/cuda/CUDACachingAllocator.cpp kMinBlockSize: every block is a multiple
PREDICTION_CPU = "fake tensors (FakeTensorMode) on the CPU: exact storage bytes, nothing allocated"
PREDICTION_CUDA = ("fake tensors (FakeTensorMode) on the CPU graph with CUDA's fused dropout (bool mask) and fused "
                   "attention with dropout (memory-efficient kernel), every storage rounded up to 512 B as the CUDA "
                   "caching allocator does; CUDA context, allocator reserve and kernel workspaces not included")


def prediction_method(target_device: str) -> str:
    """The `prediction` cell of a predicted row for a `target_device` ("cpu" or "cuda[:i]")."""
    return PREDICTION_CUDA if target_device.startswith("cuda") else PREDICTION_CPU


@contextlib.contextmanager
def cuda_storage_rounding(block_bytes: int = CUDA_MIN_BLOCK_BYTES) -> Iterator[None]:
    """Inside: MemTracker counts every storage of any device rounded up to a multiple of
    `block_bytes`, as it does on a CUDA device (torch.distributed._tools.mem_tracker, a private
    API: its per-storage size method is replaced for the duration and restored after)."""
    from torch.distributed._tools import mem_tracker

    info = mem_tracker._WeakRefInfo
    original = info._calculate_mem_consumed

    def rounded(self) -> int:
        return math.ceil(self.size * self.element_size / block_bytes) * block_bytes

    info._calculate_mem_consumed = rounded
    try:
        yield
    finally:
        info._calculate_mem_consumed = original


SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")


class _CudaKernels(TorchFunctionMode):
    """Two ops as ATen runs them for CUDA tensors, on any tensors:
    - `F.dropout` in training: the fused `native_dropout` (output and a bool mask) instead of the
      CPU's multiply by a mask of the input's dtype;
    - `F.scaled_dot_product_attention` with dropout: CUDA's memory-efficient kernel (what it picks
      in fp32 with dropout; the flash kernel it picks in half precision keeps the same kind of
      tensors: the output, the logsumexp and the RNG state) instead of the CPU's math form, which
      materialises the L x L probabilities and their dropout mask."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.dropout:
            bound = dict(zip(("input", "p", "training", "inplace"), args), **kwargs)
            x, p = bound["input"], bound.get("p", 0.5)
            if bound.get("training", True) and not bound.get("inplace", False) and 0 < p < 1 and x.numel() > 0:
                return torch.native_dropout(x, p, True)[0]
        if func is torch.nn.functional.scaled_dot_product_attention:
            bound = dict(zip(SDPA_ARGS, args), **kwargs)
            # the kernel has no CPU implementation, only shapes (meta): fake or meta tensors only
            query = bound["query"]
            if bound.get("dropout_p", 0.0) > 0 and not bound.get("enable_gqa", False) and (
                    query.is_meta or isinstance(query, FakeTensor)):
                return torch.ops.aten._scaled_dot_product_efficient_attention(
                    bound["query"], bound["key"], bound["value"], bound.get("attn_mask"), True,
                    bound["dropout_p"], bound.get("is_causal", False), scale=bound.get("scale"))[0]
        return func(*args, **kwargs)


def fake_workload(name: str, config: dict, kind: str, batch_size: int, seed: int = 0, dtype: str = "fp32",
                  loss: str = "ce"):
    """(workload, fake mode): the step of `bench.workload.build_workload` with the same model
    (seeded), batch and optimizer, every tensor fake; run it and measure it inside the mode."""
    from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode

    import models
    from bench.workload import check_kind_and_dtype, make_batch, make_workload

    check_kind_and_dtype(kind, dtype)
    torch.manual_seed(seed)
    real = models.build(name, **config)
    item_seq, target = make_batch(batch_size, config["max_len"], config["n_items"], seed, full=kind == "stream")
    mode = FakeTensorMode()
    with FakeCopyMode(mode):
        model = copy.deepcopy(real)
    del real
    fake_seq, fake_target = mode.from_tensor(item_seq), mode.from_tensor(target)
    with mode:
        workload = make_workload(model, fake_seq, fake_target, kind, dtype, loss=loss)
    return workload, mode


def predicted_peak(workload, mode, target_device: str = "cpu") -> TrackedPeak:
    """The tracked peak of one steady-state step of a fake `workload` (one untracked step first,
    as a measured row's peak follows its timed steps), for `target_device`: exact bytes for the
    CPU; for CUDA, CUDA's kernels (`cuda_kernels`) and storages rounded to 512 B."""
    cuda = target_device.startswith("cuda")
    with mode, cuda_kernels(cuda):
        workload.step()
        with cuda_storage_rounding() if cuda else contextlib.nullcontext():
            return tracked_peak(workload.step, *workload.tracked, device="cpu")


def cuda_kernels(cuda: bool = True) -> contextlib.AbstractContextManager:
    """Inside (when `cuda`): every `F.dropout` (so every `nn.Dropout`) in training runs the kernel
    CUDA runs (`torch.native_dropout`, a bool mask kept for backward), also on CPU tensors; and
    attention with dropout runs CUDA's memory-efficient kernel, on fake or meta tensors (see
    `_CudaKernels`). Nothing changes when not `cuda`."""
    return _CudaKernels() if cuda else contextlib.nullcontext()
