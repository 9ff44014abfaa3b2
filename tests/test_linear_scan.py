"""models/ops/linear_scan.py: the odd-even scan Function (and its primitive) against gradcheck and
the loop oracle, state resets, and its memory class (CPU-only, small shapes)."""
from __future__ import annotations

import math

import pytest
import torch

import models.ops.linear_scan as linear_scan_mod
from bench.measure.memory import tracked_peak
from models.ops.linear_scan import linear_scan, linear_scan_ref

REAL = {torch.float32: torch.float32, torch.float64: torch.float64,
        torch.complex64: torch.float32, torch.complex128: torch.float64}
# (max-abs on outputs normalised by the reference's max-abs, relative RMS) per dtype
TOL = {torch.float32: (2e-5, 2e-6), torch.complex64: (2e-5, 2e-6),
       torch.float64: (1e-12, 1e-13), torch.complex128: (1e-12, 1e-13)}


# --------------------------------------------------------------------------- helpers


def make_gates(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator,
               lo: float = 0.8, hi: float = 0.999) -> torch.Tensor:
    """Stable gates: |a| ~ U[lo, hi]; a uniform random phase when complex (LRURec's ring)."""
    rdt = REAL[dtype]
    mag = lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=rdt)
    if dtype.is_complex:
        return torch.polar(mag, 2 * math.pi * torch.rand(shape, generator=gen, dtype=rdt))
    return mag


def randn(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=dtype)


def assert_close(name: str, got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """Compare with max-abs (scaled by max |ref|) and relative RMS; report both, fail on NaN."""
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert not torch.isnan(got).any(), f"{name}: NaN in the fast path"
    assert not torch.isnan(ref).any(), f"{name}: NaN in the reference"
    diff = (got - ref).abs().double()
    scale = ref.abs().double().max().clamp_min(1e-30)
    max_abs = diff.max().item() if diff.numel() else 0.0
    ref_rms = ref.abs().double().square().mean().sqrt().clamp_min(1e-30)
    rel_rms = (diff.square().mean().sqrt() / ref_rms).item() if diff.numel() else 0.0
    tol_max, tol_rms = TOL[dtype]
    msg = f"{name} [{dtype}]: max_abs={max_abs:.3e} (scale {scale.item():.3e}), rel_rms={rel_rms:.3e}"
    print(msg)
    assert max_abs <= tol_max * scale.item() and rel_rms <= tol_rms, msg


def run_both(a, b, h0=None, gen=None):
    """Forward and backward of both paths under one shared random upstream gradient."""
    outs = {}
    g = None
    for name, fn in (("fast", linear_scan), ("ref", linear_scan_ref)):
        leaves = [t.detach().clone().requires_grad_() for t in (a, b, h0) if t is not None]
        h = fn(*leaves)
        if g is None:
            g = randn(tuple(h.shape), h.dtype, gen)
        h.backward(g)
        outs[name] = [h.detach()] + [t.grad for t in leaves]
    return outs


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["fp64", "c128"])
@pytest.mark.parametrize(
    "a_shape",
    [(2, 7, 3), (1, 7, 3), (7, 3), (2, 1, 3)],
    ids=["a-full", "a-1LP", "a-LP", "a-B1P"],
)
@pytest.mark.parametrize("with_h0", [False, True], ids=["h0-zero", "h0-given"])
def test_gradcheck(dtype, a_shape, with_h0):
    gen = torch.Generator().manual_seed(0)
    a = make_gates(a_shape, dtype, gen, lo=0.5, hi=0.95).requires_grad_()
    b = randn((2, 7, 3), dtype, gen).requires_grad_()
    args = (a, b)
    if with_h0:
        args = (a, b, randn((2, 3), dtype, gen).requires_grad_())
    assert torch.autograd.gradcheck(linear_scan, args)


def test_gradcheck_multichannel_and_L1():
    gen = torch.Generator().manual_seed(1)
    for L in (1, 2, 5):
        a = make_gates((2, L, 2, 3), torch.complex128, gen, 0.5, 0.95).requires_grad_()
        b = randn((2, L, 2, 3), torch.complex128, gen).requires_grad_()
        assert torch.autograd.gradcheck(linear_scan, (a, b))


