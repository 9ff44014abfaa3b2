"""First-order diagonal linear recurrence along time: a work-efficient log-depth scan, 2-tensor bwd.

Recurrence (elementwise over the channel axes, no state-expansion axis N):

    h_t = a_t * h_{t-1} + b_t,    t = 0..L-1,    h_{-1} = h0 (default 0)

with a, b, h of shape [B, L, *channels], real (float32/float64) or complex (complex64/128).
This is the scan of LRURec (one complex lambda shared by every step and row: the official code
also gates the carry with its padding mask, which the suite's right padding makes output-neutral
for the real positions, so a_t = lambda here; see models/lrurec.py) and of RecBLR (real
input-dependent gates a_t); see
docs/models-recurrent.md sections 5.3 and 6.2.

Algorithms
----------
- `linear_scan` (fast path, a custom ``torch.autograd.Function``).
  - Forward: work-efficient odd-even scan (recursive pairing; Blelloch's up-sweep + down-sweep)
    under no_grad, `_pairing_scan`. On a level of n elements, pair (2k, 2k+1) folds into its
    later element, x_{2k+1} <- b_{2k+1} + a_{2k+1} x_{2k}, with the pair gate a_{2k+1} a_{2k}; the
    n // 2 folded elements (a stride-2 time view) are the next level's problem; once it returns
    they are final states, and the others get h_{2k} = b_{2k} + a_{2k} h_{2k-1} in one vectorised
    multiply-add. An odd n leaves its first element unpaired, so any L works (no padding).
    Level 0 reads b and writes h (no separate copy of b); deeper levels work in place on strided
    time views of h (no copies, no transients). The pair gates of all levels (`_gate_levels`)
    are built once when ``a`` is shared by the batch, else per batch chunk.
    Work O(B L P): two multiply-adds per element of h (n // 2 up + ~n / 2 down per level,
    a geometric series) plus L - 1 gate products per gate row; depth 2 ceil(log2 L) levels of
    3 tensor ops each (up-sweep, gate product, down-sweep).
  - Backward: the adjoint is again a first-order linear recurrence, run from the end:
        dh_t = g_t + conj(a_{t+1}) * dh_{t+1},    dh_L := 0
        grad_b_t = dh_t,    grad_a_t = dh_t * conj(h_{t-1}),    grad_h0 = conj(a_0) * dh_0
    (g is the incoming gradient; conj is the identity for real dtypes). This follows PyTorch's
    convention that a complex gradient is the conjugate Wirtinger derivative dL/d(z*), which for
    the holomorphic map (a, h_prev, b) -> a*h_prev + b gives exactly these conj factors; the
    test file checks them with gradcheck on complex128. The reverse recurrence runs with the
    same odd-even scan mirrored in time (pairs counted from the end, on strided views: no flip
    copies), with the same work and depth. Its gates conj(a) are materialised once when ``a`` is
    shared; with a complex gate per row the chunk instead runs conjugated on a's own gates,
    conj(dh_t) = conj(g_t) + a_{t+1} conj(dh_{t+1}), and is conjugated back while in cache.
    grad_a is computed chunk by chunk right after the chunk's scan and summed over the axes
    along which ``a`` was broadcast.
  - Batch chunking: rows are independent, so both scans run over batch chunks of about
    `_CHUNK_BYTES` (2 MiB of h): a chunk is read, scanned through all its levels and finished
    (grad_a included) while it sits in cache. 1 to 4 MiB measured alike on one CPU thread at
    B=64, L=1024, P=128 complex64; one full-batch pass per level is ~1.5x slower.
  - Memory class: saves only ``a`` (as given, so a broadcast [1, L, P] gate stays small) and the
    states ``h`` -- 2 tensors of the input size, the class of RecBLR's official Triton kernel.
    Peak of fwd+bwd beyond the inputs and the upstream gradient: h + dh (= grad_b) + grad_a,
    plus the gate levels of one chunk (< 1 chunk, one workspace reused by every chunk; a shared
    gate's levels are < 1 gate tensor) plus, when ``a`` is shared over the batch, one chunk for
    the batch-summed grad_a. Plain autograd through log-depth rounds keeps tensors per round
    (doubling: ~2 per round, 2 ceil(log2 L)).
  - Speed vs the loop (scripts/bench_linear_scan.py, B=64, L=1024, P=128 complex64, gate
    [1, L, P], fwd+bwd; reports/cpu-lrurec-scan-paths/ on a quiet 2-core VM): 0.56x the loop's
    time on 1 CPU thread and 0.44x on 2 when both are timed interleaved (``--interleave``);
    0.91x timed first in a fresh process, where its input-sized outputs (h, dh) pay first-touch
    page faults (~36 ms per 64 MiB there, above glibc's mmap threshold) more than the loop's
    small per-step tensors from the heap. Without those faults (tensors already touched) the
    forward pass alone takes ~1.4x the time of a preallocated no-grad loop on one thread: two
    multiply-adds per element instead of one, on a memory-bound core.
- `linear_scan_ref` (oracle, out of ``__all__``): a Python loop over time with ``unbind(1)`` and
  ``torch.stack`` under plain autograd. O(B L P) work, L sequential steps; autograd keeps one
  state per step (1 tensor of the input size) plus the stacked output.

Accepted shapes: ``b`` is [B, L, *channels]; ``a`` is anything that broadcasts to ``b``'s shape
with the usual right-aligned rules ([B, L, P], [1, L, P], [L, P], ...); ``h0`` anything that
broadcasts to [B, *channels]. All three must share one dtype among float32, float64, complex64,
complex128 (low-precision dtypes are refused: the complex scan needs fp32, section 8 item 7).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["linear_scan"]

_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _check_inputs(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate dtypes and shapes; return ``a`` as a view with b.ndim dims and time axis of size L,
    and ``h0`` as a view with b.ndim - 1 dims (no data is copied)."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"Expected tensors a and b, got {type(a).__name__} and {type(b).__name__}.")
    if b.dim() < 2:
        raise ValueError(f"Expected b of shape [B, L, *channels] (>= 2 dims), got {tuple(b.shape)}.")
    if b.dtype not in _DTYPES:
        raise ValueError(f"Expected b of dtype float32/float64/complex64/complex128, got {b.dtype}.")
    if a.dtype != b.dtype or (h0 is not None and h0.dtype != b.dtype):
        raise ValueError(
            f"Expected a, b (and h0) to share one dtype, got a={a.dtype}, b={b.dtype}"
            + (f", h0={h0.dtype}." if h0 is not None else ".")
        )
    if a.device != b.device or (h0 is not None and h0.device != b.device):
        raise ValueError(
            f"Expected a, b (and h0) on one device, got a on {a.device}, b on {b.device}."
        )
    if a.dim() > b.dim():
        raise ValueError(
            f"Expected a to broadcast to b's shape {tuple(b.shape)}, got {tuple(a.shape)}."
        )
    a = a.reshape((1,) * (b.dim() - a.dim()) + tuple(a.shape))  # view: [B|1, L|1, *channels|1]
    try:
        if torch.broadcast_shapes(a.shape, b.shape) != b.shape:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(
            f"Expected a to broadcast to b's shape {tuple(b.shape)}, got {tuple(a.shape)}."
        ) from None
    a = a.expand(a.shape[0], b.shape[1], *a.shape[2:])  # time axis always explicit (a view)
    if h0 is not None:
        state_shape = (b.shape[0], *b.shape[2:])
        if h0.dim() > len(state_shape):
            raise ValueError(f"Expected h0 to broadcast to {state_shape}, got {tuple(h0.shape)}.")
        h0 = h0.reshape((1,) * (len(state_shape) - h0.dim()) + tuple(h0.shape))
        try:
            ok = torch.broadcast_shapes(h0.shape, state_shape) == torch.Size(state_shape)
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"Expected h0 to broadcast to {state_shape}, got {tuple(h0.shape)}.")
    return a, h0


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``grad`` over the leading and size-1 axes of ``shape`` that it was broadcast along."""
    lead = grad.dim() - len(shape)
    dims = list(range(lead))
    dims += [lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1]
    if dims:
        grad = grad.sum(dim=dims, keepdim=True)
    return grad.reshape(shape)


