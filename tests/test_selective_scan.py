"""models/ops/selective_scan.py: the chunk-recompute Function against gradcheck and a chain of
oracles (chunked fast path -> per-step loop -> mamba-style reference), edge cases, and its memory
class as a deterministic count (CPU-only, small shapes)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import models.ops.selective_scan as selective_scan_mod
from bench.measure.memory import tracked_peak
from models.ops.selective_scan import selective_scan, selective_scan_loop, selective_scan_ref

NAMES = ("u", "delta", "A", "Bm", "C", "D")
# (max-abs normalised by the reference's max-abs, relative RMS) per compute dtype
TOL = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-12, 1e-12)}


# --------------------------------------------------------------------------- helpers


def make_inputs(B, L, D_in, N, dtype=torch.float32, with_D=True, seed=0):
    """Mamba-like inputs: delta = softplus(.) > 0, A = -exp(A_log) with A_log ~ log(1..N)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=gen, dtype=dtype)

    u = randn(B, L, D_in)
    delta = F.softplus(randn(B, L, D_in) - 0.5)  # a leaf created here, not a graph output
    A_log = torch.log(torch.arange(1, N + 1, dtype=dtype)).repeat(D_in, 1) + 0.1 * randn(D_in, N)
    A = -torch.exp(A_log)
    Bm, C = randn(B, L, N), randn(B, L, N)
    D = randn(D_in) if with_D else None
    return {"u": u, "delta": delta, "A": A, "Bm": Bm, "C": C, "D": D}


def leaves(inputs, grad=True):
    return {k: (v.detach().clone().requires_grad_(grad) if v is not None else None) for k, v in inputs.items()}


def call(fn, x, **kw):
    return fn(x["u"], x["delta"], x["A"], x["Bm"], x["C"], x["D"], **kw)