@pytest.mark.parametrize("a_shape", [(3, 6, 2), (1, 6, 2), (6, 2)], ids=["a-full", "a-1LP", "a-LP"])
@pytest.mark.parametrize("h0_shape", [(3, 2), (2,)], ids=["h0-BP", "h0-P"])
def test_gradcheck_one_row_chunks(monkeypatch, a_shape, h0_shape):
    """Every batch row its own chunk: the per-chunk scans and the per-chunk grad_a reduction."""
    monkeypatch.setattr(linear_scan_mod, "_CHUNK_BYTES", 1)
    gen = torch.Generator().manual_seed(2)
    a = make_gates(a_shape, torch.complex128, gen, 0.5, 0.95).requires_grad_()
    b = randn((3, 6, 2), torch.complex128, gen).requires_grad_()
    h0 = randn(h0_shape, torch.complex128, gen).requires_grad_()
    assert torch.autograd.gradcheck(linear_scan, (a, b, h0))


# --------------------------------------------------------------------------- fast vs oracle


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["fp32", "c64"])
@pytest.mark.parametrize(
    "B,L,P",
    [pytest.param(2, L, 5, id=f"B2-L{L}-P5") for L in (1, 2, 7, 200, 1024)],
)
def test_matches_ref(dtype, B, L, P):
    gen = torch.Generator().manual_seed(L)
    a = make_gates((B, L, P), dtype, gen)
    b = randn((B, L, P), dtype, gen)
    outs = run_both(a, b, gen=gen)
    for name, got, ref in zip(("h", "grad_a", "grad_b"), outs["fast"], outs["ref"]):
        assert_close(f"B{B}-L{L}-P{P} {name}", got, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["fp32", "c64"])
def test_matches_ref_broadcast_gate_and_h0(dtype):
    """LRURec's shape: one gate per (time, channel) shared over the batch, plus an initial state."""
    gen = torch.Generator().manual_seed(3)
    a = make_gates((1, 300, 6), dtype, gen)
    b = randn((3, 300, 6), dtype, gen)
    h0 = randn((3, 6), dtype, gen)
    outs = run_both(a, b, h0, gen=gen)
    for name, got, ref in zip(("h", "grad_a", "grad_b", "grad_h0"), outs["fast"], outs["ref"]):
        assert_close(f"bcast {name}", got, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["fp32", "c64"])
def test_reset_at_zero_gates(dtype):
    """a_t = 0 restarts the state (LRURec's mask gating): h_t = b_t exactly there."""
    gen = torch.Generator().manual_seed(4)
    B, L, P = 3, 97, 4
    a = make_gates((B, L, P), dtype, gen)
    reset = torch.zeros(B, L, dtype=torch.bool)
    reset[0, [0, 5, 6, 50]] = True
    reset[1, 1:40] = True  # left-padding-like block of resets
    reset[2, 96] = True
    a = a.masked_fill(reset[..., None], 0)
    b = randn((B, L, P), dtype, gen)
    h = linear_scan(a, b)
    assert torch.equal(h[reset], b[reset])
    # the state after a reset does not depend on anything before it
    b2 = b.clone()
    b2[0, :50] = randn((50, P), dtype, gen)
    assert torch.allclose(linear_scan(a, b2)[0, 50:], h[0, 50:], rtol=0, atol=0)
    outs = run_both(a, b, gen=gen)
    for name, got, ref in zip(("h", "grad_a", "grad_b"), outs["fast"], outs["ref"]):
        assert_close(f"reset {name}", got, ref, dtype)


def test_noncontiguous_inputs_and_partial_grads():
    """Strided inputs, a grad for a only, and a batch split into several chunks."""
    gen = torch.Generator().manual_seed(5)
    a_leaf = make_gates((5, 300, 40), torch.float64, gen).requires_grad_()  # [P, L, B] storage
    a = a_leaf.transpose(0, 2)  # [40, 300, 5], strided view
    b = randn((300, 40, 5), torch.float64, gen).transpose(0, 1)  # [40, 300, 5], strided, no grad
    h = linear_scan(a, b)
    assert torch.allclose(h, linear_scan_ref(a, b), rtol=1e-12, atol=1e-12)
    (g_fast,) = torch.autograd.grad(h, a_leaf, torch.ones_like(h))
    (g_ref,) = torch.autograd.grad(linear_scan_ref(a, b), a_leaf, torch.ones_like(h))
    assert torch.allclose(g_fast, g_ref, rtol=1e-10, atol=1e-10)