def _level_sizes(n: int) -> list[int]:
    """Time lengths of the gate levels 1, 2, .. of `_gate_levels` for a problem of n elements."""
    sizes = []
    while n >= 4:  # the next level has n // 2 >= 2 elements, hence gates to combine
        n //= 2
        sizes.append(n - 1)
    return sizes


def _gate_levels(
    gates: torch.Tensor, reverse: bool, buf: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """The gates of every level of `_pairing_scan`, level 0 being ``gates`` itself (no copy).

    ``gates`` is [R, n-1, *ch] (R = 1 for a gate shared over the batch; a conj bit is resolved
    here, since every multiply-add would otherwise materialise it again). forward: gates[:, i] is
    the gate of position i+1 (a_{i+1}); reverse: gates[:, j] is the gate of position j, the factor
    of h_{j+1}. Level d+1 holds the gates of the pairs formed at level d, n_d // 2 - 1 of them:
    forward a_{2k+1} a_{2k} of pair k = 1.. (pair 0 needs none), reverse c_j c_{j+1} of the pair
    (j, j+1), j = s, s+2, .. with s = n_d % 2 (the last pair needs none). Levels 1.. take
    sum(`_level_sizes`) < n - 1 time steps in all, written into ``buf`` (a flat workspace reused
    across batch chunks) when given, else freshly allocated.
    """
    gates = gates.resolve_conj()
    levels = [gates]
    R, ch = int(gates.shape[0]), tuple(int(c) for c in gates.shape[2:])  # ints, also under jit tracing
    row = 1
    for c in ch:
        row *= c
    n, off = int(gates.shape[1]) + 1, 0
    for size in _level_sizes(n):
        g, no = levels[-1], n // 2
        if reverse:
            s = n % 2
            lhs, rhs = g[:, s : n - 2 : 2], g[:, s + 1 :: 2]
        else:
            lhs, rhs = g[:, 2::2], g[:, 1 : 2 * no - 2 : 2]
        if buf is None:
            levels.append(torch.mul(lhs, rhs))  # [R, no - 1, *ch]
        else:
            out = buf[off : off + R * size * row].view(R, size, *ch)
            off += R * size * row
            levels.append(torch.mul(lhs, rhs, out=out))
        n = no
    return levels


def _pairing_scan(
    out: torch.Tensor,
    levels: list[torch.Tensor],
    reverse: bool,
    src: torch.Tensor | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Work-efficient log-depth scan along dim 1 into ``out`` [R, L, *ch]; returns ``out``.

    forward (reverse=False): out_t = src_t + a_t * out_{t-1}  (t = 1..L-1), out_0 = src_0 + init
    reverse (reverse=True):  out_j = src_j + c_j * out_{j+1}  (j = L-2..0), out_{L-1} = src_{L-1}
    with a_t = levels[0][:, t-1] and c_j = levels[0][:, j]. ``src`` (default: ``out`` itself,
    scanned in place) is only read; ``init`` (forward only, [R|1, *ch]) is the folded initial
    state a_0 h0. ``levels`` comes from `_gate_levels` (gates broadcastable against the rows) and
    is never written to.

    Odd-even recursion (Blelloch's up-sweep + down-sweep) on strided time views, no transients:
      up-sweep, per level of n elements: fold each pair into its later element (forward: pairs
      (2k, 2k+1); reverse: pairs (j, j+1) counted from the end, the earlier element kept), one
      multiply-add over n // 2 elements; the kept elements, a stride-2 view of ``out``, are the
      next level's problem (an odd n leaves one element unpaired: the first forward, the last
      reverse). Level 0 reads ``src`` and writes ``out``, so loading ``src`` costs no extra pass.
      down-sweep, from the deepest level back: every element that was not kept gets the final
      state of its neighbour (already final) in one multiply-add over about n / 2 elements.
    Work: two multiply-adds per element (plus the gate levels); depth 2 ceil(log2 L).
    """
    L = int(out.shape[1])
    if src is None or src is out:
        src = out
        if init is not None and L > 0:  # in place: fold the initial state first
            out[:, 0].add_(init)
            init = None
    if L == 0:
        return out
    views = []
    x, xs = out, src  # this level's output and input (the same tensor below level 0)
    for g in levels if L >= 2 else ():  # up-sweep; n >= 2 on every level
        n = int(x.shape[1])
        if reverse:  # y_j += c_j y_{j+1} for j = s, s+2, .., n-2
            s = n % 2
            keep, src_keep, part, gk = x[:, s::2], xs[:, s::2], xs[:, s + 1 :: 2], g[:, s::2]
        else:  # x_{2k+1} += a_{2k+1} x_{2k}
            keep, src_keep, part, gk = x[:, 1::2], xs[:, 1::2], xs[:, 0 : n - 1 : 2], g[:, 0::2]
        if xs is x:
            keep.addcmul_(gk, part)
        else:
            torch.addcmul(src_keep, gk, part, out=keep)
            if init is not None:  # pair 0 reads out_0 = src_0 + init, not src_0
                keep[:, 0].addcmul_(g[:, 0], init)
        views.append((x, xs, g))
        x = xs = keep
    for x, xs, g in reversed(views):  # down-sweep: the elements the up-sweep did not keep
        n = int(x.shape[1])
        if reverse:
            s = n % 2
            if n - 2 <= 1 - s:
                continue
            tgt = slice(1 - s, n - 2, 2)  # j = 1-s, 3-s, .., n-3: y_j += c_j y_{j+1}
            part = x[:, 2 - s : n - 1 : 2]
        elif n >= 3:
            tgt = slice(2, None, 2)  # t = 2, 4, ..: x_t += a_t x_{t-1}
            part = x[:, 1 : n - 1 : 2]
        else:
            continue
        if xs is x:
            x[:, tgt].addcmul_(g[:, tgt] if reverse else g[:, 1::2], part)
        else:
            torch.addcmul(xs[:, tgt], g[:, tgt] if reverse else g[:, 1::2], part, out=x[:, tgt])
    edge = L - 1 if reverse else 0  # the element no pair of level 0 writes
    if init is not None:
        torch.add(src[:, edge], init, out=out[:, edge])
    elif src is not out:
        out[:, edge].copy_(src[:, edge])
    return out


_CHUNK_BYTES = 2 * 2**20  # target bytes of h per batch chunk (at least one row per chunk)


def _row_chunks(rows: int, row_bytes: int) -> list[slice]:
    """Batch slices of about `_CHUNK_BYTES` each (at least one row): the scan is independent per
    row, so each chunk is loaded, scanned level by level and finished while it sits in cache,
    and the transients (gate levels, grad_a partial sums) stay chunk-sized."""
    step = max(1, _CHUNK_BYTES // max(1, row_bytes))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


class _GateSource:
    """Gate levels per batch chunk: built once when ``a`` is shared by all rows (a.shape[0] == 1),
    else per chunk into one workspace of < 1 chunk of gates, reused by every chunk."""

    def __init__(self, a: torch.Tensor, rows_per_chunk: int, reverse: bool):
        self.gates, self.reverse = a[:, 1:], reverse  # [B|1, L-1, *ch|1]
        self.per_row = a.shape[0] > 1
        if self.per_row:
            row = self.gates[:1].numel() // max(1, self.gates.shape[1])  # channel elements
            size = sum(_level_sizes(a.shape[1])) * row * min(rows_per_chunk, a.shape[0])
            self.buf = a.new_empty(size, dtype=a.dtype).resolve_conj()
        else:
            self.levels = _gate_levels(self.gates, reverse)

    def __call__(self, sl: slice) -> list[torch.Tensor]:
        if self.per_row:
            return _gate_levels(self.gates[sl], self.reverse, self.buf)
        return self.levels


def _rows(t: torch.Tensor, sl: slice) -> torch.Tensor:
    """Rows ``sl`` of a tensor whose batch axis may be 1 (broadcast)."""
    return t[sl] if t.shape[0] > 1 else t


class _LinearScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, a_shape: torch.Size):
        # a: [B|1, L, *ch|1] (time axis explicit); b: [B, L, *ch]; h0: [B|1, *ch|1] or None
        with torch.no_grad():
            h = torch.empty_like(b, memory_format=torch.contiguous_format)  # [B, L, *ch]
            B, L = (int(v) for v in h.shape[:2])
            if L > 0:
                chunks = _row_chunks(B, h[:1].numel() * h.element_size())
                gate_src = _GateSource(a, chunks[0].stop, reverse=False)
                for sl in chunks:  # each chunk is read from b, scanned and finished in cache
                    init = None if h0 is None else _rows(a, sl)[:, 0] * _rows(h0, sl)  # a_0 h0
                    _pairing_scan(h[sl], gate_src(sl), False, src=b[sl], init=init)
                del gate_src
        ctx.save_for_backward(a, h, h0)  # a as given (a view of the caller's tensor), states h
        ctx.a_shape = a_shape
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: torch.Tensor):
        a, h, h0 = ctx.saved_tensors
        need_a, need_b, need_h0 = ctx.needs_input_grad[:3]
        B, L = (int(v) for v in h.shape[:2])
        # Adjoint recurrence, run from the end: dh_t = g_t + conj(a_{t+1}) dh_{t+1}. Its gates
        # conj(a) are materialised once when a is shared by all rows. With a complex gate per row
        # that would be a gate-sized copy per chunk; instead the chunk runs conjugated,
        # conj(dh_t) = conj(g_t) + a_{t+1} conj(dh_{t+1}), on a's own gates, and is conjugated
        # back once while in cache.
        conj_domain = h.is_complex() and a.shape[0] > 1
        dh = torch.empty_like(h)  # [B, L, *ch]; returned as grad_b
        ga = None
        if need_a and L > 0:
            per_row = a.shape[0] > 1 or B == 1
            ga = torch.empty_like(h) if per_row else h.new_zeros((1, *h.shape[1:]))
        if L > 0:
            chunks = _row_chunks(B, h[:1].numel() * h.element_size())
            gate_src = _GateSource(a if conj_domain else a.conj(), chunks[0].stop, reverse=True)
            ga_tmp = None
            if ga is not None and not per_row:
                ga_tmp = torch.empty_like(h[chunks[0]])
            for sl in chunks:
                dc = dh[sl]
                if conj_domain:
                    torch.conj_physical(grad_h[sl], out=dc)
                    _pairing_scan(dc, gate_src(sl), True)  # dc = conj(dh)
                else:
                    _pairing_scan(dc, gate_src(sl), True, src=grad_h[sl])
                if ga is not None:
                    # grad_a_t = dh_t conj(h_{t-1}), h_{-1} = h0 or 0; summed over the batch on
                    # the fly when a is shared by all rows.
                    gc = ga[sl] if per_row else ga_tmp[: dc.shape[0]]
                    if conj_domain:  # = conj(conj(dh_t) h_{t-1}), conjugated below
                        torch.mul(dc[:, 1:], h[sl, :-1], out=gc[:, 1:])
                    elif h.is_complex():
                        torch.conj_physical(h[sl, :-1], out=gc[:, 1:]).mul_(dc[:, 1:])
                    else:
                        torch.mul(dc[:, 1:], h[sl, :-1], out=gc[:, 1:])
                    if h0 is None:
                        gc[:, 0].zero_()
                    else:
                        h0c = _rows(h0, sl)
                        torch.mul(dc[:, 0], h0c if conj_domain else h0c.conj(), out=gc[:, 0])
                    if conj_domain:
                        gc.conj_physical_()
                    if not per_row:
                        ga.add_(gc.sum(dim=0, keepdim=True))
                if conj_domain:
                    dc.conj_physical_()
            del gate_src, ga_tmp
        elif need_a:
            ga = torch.zeros_like(h)
        grad_a = _sum_to(ga, ctx.a_shape) if ga is not None else None
        grad_h0 = None
        if need_h0 and h0 is not None:
            if L > 0:
                grad_h0 = _sum_to(dh[:, 0] * a[:, 0].conj(), h0.shape)  # conj(a_0) dh_0
            else:
                grad_h0 = torch.zeros_like(h0)  # no step reads h0
        return grad_a, dh if need_b else None, grad_h0, None


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t along dim 1, by a work-efficient log-depth (odd-even) scan;
    returns h like ``b``.

    a:  [B, L, *ch] or anything broadcastable to it ([1, L, P], [L, P], [P]); zeros reset the state
    b:  [B, L, *ch] (float32, float64, complex64 or complex128; a and h0 share its dtype)
    h0: optional initial state h_{-1}, broadcastable to [B, *ch]; default zeros
    Saves only ``a`` and ``h`` for backward (see the module docstring); not twice differentiable.
    """
    a_view, h0_view = _check_inputs(a, b, h0)
    # grad_a is summed back to a_view.shape; autograd's expand/reshape views take it to a.shape.
    return _LinearScanFn.apply(a_view, b, h0_view, a_view.shape)


def linear_scan_ref(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Sequential oracle for `linear_scan`, same signature; plain autograd through a time loop.

    a:  [B, L, *ch] or broadcastable to it
    b:  [B, L, *ch]
    h0: optional, broadcastable to [B, *ch]
    The loop splits along time once with ``unbind(1)`` and stacks once at the end (never
    indexes per step, which would make backward O(L^2); models-recurrent.md section 8 item 1).
    """
    a_view, h0_view = _check_inputs(a, b, h0)
    state_shape = (b.shape[0], *b.shape[2:])
    h = h0_view.expand(state_shape) if h0_view is not None else b.new_zeros(state_shape)
    states = []
    for a_t, b_t in zip(a_view.unbind(1), b.unbind(1)):  # L steps of [B|1, *ch] and [B, *ch]
        h = a_t * h + b_t  # h_t = a_t * h_{t-1} + b_t
        states.append(h)
    if not states:
        return b.clone()
    return torch.stack(states, dim=1)  # [B, L, *ch]