def assert_close(name: str, got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """Max-abs (scaled by max |ref|) and relative-RMS error, both reported; fails on NaN."""
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert not torch.isnan(got).any(), f"{name}: NaN in the path under test"
    assert not torch.isnan(ref).any(), f"{name}: NaN in the reference"
    diff = (got.double() - ref.double()).abs()
    scale = ref.double().abs().max().item()
    max_abs = diff.max().item()
    rms_ref = ref.double().square().mean().sqrt().item()
    rel_rms = diff.square().mean().sqrt().item() / max(rms_ref, 1e-30)
    tol_max, tol_rms = TOL[dtype]
    msg = f"{name} [{dtype}]: max_abs={max_abs:.3e} (scale {scale:.3e}), rel_rms={rel_rms:.3e}"
    print(msg)
    assert max_abs <= tol_max * max(scale, 1e-30) and rel_rms <= tol_rms, msg


def fwd_bwd(fn, inputs, g, requires=NAMES, **kw):
    """y and the gradients of the inputs named in ``requires`` under the upstream gradient g."""
    x = leaves(inputs, grad=False)
    for k in requires:
        if x[k] is not None:
            x[k].requires_grad_()
    y = call(fn, x, **kw)
    y.backward(g)
    return {"y": y.detach(), **{f"d{k}": x[k].grad for k in requires if x[k] is not None}}


def compare(tag, got, ref, dtype):
    assert got.keys() == ref.keys()
    for k in got:
        assert_close(f"{tag} {k}", got[k], ref[k], dtype)


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize(
    "B,L,D_in,N,chunk,with_D",
    [
        pytest.param(2, 7, 3, 4, 3, True, id="B2-L7-D3-N4-chunk3-D"),
        pytest.param(2, 7, 3, 4, 1, False, id="B2-L7-D3-N4-chunk1-noD"),
        pytest.param(2, 5, 3, 2, 8, True, id="B2-L5-D3-N2-chunk8-D"),
        pytest.param(1, 1, 2, 3, 4, True, id="B1-L1-D2-N3-D"),
    ],
)
def test_gradcheck(B, L, D_in, N, chunk, with_D):
    x = leaves(make_inputs(B, L, D_in, N, torch.float64, with_D, seed=L + chunk))
    args = tuple(x[k] for k in NAMES if x[k] is not None)

    def f(*a):
        return selective_scan(*a, chunk_size=chunk) if with_D else selective_scan(*a, None, chunk_size=chunk)

    assert torch.autograd.gradcheck(f, args)


# --------------------------------------------------------------------------- chain of oracles


@pytest.mark.parametrize("chunk", [16, 7], ids=["chunk16", "chunk7"])
def test_chain_of_oracles_fp32(chunk):
    """chunked Function == per-step loop == mamba-style reference: y and every input gradient."""
    inputs = make_inputs(3, 50, 16, 8, seed=chunk)
    g = torch.randn(3, 50, 16, generator=torch.Generator().manual_seed(100))
    fast = fwd_bwd(selective_scan, inputs, g, chunk_size=chunk)
    loop = fwd_bwd(selective_scan_loop, inputs, g)
    ref = fwd_bwd(selective_scan_ref, inputs, g)
    compare(f"chunk{chunk} fast-vs-loop", fast, loop, torch.float32)
    compare("loop-vs-ref", loop, ref, torch.float32)
    compare(f"chunk{chunk} fast-vs-ref", fast, ref, torch.float32)


EDGE_CASES = [
    pytest.param(dict(B=2, L=1, D_in=5, N=4, chunk=32, with_D=True), id="L1"),
    pytest.param(dict(B=2, L=9, D_in=5, N=4, chunk=9, with_D=True), id="chunk-eq-L"),
    pytest.param(dict(B=2, L=9, D_in=5, N=4, chunk=64, with_D=True), id="chunk-gt-L"),
    pytest.param(dict(B=2, L=9, D_in=5, N=4, chunk=1, with_D=True), id="chunk1"),
    pytest.param(dict(B=2, L=23, D_in=5, N=4, chunk=4, with_D=True), id="L23-chunk4-ragged"),
    pytest.param(dict(B=2, L=23, D_in=5, N=4, chunk=8, with_D=False), id="D-None"),
    pytest.param(dict(B=1, L=17, D_in=1, N=1, chunk=5, with_D=True), id="B1-D1-N1"),
]


@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_cases_match_loop(case):
    inputs = make_inputs(case["B"], case["L"], case["D_in"], case["N"], with_D=case["with_D"], seed=case["L"])
    g = torch.randn(case["B"], case["L"], case["D_in"], generator=torch.Generator().manual_seed(1))
    fast = fwd_bwd(selective_scan, inputs, g, chunk_size=case["chunk"])
    compare("fast-vs-loop", fast, fwd_bwd(selective_scan_loop, inputs, g), torch.float32)
    compare("fast-vs-ref", fast, fwd_bwd(selective_scan_ref, inputs, g), torch.float32)


@pytest.mark.parametrize("chunk", [4, 32], ids=["chunk4-ragged", "chunk32-one-chunk"])
def test_one_row_blocks_match_loop(monkeypatch, chunk):
    """Every batch row its own block: per-block states, carries and the summed dA."""
    monkeypatch.setattr(selective_scan_mod, "_BLOCK_BYTES", 1)
    inputs = make_inputs(3, 18, 5, 4, seed=9)
    g = torch.randn(3, 18, 5, generator=torch.Generator().manual_seed(3))
    fast = fwd_bwd(selective_scan, inputs, g, chunk_size=chunk)
    compare("one-row blocks", fast, fwd_bwd(selective_scan_loop, inputs, g), torch.float32)
    x = leaves(make_inputs(3, 7, 3, 2, torch.float64, seed=10))
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk_size=3), tuple(x[k] for k in NAMES))


@pytest.mark.parametrize(
    "requires",
    [pytest.param(("u",), id="u-only"), pytest.param(("C",), id="C-only"),
     pytest.param(("A", "D"), id="A-and-D"), pytest.param(("delta", "Bm"), id="delta-and-B")],
)
def test_partial_grads(requires):
    inputs = make_inputs(2, 20, 6, 4, seed=3)
    g = torch.randn(2, 20, 6, generator=torch.Generator().manual_seed(2))
    fast = fwd_bwd(selective_scan, inputs, g, requires=requires, chunk_size=6)
    compare("partial", fast, fwd_bwd(selective_scan_loop, inputs, g, requires=requires), torch.float32)


def saved_bytes(fn):
    """Bytes of the tensors autograd saves while fn() runs (saved_tensors_hooks count)."""
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        out = fn()
    return sum(sizes), out