ODD_LENGTHS = (1, 3, 5, 7, 33, 200, 1023, 1024)


def _sequential(src, gates, reverse, init=None):
    """The loop `_pairing_scan` must reproduce: forward out_t = src_t + gates[t-1] out_{t-1}
    (out_0 = src_0 + init); reverse out_j = src_j + gates[j] out_{j+1} (out_{L-1} = src_{L-1})."""
    out = src.clone()
    L = src.shape[1]
    if reverse:
        for j in range(L - 2, -1, -1):
            out[:, j] += gates[:, j] * out[:, j + 1]
    else:
        if init is not None and L > 0:
            out[:, 0] += init
        for t in range(1, L):
            out[:, t] += gates[:, t - 1] * out[:, t - 1]
    return out


@pytest.mark.parametrize("L", ODD_LENGTHS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("gate_rows", [3, 1], ids=["g-rows", "g-shared"])
def test_pairing_scan_primitive(L, reverse, gate_rows):
    """The odd-even primitive itself, in place and out of place, against the sequential loop."""
    gen = torch.Generator().manual_seed(L)
    src = randn((3, L, 4), torch.complex128, gen)
    gates = make_gates((gate_rows, max(L - 1, 0), 4), torch.complex128, gen)
    init = None if reverse else randn((3, 4), torch.complex128, gen)
    levels = linear_scan_mod._gate_levels(gates, reverse)
    ws = torch.empty(sum(linear_scan_mod._level_sizes(L)) * gate_rows * 4, dtype=torch.complex128)
    assert all(torch.equal(x, y) for x, y in
               zip(levels, linear_scan_mod._gate_levels(gates, reverse, ws)))  # workspace path
    ref = _sequential(src, gates, reverse, init)
    out = torch.full_like(src, float("nan"))  # every element must be written
    linear_scan_mod._pairing_scan(out, levels, reverse, src=src, init=init)
    assert_close(f"out-of-place L{L}", out, ref, torch.complex128)
    inplace = src.clone()
    linear_scan_mod._pairing_scan(inplace, levels, reverse, init=init)
    assert_close(f"in-place L{L}", inplace, ref, torch.complex128)


@pytest.mark.parametrize("L", ODD_LENGTHS)
@pytest.mark.parametrize(
    "dtype,a_rows", [(torch.complex64, 3), (torch.complex64, 1), (torch.float32, 3)],
    ids=["c64-a-rows", "c64-a-shared", "fp32-a-rows"],
)
def test_odd_lengths_fwd_bwd_vs_ref(monkeypatch, L, dtype, a_rows):
    """linear_scan vs the oracle, forward and all gradients, at odd and power-of-two lengths;
    one batch row per chunk, so the chunk loop, the gate workspace reuse, the per-chunk grad_a
    reduction and the conjugated adjoint (complex gate per row) are all exercised."""
    monkeypatch.setattr(linear_scan_mod, "_CHUNK_BYTES", 1)
    gen = torch.Generator().manual_seed(100 + L)
    a = make_gates((a_rows, L, 5), dtype, gen)
    b = randn((3, L, 5), dtype, gen)
    h0 = randn((3, 5), dtype, gen)
    outs = run_both(a, b, h0, gen=gen)
    for name, got, ref in zip(("h", "grad_a", "grad_b", "grad_h0"), outs["fast"], outs["ref"]):
        assert_close(f"L{L} {name}", got, ref, dtype)


def test_rejects_bad_inputs():
    b = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="dtype"):
        linear_scan(torch.rand(2, 5, 3, dtype=torch.float64), b)
    with pytest.raises(ValueError, match="broadcast"):
        linear_scan(torch.rand(2, 4, 3), b)
    with pytest.raises(ValueError, match="dtype"):
        linear_scan(torch.rand(2, 5, 3).half(), b.half())
    with pytest.raises(ValueError, match="h0"):
        linear_scan(torch.rand(2, 5, 3), b, torch.zeros(3, 3))


