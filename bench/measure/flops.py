"""FLOP counts with one convention shared by every counter.

Convention: FLOPs = 2 x multiply-adds, counting matrix-product-class ops only: linear, addmm,
mm, bmm, matmul, einsum, convolution and scaled-dot-product attention (SDPA). Element-wise
ops, norms, softmax, pooling/upsampling and embedding lookups are counted by none of our
counters, so the counters agree exactly on the same forward pass. SDPA is counted in full
(QK^T and attention x V over all Lq x Lk pairs): a causal mask does NOT halve the count.

- :func:`fvcore_forward_flops`: ``fvcore.nn.FlopCountAnalysis`` (forward only, via a
  ``torch.jit`` trace). fvcore counts 1 per MAC, so we multiply by 2. Its default table also
  counts norms and upsampling, and ``set_op_handle(name, None)`` does NOT remove a default
  handle (fvcore checks its handle table before its ignore list), so we clear the table and
  register only the matrix-product handles plus one for ``aten::scaled_dot_product_attention``
  (which fvcore lacks); norms/upsample/pooling are then marked ignored. Ops it cannot count
  are returned in ``unsupported_ops`` for the caller to record. The trace freezes control
  flow and loop counts to the example input: count once per input shape.
- :func:`flopcounter_flops`: ``torch.utils.flop_counter.FlopCounterMode`` (2 per MAC,
  counts whatever runs inside, ``.backward()`` included). Run under
  ``sdpa_kernel(SDPBackend.MATH)``: the fused CPU SDPA kernel has no FLOP formula in torch
  2.13 and would count 0, while the math backend decomposes into counted ``bmm``. Works on
  the meta device too (cheap for big sweeps). ``nn.TransformerEncoder``'s eval/no-grad fast
  path still counts 0: count in train mode or with grad enabled.
  torch 2.13's ``convolution_backward`` formula ignores ``groups`` in its grad-weight term, so a
  depthwise conv's backward comes out C times too large; :func:`conv_backward_flops` replaces it
  (each of grad-input and grad-weight costs exactly the forward's multiply-adds).
- :func:`flopcounter_forward_and_step_flops`: one FlopCounterMode pass over a whole train step
  that also yields the forward's share, instead of a second pass over the forward alone: every
  formula FlopCounterMode uses is wrapped to tally its count by phase, and the forward is what was
  counted before the first product the autograd engine ran (``.backward()``). The total is
  FlopCounterMode's own; the per-op formulas are unchanged (tests/test_flops_onepass.py checks
  both figures against the two separate passes for every model).
- Complex tensors: both counters count a product by its shape; a complex multiply-add is 4 real
  ones, so every matrix-product handle/formula here multiplies by 4 when an operand is complex
  (LRURec's complex projections).
- Recurrent ops: a jit trace keeps ``nn.GRU`` as one opaque ``aten::gru`` node, which fvcore
  cannot count; our handle counts its matrix products (every W_ih and W_hh of every layer and
  direction, once per token), which is what FlopCounterMode sees of the ops it decomposes into.
- :func:`check_nonzero`: every counter result goes through it; a silent 0 is an error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["FvcoreCount", "check_nonzero", "conv_backward_flops", "flopcounter_flops",
           "flopcounter_forward_and_step_flops", "fvcore_forward_flops"]

# fvcore default handles that are not matrix-product-class: ignored under our convention.
_FVCORE_NON_MATMUL_OPS: tuple[str, ...] = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)


@dataclass(frozen=True)
class FvcoreCount:
    """fvcore forward count in FLOPs (2 x MACs) plus the ops it saw but could not count."""

    flops: int
    unsupported_ops: dict[str, int]


def import_fvcore() -> tuple[Any, Any]:
    with warnings.catch_warnings():
        # fvcore/nn/focal_loss.py calls torch.jit.script at import: DeprecationWarning on torch>=2.10.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from fvcore.nn import FlopCountAnalysis, jit_handles
        except ImportError as exc:
            raise RuntimeError(
                "fvcore is not installed; install it with `pip install fvcore>=0.1.5.post20221221`."
            ) from exc
    return FlopCountAnalysis, jit_handles


def _sdpa_mac_handle(get_shape: Callable[[Any], list[int] | None]) -> Callable[[list, list], int]:
    def sdpa_macs(inputs: list, outputs: list) -> int:
        q, k, v = (get_shape(inputs[i]) for i in range(3))
        if q is None or k is None or v is None or len(q) < 2:
            raise RuntimeError(
                "aten::scaled_dot_product_attention has q/k/v without complete shapes in the trace; "
                "cannot count its FLOPs."
            )
        batch = math.prod(q[:-2])
        lq, e = q[-2], q[-1]
        lk, ev = k[-2], v[-1]
        # QK^T: batch*Lq*Lk*E MACs; attn @ V: batch*Lq*Lk*Ev MACs. Full matrix, no causal halving.
        return int(batch * lq * lk * e + batch * lq * lk * ev)

    return sdpa_macs


def _gru_mac_handle(get_shape: Callable[[Any], list[int] | None]) -> Callable[[list, list], int]:
    """aten::gru, padded (``.input``) or packed (``.data``): each token meets every weight matrix
    of the params list once (W_ih and W_hh per layer and direction); biases are not products."""

    def gru_macs(inputs: list, outputs: list) -> int:
        lists = [v for v in inputs if v.type().kind() == "ListType"]
        if len(lists) != 1 or lists[0].node().kind() != "prim::ListConstruct":
            raise RuntimeError("aten::gru without a traced params list; cannot count its FLOPs.")
        weights = [get_shape(w) for w in lists[0].node().inputs()]
        out = get_shape(outputs[0])  # [B, L, dirs*H] (batch first or not) or packed [T, dirs*H]
        if out is None or any(w is None for w in weights):
            raise RuntimeError("aten::gru has tensors without complete shapes in the trace; "
                               "cannot count its FLOPs.")
        tokens = math.prod(out[:-1])
        return int(tokens * sum(math.prod(w) for w in weights if len(w) == 2))

    return gru_macs


def _complex_aware_handle(handle: Callable[[list, list], Any]) -> Callable[[list, list], Any]:
    """fvcore handle x4 when the first operand is complex (a complex MAC = 4 real MACs)."""

    def counted(inputs: list, outputs: list):
        macs = handle(inputs, outputs)
        try:
            scalar_type = inputs[0].type().scalarType() or ""
        except (AttributeError, RuntimeError):
            scalar_type = ""
        return 4 * macs if "Complex" in scalar_type else macs

    return counted


def fvcore_forward_flops(module: torch.nn.Module, inputs: tuple) -> FvcoreCount:
    """Forward FLOPs (2 x MACs) of ``module(*inputs)`` counted by fvcore under our convention."""
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"Expected an nn.Module to trace, got {type(module).__name__}.")
    if not isinstance(inputs, tuple) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ValueError(
            "Expected inputs to be a tuple of tensors passed positionally as module(*inputs), "
            f"got {type(inputs).__name__}"
            + (f" containing {[type(t).__name__ for t in inputs]}." if isinstance(inputs, tuple) else ".")
        )
    FlopCountAnalysis, jh = import_fvcore()
    with torch.no_grad():
        analysis = FlopCountAnalysis(module, inputs)
        analysis.clear_op_handles()
        analysis.set_op_handle(
            **{
                "aten::addmm": _complex_aware_handle(jh.addmm_flop_jit),
                "aten::bmm": _complex_aware_handle(jh.bmm_flop_jit),
                "aten::_convolution": jh.conv_flop_jit,
                "aten::einsum": _complex_aware_handle(jh.einsum_flop_jit),
                "aten::matmul": _complex_aware_handle(jh.matmul_flop_jit),
                "aten::mm": _complex_aware_handle(jh.matmul_flop_jit),
                "aten::linear": _complex_aware_handle(jh.linear_flop_jit),
                "aten::scaled_dot_product_attention": _sdpa_mac_handle(jh.get_shape),
                "aten::gru": _complex_aware_handle(_gru_mac_handle(jh.get_shape)),
            }
        )
        analysis.set_op_handle(**dict.fromkeys(_FVCORE_NON_MATMUL_OPS, None))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        macs = analysis.total()
        unsupported = {str(k): int(v) for k, v in analysis.unsupported_ops().items()}
    return FvcoreCount(flops=2 * int(macs), unsupported_ops=unsupported)


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                        transposed, _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Backward of a (grouped) convolution: forward FLOPs once per gradient requested."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _complex_aware_formula(op: Any) -> Callable[..., int]:
    """torch's registered formula for `op`, x4 when an operand is complex."""
    from torch.utils.flop_counter import flop_registry

    base = flop_registry[op]  # already takes raw arguments (shape-wrapped inside)

    def formula(*args, out_val=None, **kwargs) -> int:
        flops = base(*args, out_val=out_val, **kwargs)
        return 4 * flops if any(isinstance(a, torch.Tensor) and a.is_complex() for a in args) else flops

    formula._get_raw = True  # FlopCounterMode passes tensors, so the dtype is visible
    return formula


