"""Which kernels actually ran: the ATen ops a step dispatches, recorded by a TorchDispatchMode.

Fused paths can fall back silently (on the CPU, `scaled_dot_product_attention` with dropout in
training takes the math path and materialises L x L), so the harness records what ran instead of
what was asked for. Composite ops arrive here already decomposed: the fused CPU kernel shows as
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
        self.ops[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


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