# --------------------------------------------------------------------------- memory class


def _doubling_autograd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hillis-Steele doubling rounds (the previous fast path), differentiated by plain autograd."""
    h, A, k, L = b, a.expand_as(b), 1, b.shape[1]
    while k < L:
        h = torch.cat([h[:, :k], h[:, k:] + A[:, k:] * h[:, :-k]], dim=1)
        A = torch.cat([A[:, :k], A[:, k:] * A[:, :-k]], dim=1)
        k *= 2
    return h


def test_saves_only_gates_and_states():
    """Exactly a and h are kept for backward: 2 input-sized tensors, fewer with a broadcast gate."""
    gen = torch.Generator().manual_seed(6)
    b = randn((4, 64, 8), torch.complex64, gen).requires_grad_()
    unit = b.numel() * b.element_size()
    for a_shape, expect in (((4, 64, 8), 2 * unit), ((1, 64, 8), unit + unit // 4)):
        a = make_gates(a_shape, torch.complex64, gen).requires_grad_()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.untyped_storage().nbytes()) or t, lambda t: t
        ):
            linear_scan(a, b)
        assert sum(saved) == expect, (a_shape, saved, unit)


def test_tracked_peak_far_below_autograd_doubling(monkeypatch):
    """fwd+bwd peak (MemTracker, exact on CPU), in units of one input-sized tensor.

    Expected for the Function: inputs a, b and the upstream gradient (3) + saved h (1) + dh (1)
    + grad_a (1) + the gate levels of one batch chunk (the only transient of the odd-even scan:
    a workspace reused by every chunk, sum(_level_sizes(L)) = 120 of L = 128 time steps of a
    chunk, i.e. < 1 chunk of `_CHUNK_BYTES`). The chunk is scaled down with the shape (2 MiB ->
    512 KiB) to keep the default's ratio at a test-sized input: 4 chunks of 1/4 unit, so the
    peak is 6 + 0.25 * 120 / 128 = 6.234 units. Autograd through doubling rounds keeps ~2
    tensors per round.
    """
    monkeypatch.setattr(linear_scan_mod, "_CHUNK_BYTES", 2**19)
    gen = torch.Generator().manual_seed(7)
    B, L, P = 64, 128, 32  # 2 MiB per complex64 tensor, 32 KiB per row: 4 batch chunks
    a = make_gates((B, L, P), torch.complex64, gen).requires_grad_()
    b = randn((B, L, P), torch.complex64, gen).requires_grad_()
    g = randn((B, L, P), torch.complex64, gen)
    unit = b.numel() * b.element_size()

    def step(fn):
        def run():
            a.grad = b.grad = None
            fn(a, b).backward(g)
        return run

    peaks = {}
    paths = (("scan", linear_scan), ("autograd", _doubling_autograd), ("loop", linear_scan_ref))
    for name, fn in paths:
        step(fn)()  # untracked warm-up, then a fresh tracker from a clean state
        a.grad = b.grad = None
        peaks[name] = tracked_peak(step(fn), a, b, g).total_bytes / unit
    print({k: round(v, 3) for k, v in peaks.items()}, "x input size")
    rounds = math.ceil(math.log2(L))
    levels = sum(linear_scan_mod._level_sizes(L)) / L  # gate-level workspace, in chunks
    assert 6 <= peaks["scan"] <= 6 + 0.25 * levels + 1e-3
    assert peaks["autograd"] >= 2 * rounds
    assert peaks["autograd"] >= 3 * peaks["scan"]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.trace` is deprecated")
def test_linear_scan_traces_under_jit():
    """fvcore counts FLOPs through a jit trace, where sizes are tensors: the scan must still run."""
    torch.manual_seed(0)
    lam = torch.randn(16, dtype=torch.complex64) * 0.5
    b = torch.randn(3, 21, 16, dtype=torch.complex64)
    with torch.no_grad():
        traced = torch.jit.trace(lambda x: linear_scan(lam, x), (b,), check_trace=False)
    assert torch.allclose(traced(b), linear_scan_ref(lam.expand(3, 21, 16), b), atol=1e-5)
