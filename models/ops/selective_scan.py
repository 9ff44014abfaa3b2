"""Mamba-1 selective scan (S6) on CPU-friendly PyTorch: a chunk-recompute fast path and two oracles.

Recurrence, per batch row b and channel c, with the state h in R^N and h_{-1} = 0
(docs/models-recurrent.md section 1.3 step 6; ZOH for A, simplified Euler for B, as in mamba_ssm):

    dA_t  = exp(delta_{t,c} * A_{c,:})                      (elementwise over N)
    h_t   = dA_t * h_{t-1} + (delta_{t,c} * u_{t,c}) * B_t
    y_t,c = <C_t, h_t> + D_c * u_{t,c}

Layouts (time-major, as the Mamba block's projections produce them):
u, delta: [B, L, D_in]; A: [D_in, N]; Bm, C: [B, L, N] (one group, shared by all channels);
D: [D_in] or None. delta must already be positive (the caller adds the bias and applies softplus).
y: [B, L, D_in] in u's dtype. All paths compute in fp32 (float64 when an input is float64): they
upcast on entry and cast back on exit.

Paths and their memory class (bytes of one [B, L, D_in, N] fp32 tensor := "1 full"):

- `selective_scan` (fast path; custom ``torch.autograd.Function``, section 1.6 variant C).
  Forward, under no_grad, chunk by chunk (T = chunk_size steps): dA = exp(delta A) and
  dBu = delta*u*B for the whole chunk in one vectorised op each, a Python loop of T in-place
  ``h_t = dA_t * h_{t-1} + dBu_t`` updates (one fused addcmul per step), and the chunk's readout
  <C_t, h_t> as one bmm. Internally a chunk is laid out [T, B, N, D_in] (D_in innermost, so
  every broadcast runs along a contiguous axis; contractions over N are bmm GEMVs, those over
  D_in a product into a spare buffer plus a sum along the contiguous axis).
  Saved for backward: the inputs (by reference, no copies for fp32 inputs) and the state at
  each chunk start, [n_chunks, B, N, D_in] = 1/T full. Backward walks the chunks in reverse,
  recomputes the chunk's dA, dBu and states from its saved start state, runs the adjoint
  ``g_t = ybar_t (x) C_t + dA_{t+1} * g_{t+1}`` in reverse (carrying dA * g across chunk
  boundaries) and forms that chunk's gradients vectorised (formulas in
  `_SelectiveScanFn.backward`). The batch is processed in row blocks sized so that one chunk
  buffer [T, b, N, D_in] holds about `_BLOCK_BYTES` (2 MiB, at least one row), which keeps the
  per-chunk passes in cache. Buffers are allocated once per call and reused: 2 in the forward,
  3 in the backward. So the peak is the [B, L, D_in]- and [B, L, N]-sized inputs, output and
  gradients, plus 1/T full of saved states, plus a few MiB independent of B and L: the memory
  class of the official CUDA kernel, which also recomputes the scan in backward. Not twice
  differentiable. With no input requiring grad (or under no_grad / inference_mode) the same
  forward runs outside the Function and saves nothing.
- `selective_scan_loop` (oracle, out of ``__all__``; section 1.6 variant A): a loop over time via
  ``unbind``, computing exp(delta_t A) inside the loop, under plain autograd. Autograd keeps
  3 to 4 full tensors (h_{t-1}, dA_t and the delta*u*B factors for every step).
- `selective_scan_ref` (oracle and slow baseline, out of ``__all__``; written the way
  mamba_ssm's ``selective_scan_ref`` is): materialises deltaA and deltaB_u as full
  [B, D_in, L, N] tensors and indexes slice ``[:, :, t]`` of them at every step. About 5 full
  tensors kept by autograd, and an O(L^2) backward: every indexed slice's gradient is a
  full-size zero tensor that is then accumulated (section 8 item 1). Kept that way on purpose:
  it is the baseline the benchmark compares against. Never use it in a model that is timed.
- `selective_state_update` (one step, for streaming): h_t and y_t from h_{t-1} and slot t's
  inputs, O(D_in N) whatever t; the loop oracle's time loop runs through it.

The code here is written from the equations in the project docs; no code is copied from
mamba_ssm (Apache-2.0), whose reference only fixed the oracle's structure.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["selective_scan", "selective_state_update"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------- input checks


def _check_inputs(u, delta, A, Bm, C, D) -> torch.dtype:
    """Validate dtypes, devices and shapes; return the compute dtype (float32 or float64)."""
    named = {"u": u, "delta": delta, "A": A, "Bm": Bm, "C": C}
    if D is not None:
        named["D"] = D
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"Expected {name} to be a torch.Tensor, got {type(t).__name__}.")
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"Expected {name} to have a real floating dtype (float16, bfloat16, float32 or "
                f"float64), got {t.dtype}."
            )
        if t.device != u.device:
            raise ValueError(f"Expected all inputs on one device, got u on {u.device} and {name} on {t.device}.")
    if u.dim() != 3:
        raise ValueError(f"Expected u of shape [B, L, D_in] (3 dims), got {tuple(u.shape)}.")
    Bsz, L, D_in = u.shape
    if L < 1:
        raise ValueError(f"Expected a sequence length L >= 1, got u of shape {tuple(u.shape)}.")
    if delta.shape != u.shape:
        raise ValueError(f"Expected delta of shape {tuple(u.shape)} like u, got {tuple(delta.shape)}.")
    if A.dim() != 2 or A.shape[0] != D_in:
        raise ValueError(f"Expected A of shape [D_in={D_in}, N], got {tuple(A.shape)}.")
    N = A.shape[1]
    for name, t in (("Bm", Bm), ("C", C)):
        if t.shape != (Bsz, L, N):
            raise ValueError(f"Expected {name} of shape [B, L, N] = {(Bsz, L, N)}, got {tuple(t.shape)}.")
    if D is not None and D.shape != (D_in,):
        raise ValueError(f"Expected D of shape [D_in] = {(D_in,)} or None, got {tuple(D.shape)}.")
    return torch.float64 if any(t.dtype == torch.float64 for t in named.values()) else torch.float32


def _check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"Expected chunk_size to be an integer >= 1, got {chunk_size!r}.")
    return chunk_size


def _time_major(x: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """Steps s..e-1 of a [B, L, K] tensor as a contiguous [T, B, K] copy (chunk-sized)."""
    return x[:, s:e].transpose(0, 1).contiguous()


# --------------------------------------------------------------------------- chunk kernels
#
# Inside the fast path a chunk's per-step tensors are time-major and keep D_in innermost:
# [T, b, N, D_in] (the states are h^T per row). Every broadcast then runs along a contiguous
# D_in axis, and contractions over N are batched GEMVs over T*b rows.
#
# Rows are independent, so the batch is also split into row blocks of b rows whose chunk buffer
# ([T, b, N, D_in]) holds about `_BLOCK_BYTES`: each chunk's dozen passes over its buffers then
# run in cache. On one CPU thread at B=64, L=200, D_in=128, N=32 this is about 2x faster than
# whole-batch chunks (which are 33 MiB per buffer at T=32). The two (forward) or three
# (backward) buffers are allocated once per call and reused by every block and chunk.

_BLOCK_BYTES = 2 * 2**20  # target bytes of one [T, b, N, D_in] chunk buffer (at least one row)


def _row_blocks(rows: int, row_bytes: int) -> list[slice]:
    """Batch slices whose chunk buffers hold about `_BLOCK_BYTES` each (at least one row)."""
    step = max(1, _BLOCK_BYTES // max(1, row_bytes))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


def _buf(flat: torch.Tensor, *shape: int) -> torch.Tensor:
    """A contiguous [shape] view of the front of a flat reusable buffer."""
    n = 1
    for k in shape:
        n *= k
    return flat[:n].view(shape)


def _chunk_states(delta_c, du_c, A_t, B_c, h0, dA, hs):
    """Fill dA and hs ([T, b, N, D_in] views of reusable buffers) for one chunk; returns nothing.

    delta_c, du_c (= delta * u): [T, b, D_in]; A_t: [N, D_in] (A transposed); B_c: [T, b, N];
    h0: [b, N, D_in], the state before the chunk. hs starts as dBu_t = (delta_t u_t) B_t and is
    scanned in place, so that afterwards hs[t] = h_t.
    """
    torch.mul(delta_c.unsqueeze(2), A_t, out=dA).exp_()  # dA_t = exp(delta_t A)
    torch.mul(du_c.unsqueeze(2), B_c.unsqueeze(-1), out=hs)  # dBu_t = (delta_t u_t) B_t
    hs_t, dA_t = hs.unbind(0), dA.unbind(0)  # per-step views made once (two ops, not 3 T)
    hs_t[0].addcmul_(dA_t[0], h0)  # h_0 = dA_0 h_{-1} + dBu_0
    for t in range(1, len(hs_t)):  # the only sequential part: one fused op per step
        hs_t[t].addcmul_(dA_t[t], hs_t[t - 1])  # h_t = dA_t h_{t-1} + dBu_t


def _contract_n(x_c: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
    """sum_n x[t,b,n] big[t,b,n,d]: x_c [T, b, N], big [T, b, N, D_in] -> [T, b, D_in] (bmm)."""
    T, b, N, D_in = big.shape
    return torch.bmm(x_c.view(T * b, 1, N), big.view(T * b, N, D_in)).view(T, b, D_in)


def _contract_d(big: torch.Tensor, x_c: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """sum_d big[t,b,n,d] x[t,b,d]: big [T, b, N, D_in], x_c [T, b, D_in] -> [T, b, N].

    A product into the spare buffer ``out`` (shaped like ``big``) and a sum over the contiguous
    D_in axis: faster on CPU than the equivalent batched GEMV (bmm), whose rows are tiny.
    """
    return torch.mul(big, x_c.unsqueeze(2), out=out).sum(-1)


def _chunk_inputs(u, delta, Bm, s: int, e: int):
    """delta, delta * u [T, b, D_in] and Bm [T, b, N] for steps s..e-1, time-major copies."""
    delta_c = _time_major(delta, s, e)
    return delta_c, delta_c * _time_major(u, s, e), _time_major(Bm, s, e)


def _scan_forward(u, delta, A, Bm, C, D, chunk_size: int, keep_states: bool):
    """Chunked forward without autograd; returns (y [B, L, D_in], chunk-start states or None).

    The states, when kept, are [n_chunks, B, N, D_in]: h_{s-1} transposed for each chunk start s.
    """
    Bsz, L, D_in = u.shape
    N = A.shape[1]
    T = min(chunk_size, L)
    A_t = A.t().contiguous()  # [N, D_in]
    starts = range(0, L, T)
    states = u.new_empty((len(starts), Bsz, N, D_in)) if keep_states else None
    blocks = _row_blocks(Bsz, T * N * D_in * u.element_size())
    size = T * (blocks[0].stop - blocks[0].start) * N * D_in
    dA_flat, hs_flat = u.new_empty(size), u.new_empty(size)  # reusable chunk buffers
    y = u.new_empty((Bsz, L, D_in))
    for r in blocks:
        b = r.stop - r.start
        u_r, delta_r, B_r, C_r = u[r], delta[r], Bm[r], C[r]  # [b, L, .] views
        h = u.new_zeros((b, N, D_in))  # h_{-1} = 0
        for k, s in enumerate(starts):
            e = min(s + T, L)
            if states is not None:
                states[k, r].copy_(h)
            delta_c, du_c, B_c = _chunk_inputs(u_r, delta_r, B_r, s, e)
            dA, hs = _buf(dA_flat, e - s, b, N, D_in), _buf(hs_flat, e - s, b, N, D_in)
            _chunk_states(delta_c, du_c, A_t, B_c, h, dA, hs)
            y[r, s:e] = _contract_n(_time_major(C_r, s, e), hs).transpose(0, 1)  # <C_t, h_t>
            if e < L:
                h.copy_(hs[-1])  # the buffer is overwritten by the next chunk
    if D is not None:
        y.addcmul_(u, D)  # y_t += D * u_t
    return y, states


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, Bm, C, D, chunk_size):
        with torch.no_grad():
            y, states = _scan_forward(u, delta, A, Bm, C, D, chunk_size, keep_states=True)
        ctx.save_for_backward(u, delta, A, Bm, C, D, states)
        ctx.chunk_size = min(chunk_size, u.shape[1])
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        """Adjoint recurrence, chunk by chunk from the end (g_t = dloss/dh_t, ybar = gy):

            g_t        = ybar_t (x) C_t + dA_{t+1} * g_{t+1}
            dC_t       = sum_c ybar_{t,c} h_{t,c,:}
            G_t        = g_t * h_{t-1} * dA_t
            ddelta_t,c = sum_n G_{t,c,n} A_{c,n} + u_{t,c} sum_n g_{t,c,n} B_{t,n}
            dA_c,n     = sum_{b,t} G_{t,c,n} delta_{t,c}
            du_t,c     = delta_{t,c} sum_n g_{t,c,n} B_{t,n} + D_c ybar_{t,c}
            dB_t,n     = sum_c g_{t,c,n} delta_{t,c} u_{t,c}
            dD_c       = sum_{b,t} ybar_{t,c} u_{t,c}
        """
        u, delta, A, Bm, C, D, states = ctx.saved_tensors
        need_u, need_delta, need_A, need_B, need_C, need_D = ctx.needs_input_grad[:6]
        T_max = ctx.chunk_size
        Bsz, L, D_in = u.shape
        N = A.shape[1]
        gy = gy.to(u.dtype)
        A_t = A.t().contiguous()  # [N, D_in]
        need_g = need_u or need_delta or need_A or need_B  # anything that needs the adjoint g
        grad_u = torch.empty_like(u) if need_u else None
        grad_delta = torch.empty_like(delta) if need_delta else None
        grad_At = A_t.new_zeros((N * D_in,)) if need_A else None  # dA transposed, flat
        grad_B = torch.empty_like(Bm) if need_B else None
        grad_C = torch.empty_like(C) if need_C else None
        # three reusable chunk buffers: dA (then G), the states hs (then scratch), the adjoint g
        # (scratch for dC before g is formed)
        blocks = _row_blocks(Bsz, T_max * N * D_in * u.element_size())
        b_max = blocks[0].stop - blocks[0].start
        dA_flat = u.new_empty(T_max * b_max * N * D_in)
        hs_flat = torch.empty_like(dA_flat)
        g_flat = torch.empty_like(dA_flat) if (need_g or need_C) else None
        ones = u.new_ones((T_max * b_max,)) if need_A else None
        for r in blocks:
            b = r.stop - r.start
            u_r, delta_r, B_r, C_r, gy_r = u[r], delta[r], Bm[r], C[r], gy[r]  # [b, L, .] views
            carry = None  # dA_{s'} * g_{s'} at the first step s' of the chunk after the current one
            for k in reversed(range(states.shape[0])):
                s = k * T_max
                e = min(s + T_max, L)
                T = e - s
                delta_c, du_c, B_c = _chunk_inputs(u_r, delta_r, B_r, s, e)  # [T, b, D_in] x2, [T, b, N]
                C_c, gy_c = _time_major(C_r, s, e), _time_major(gy_r, s, e)  # [T, b, N], [T, b, D_in]
                h0 = states[k, r]  # [b, N, D_in]
                dA, hs = _buf(dA_flat, T, b, N, D_in), _buf(hs_flat, T, b, N, D_in)
                _chunk_states(delta_c, du_c, A_t, B_c, h0, dA, hs)  # recompute the chunk
                if need_C:  # dC_t = sum_c ybar_t,c h_t,c,:  (g's buffer is still free)
                    grad_C[r, s:e] = _contract_d(hs, gy_c, out=_buf(g_flat, T, b, N, D_in)).transpose(0, 1)
                if not need_g:
                    continue
                # adjoint: g_t = ybar_t (x) C_t + dA_{t+1} g_{t+1}, in reverse
                g = torch.mul(C_c.unsqueeze(-1), gy_c.unsqueeze(2), out=_buf(g_flat, T, b, N, D_in))
                if carry is not None:
                    g[T - 1].add_(carry)
                g_t, dA_t = g.unbind(0), dA.unbind(0)  # per-step views made once
                for t in range(T - 2, -1, -1):
                    g_t[t].addcmul_(dA_t[t + 1], g_t[t + 1])
                if k > 0:
                    carry = dA[0] * g[0]  # [b, N, D_in], enters g at the previous chunk's last step
                if need_u or need_delta:
                    gB = _contract_n(B_c, g)  # sum_n g_t,c,n B_t,n: [T, b, D_in]
                    if need_u:
                        grad_u[r, s:e] = (delta_c * gB).transpose(0, 1)
                if need_delta or need_A:
                    G = dA.mul_(g)  # G_t = g_t * dA_t * h_{t-1}, built in dA's buffer
                    G[0].mul_(h0)
                    if T > 1:
                        G[1:].mul_(hs[:-1])
                if need_B:  # dB_t,n = sum_c g_t,c,n (delta u)_t,c  (hs's buffer is free now)
                    grad_B[r, s:e] = _contract_d(g, du_c, out=hs).transpose(0, 1)
                if need_delta:  # ddelta_t,c = sum_n G_t,c,n A_c,n + u_t,c gB_t,c
                    dd = torch.mul(G, A_t, out=hs).sum(2)  # [T, b, D_in]
                    grad_delta[r, s:e] = dd.addcmul_(_time_major(u_r, s, e), gB).transpose(0, 1)
                if need_A:  # dA_c,n += sum_{t,b} G_t,c,n delta_t,c  (a GEMV over the T*b rows)
                    G.mul_(delta_c.unsqueeze(2))
                    grad_At.addmv_(G.view(T * b, N * D_in).t(), ones[: T * b])
        del dA_flat, hs_flat, g_flat  # the chunk buffers are done before the skip's gradients
        grad_D = None
        if D is not None:
            if need_u:
                grad_u.addcmul_(gy, D)  # du += D * ybar (the skip)
            if need_D:
                grad_D = (gy * u).sum(dim=(0, 1))  # [D_in]
        grad_A = grad_At.view(N, D_in).t().contiguous() if need_A else None
        return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, None


# --------------------------------------------------------------------------- public API


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    Bm: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    chunk_size: int = 32,
) -> torch.Tensor:
    """Selective scan by chunk recompute (fast path); returns y [B, L, D_in] in u's dtype.

    u:     [B, L, D_in]  input of the SSM branch
    delta: [B, L, D_in]  positive step sizes (softplus already applied)
    A:     [D_in, N]     state matrix (diagonal per channel; negative for a stable scan)
    Bm:    [B, L, N]     input projection, shared by all channels
    C:     [B, L, N]     output projection, shared by all channels
    D:     [D_in] or None  skip weight
    chunk_size: steps per chunk; backward keeps one state per chunk and recomputes the rest.
    Memory: inputs + L/chunk_size states of [B, D_in, N] + a few chunk-sized buffers.
    """
    cdt = _check_inputs(u, delta, A, Bm, C, D)
    chunk_size = _check_chunk_size(chunk_size)
    out_dtype = u.dtype
    args = [t.to(cdt) if t is not None else None for t in (u, delta, A, Bm, C, D)]
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, delta, A, Bm, C, D))
    if needs_grad:
        y = _SelectiveScanFn.apply(*args, chunk_size)
    else:  # nothing to differentiate: the same forward, no Function, nothing saved
        y, _ = _scan_forward(*args, chunk_size, keep_states=False)
    return y.to(out_dtype)


def _plain_autograd(readout, u, delta, A, Bm, C, D) -> torch.Tensor:
    """What both oracles share around their time loop: the input check, the upcast to the compute
    dtype, the skip term D u and the cast back. `readout(u, delta, A, Bm, C)` (compute dtype)
    returns <C_t, h_t>: [B, L, D_in]."""
    cdt = _check_inputs(u, delta, A, Bm, C, D)
    out_dtype = u.dtype
    u, delta, A, Bm, C = (t.to(cdt) for t in (u, delta, A, Bm, C))
    y = readout(u, delta, A, Bm, C)  # [B, L, D_in]
    if D is not None:
        y = y + u * D.to(cdt)
    return y.to(out_dtype)


def _ref_readout(u, delta, A, Bm, C) -> torch.Tensor:
    Bsz, L, D_in = u.shape
    N = A.shape[1]
    deltaA = torch.exp(torch.einsum("bld,dn->bdln", delta, A))  # [B, D_in, L, N]
    deltaB_u = torch.einsum("bld,bln,bld->bdln", delta, Bm, u)  # [B, D_in, L, N]
    x = u.new_zeros((Bsz, D_in, N))  # h_{-1} = 0
    ys = []
    for i in range(L):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]  # [B, D_in, N]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, i]))  # [B, D_in]
    return torch.stack(ys, dim=1)  # [B, L, D_in]


def _loop_readout(u, delta, A, Bm, C) -> torch.Tensor:
    Bsz, L, D_in = u.shape
    h = u.new_zeros((Bsz, D_in, A.shape[1]))  # h_{-1} = 0: [B, D_in, N]
    ys = []
    for u_t, d_t, B_t, C_t in zip(u.unbind(1), delta.unbind(1), Bm.unbind(1), C.unbind(1)):
        y_t, h = selective_state_update(h, u_t, d_t, A, B_t, C_t)  # <C_t, h_t>: [B, D_in]
        ys.append(y_t)
    return torch.stack(ys, dim=1)  # [B, L, D_in]


def selective_state_update(
    h: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    Bm: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the selective scan (mamba_ssm's ``selective_state_update``, without its fused
    z-gate and dt bias): the recurrence of the module docstring at one slot t, from the state
    h_{t-1}. Returns (y_t, h_t); h is not modified (a new state is returned, so a stream step can
    run again and again from one state). `selective_scan_loop` runs its time loop through this.

    h:     [B, D_in, N]  the state h_{t-1} (zeros before slot 0), in the compute dtype
    u, delta: [B, D_in]; A: [D_in, N]; Bm, C: [B, N]; D: [D_in] or None
    -> y_t [B, D_in] in u's dtype, h_t [B, D_in, N] in h's dtype.
    The inputs are cast to h's dtype (float32, or float64), as the scans upcast theirs, so a
    stream that keeps h in float32 sees the full forward's values. The readout <C_t, h_t> is one
    bmm (2 B D_in N FLOPs, the product every scan path declares); the update is element-wise.
    """
    out_dtype, cdt = u.dtype, h.dtype
    u, delta, A, Bm, C = (t.to(cdt) for t in (u, delta, A, Bm, C))
    dA = torch.exp(delta.unsqueeze(-1) * A)  # dA_t = exp(delta_t A): [B, D_in, N]
    h = dA * h + (delta * u).unsqueeze(-1) * Bm.unsqueeze(1)  # h_t = dA_t h_{t-1} + (delta_t u_t) B_t
    y = torch.bmm(h, C.unsqueeze(-1)).squeeze(-1)  # <C_t, h_t>: [B, D_in]
    if D is not None:
        y = y + u * D.to(cdt)  # + D u_t
    return y.to(out_dtype), h


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    Bm: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference oracle and slow baseline in mamba_ssm's ``selective_scan_ref`` style; same signature.

    u, delta: [B, L, D_in]; A: [D_in, N]; Bm, C: [B, L, N]; D: [D_in] or None -> y [B, L, D_in].
    Materialises deltaA and deltaB_u as full [B, D_in, L, N] tensors and indexes ``[:, :, t]``
    per step under plain autograd: ~5 full-size tensors saved and an O(L^2) backward (kept on
    purpose; see the module docstring). Test oracle and benchmark baseline only.
    """
    return _plain_autograd(_ref_readout, u, delta, A, Bm, C, D)


def selective_scan_loop(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    Bm: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-step loop oracle (section 1.6 variant A); same signature as `selective_scan_ref`.

    u, delta: [B, L, D_in]; A: [D_in, N]; Bm, C: [B, L, N]; D: [D_in] or None -> y [B, L, D_in].
    exp(delta_t A) and delta_t u_t B_t are formed inside the loop, which splits time once with
    ``unbind`` and stacks once; plain autograd keeps ~4 full [B, L, D_in, N] tensors.
    """
    return _plain_autograd(_loop_readout, u, delta, A, Bm, C, D)