def _custom_mapping() -> dict:
    """FlopCounterMode's `custom_mapping` under our convention (complex x4, grouped conv backward)."""
    aten = torch.ops.aten
    mapping: dict = {op: _complex_aware_formula(op) for op in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm)}
    mapping[aten.convolution_backward] = conv_backward_flops
    return mapping


def _count(fn: Callable[[], object], mapping: dict) -> int:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return int(counter.get_total_flops())


def flopcounter_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything ``fn()`` runs (backward included if it calls ``.backward()``)."""
    if not callable(fn):
        raise ValueError(f"Expected a callable taking no arguments, got {type(fn).__name__}.")
    return _count(fn, _custom_mapping())


class _PhaseTally:
    """Every formula FlopCounterMode would use (torch's registry with our `custom_mapping` on top),
    each wrapped to add the count it returns, unchanged, to the phase it ran in: `forward` until the
    autograd engine first runs a counted product, `backward` inside the engine, `after` outside it
    afterwards (an optimizer step: Adam runs no counted product)."""

    def __init__(self, mapping: dict):
        from torch.utils.flop_counter import flop_registry, shape_wrapper

        self.forward = self.backward = self.after = 0
        self.in_backward_seen = False
        merged = dict(flop_registry)
        merged.update({op: f if getattr(f, "_get_raw", False) else shape_wrapper(f) for op, f in mapping.items()})
        self.mapping = {op: self._wrap(f) for op, f in merged.items()}

    def _wrap(self, formula: Callable[..., int]) -> Callable[..., int]:
        def tallied(*args, **kwargs) -> int:
            flops = formula(*args, **kwargs)
            if torch._C._current_graph_task_id() != -1:  # inside the autograd engine (ModTracker.is_bw)
                self.in_backward_seen = True
                self.backward += flops
            elif self.in_backward_seen:
                self.after += flops
            else:
                self.forward += flops
            return flops

        tallied._get_raw = True  # already takes FlopCounterMode's raw arguments
        return tallied


def flopcounter_forward_and_step_flops(step: Callable[[], object]) -> tuple[int, int]:
    """(forward, whole step) FLOPs of ``step()`` from one FlopCounterMode pass: the whole step is
    FlopCounterMode's total, the forward what it counted before the autograd engine ran its first
    counted product. For a step without backward (inference) both are the total."""
    if not callable(step):
        raise ValueError(f"Expected a callable taking no arguments, got {type(step).__name__}.")
    tally = _PhaseTally(_custom_mapping())
    total = _count(step, tally.mapping)
    if tally.forward + tally.backward + tally.after != total:  # every count went through a wrapper
        raise RuntimeError(f"FlopCounterMode counted {total} FLOPs but its formulas returned "
                           f"{tally.forward + tally.backward + tally.after}; the phase split is not exact")
    return tally.forward, total


def check_nonzero(name: str, flops: int) -> int:
    """Return ``flops`` unchanged, or raise ``RuntimeError`` if the counter reported <= 0."""
    if flops <= 0:
        raise RuntimeError(
            f"{name} counted 0 FLOPs (got {flops}); the model's work is in ops this counter does "
            "not see (e.g. a fused kernel without a FLOP formula, or only norms/element-wise ops), "
            "so the figure would be silently wrong."
        )
    return flops
