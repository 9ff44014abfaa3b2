"""Which kernels actually ran: the ATen ops a step dispatches, recorded by a TorchDispatchMode.

Fused paths can fall back silently (on the CPU, `scaled_dot_product_attention` with dropout in
training takes the math path and materialises L x L), so the harness records what ran instead of
what was asked for. Composite ops are recorded by what they decompose into, also under
`inference_mode` (where they reach the mode whole): the fused CPU kernel shows as
`_scaled_dot_product_flash_attention_for_cpu`, its math fallback as `_safe_softmax` + `bmm`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from torch.utils._python_dispatch import TorchDispatchMode

ATTENTION_MARKERS = ("scaled_dot_product", "softmax")


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # Under inference_mode the autograd key is skipped, so composite ops (CompositeImplicitAutograd,
        # e.g. scaled_dot_product_attention) arrive whole; run their decomposition under this mode so
        # the kernel that really runs underneath is what gets recorded (as FlopCounterMode does).
        if _can_decompose(func):
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        self.ops[func._overloadpacket.__name__] += 1
        return func(*args, **kwargs)


def _can_decompose(func) -> bool:
    """Whether `func` has a composite decomposition; prim ops (prim::device, seen under fake
    tensors) are not in the dispatcher's table and have none."""
    try:
        return func._can_decompose()
    except RuntimeError:
        return False


def dispatched_ops(fn: Callable[[], object]) -> Counter:
    """Counter of ATen op names (overload packets) that `fn()` dispatched, backward included."""
    recorder = _OpRecorder()
    with recorder:
        fn()
    return recorder.ops


def attention_ops(ops: Counter) -> str:
    """The attention-related ops among `ops`, space-separated and sorted ('' if none).

    The loss's log_softmax is not attention and is left out.
    """
    return " ".join(sorted(name for name in ops if any(m in name for m in ATTENTION_MARKERS)
                           and "log_softmax" not in name))