@pytest.mark.parametrize(
    "mode",
    [pytest.param("inputs-no-grad", id="inputs-no-grad"), pytest.param("no_grad", id="no_grad"),
     pytest.param("inference_mode", id="inference_mode")],
)
def test_no_grad_paths_save_nothing_and_agree(mode):
    inputs = make_inputs(2, 30, 6, 4, seed=4)
    x = leaves(inputs, grad=mode != "inputs-no-grad")
    y_grad = call(selective_scan, leaves(inputs), chunk_size=8).detach()
    if mode == "inputs-no-grad":
        nbytes, y = saved_bytes(lambda: call(selective_scan, x, chunk_size=8))
    elif mode == "no_grad":
        with torch.no_grad():
            nbytes, y = saved_bytes(lambda: call(selective_scan, x, chunk_size=8))
    else:
        with torch.inference_mode():
            y = call(selective_scan, x, chunk_size=8)
        nbytes = 0
    assert not y.requires_grad
    assert nbytes == 0
    assert torch.equal(y, y_grad)  # the same forward code, bit for bit


def test_saves_inputs_and_chunk_states_only():
    """What backward keeps: the six inputs (by reference) and one [B, N, D_in] state per chunk."""
    B, L, D_in, N, chunk = 2, 30, 6, 4, 8
    x = leaves(make_inputs(B, L, D_in, N, seed=5))
    nbytes, _ = saved_bytes(lambda: call(selective_scan, x, chunk_size=chunk))
    inputs = sum(t.numel() * t.element_size() for t in x.values())
    states = math.ceil(L / chunk) * B * D_in * N * 4
    assert nbytes == inputs + states


def test_low_precision_roundtrip():
    """bf16 in -> fp32 inside -> bf16 out; gradients come back in each input's dtype."""
    inputs = make_inputs(2, 12, 4, 3, seed=6)
    lo = {k: v.bfloat16().requires_grad_() for k, v in inputs.items()}
    y = call(selective_scan, lo, chunk_size=5)
    assert y.dtype == torch.bfloat16
    up = {k: v.detach().float() for k, v in lo.items()}
    assert torch.equal(y, call(selective_scan, up, chunk_size=5).bfloat16())
    y.sum().backward()
    assert all(lo[k].grad.dtype == torch.bfloat16 for k in NAMES)


def test_rejects_bad_inputs():
    x = make_inputs(2, 5, 3, 4)
    bad = [
        (dict(u=x["u"][0]), "u of shape"),
        (dict(delta=x["delta"][:, :4]), "delta of shape"),
        (dict(A=x["A"].t()), "A of shape"),
        (dict(Bm=x["Bm"][:, :, :3]), "Bm of shape"),
        (dict(C=x["C"][:1]), "C of shape"),
        (dict(D=torch.ones(4)), "D of shape"),
        (dict(u=x["u"].long()), "floating dtype"),
        (dict(u=x["u"][:, :0], delta=x["delta"][:, :0], Bm=x["Bm"][:, :0], C=x["C"][:, :0]), "L >= 1"),
    ]
    for fn in (selective_scan, selective_scan_loop, selective_scan_ref):
        for change, match in bad:
            with pytest.raises(ValueError, match=match):
                call(fn, {**x, **change})
    for chunk in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="chunk_size"):
            call(selective_scan, x, chunk_size=chunk)


# --------------------------------------------------------------------------- memory class


def test_tracked_peak_far_below_reference():
    """fwd+bwd peak (MemTracker, an exact tensor count on CPU), not a timing.

    The reference keeps ~5 [B, D_in, L, N] tensors for backward; the Function keeps the inputs,
    L/chunk states of [B, N, D_in] and at most three chunk buffers (here the whole batch fits
    one row block, so each is [chunk, B, N, D_in] = 1/16 full). At this small shape (N = 16)
    the [B, L, D_in]-sized inputs, upstream gradient and input gradients are over half of the
    Function's peak.
    """
    B, L, D_in, N, chunk = 4, 128, 16, 16, 8
    x = leaves(make_inputs(B, L, D_in, N, seed=7))
    g = torch.randn(B, L, D_in, generator=torch.Generator().manual_seed(8))
    full = B * L * D_in * N * 4  # bytes of one [B, L, D_in, N] fp32 tensor

    def step(fn, **kw):
        def run():
            for t in x.values():
                t.grad = None
            call(fn, x, **kw).backward(g)
        return run

    peaks = {}
    for name, fn, kw in (("fast", selective_scan, {"chunk_size": chunk}), ("loop", selective_scan_loop, {}),
                         ("ref", selective_scan_ref, {})):
        step(fn, **kw)()  # untracked warm-up, then a fresh tracker from a clean state
        for t in x.values():
            t.grad = None
        peaks[name] = tracked_peak(step(fn, **kw), *x.values(), g).total_bytes
    print({k: f"{v / full:.2f} full" for k, v in peaks.items()})
    assert peaks["fast"] < peaks["ref"] / 4
    assert peaks["fast"] < peaks["loop"] / 2
