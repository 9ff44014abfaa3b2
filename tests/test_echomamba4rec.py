"""EchoMamba4Rec: parameter count of the official config, the fast paths against plain oracles
(forward and backward), the official code's quirks, the FLOP split and config validation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import models
from bench.measure.flops import flopcounter_flops, fvcore_forward_flops
from bench.workload import make_batch
from models.echomamba4rec import spectral_filter, spectral_filter_ref

SMALL = dict(n_items=50, max_len=12, d_model=16, n_layers=2, n_heads=1)


def assert_close(name, ref, out, rtol=1e-5, atol=1e-6):
    assert not torch.isnan(out).any(), f"{name}: NaN"
    err = (out - ref).abs().max().item()
    assert err <= atol + rtol * ref.abs().max().item(), f"{name}: max-abs error {err:.3g}"


def mamba_params(d, d_state, d_conv, expand):
    """docs/models-recurrent.md section 1.1: W_in, conv (+bias), W_x, W_dt (+bias), A_log, D, W_out."""
    D, R = expand * d, math.ceil(d / 16)
    return 2 * D * d + (D * d_conv + D) + (R + 2 * d_state) * D + (R * D + D) + D * d_state + D + d * D


def outer_layer_params(L, d, n_pairs, d_state=32, d_conv=4, expand=2):
    """Section 3.3: filter 2 (L/2+1) d, its LN, n pairs of (two Mambas + two LNs), GLU (+ its LN)."""
    filter_ = 2 * (L // 2 + 1) * d + 2 * d
    pair = 2 * mamba_params(d, d_state, d_conv, expand) + 2 * 2 * d
    glu = (d * 2 * d + 2 * d) + (d * d + d) + 2 * d
    return filter_ + n_pairs * pair + glu


# --- parameter counts ---------------------------------------------------------------------------
def test_parameter_count_of_the_official_config():
    assert outer_layer_params(50, 64, 1) == 93_888 and outer_layer_params(200, 64, 1) == 103_488  # spec 3.3
    for L in (50, 200):
        model = models.build("echomamba4rec", n_items=3417, max_len=L)  # defaults: d 64, 1 layer, N 32
        assert model.num_params()[0] == 3417 * 64 + 2 * 64 + outer_layer_params(L, 64, 1)


def test_layers_nest_n_pairs_each():
    """Official BiMambaLayer holds n_layers pairs, so n outer layers hold n^2 pairs."""
    d, L, V = 16, 12, 50
    nested = models.build("echomamba4rec", **dict(SMALL, n_layers=3))
    flat = models.build("echomamba4rec", **dict(SMALL, n_layers=3), nested_pairs=False)
    assert [len(layer.pairs) for layer in nested.layers] == [3, 3, 3]
    assert nested.num_params()[0] == V * d + 2 * d + 3 * outer_layer_params(L, d, 3)
    assert flat.num_params()[0] == V * d + 2 * d + 3 * outer_layer_params(L, d, 1)


# --- fast paths against their oracles, forward and backward --------------------------------------
@pytest.mark.parametrize("L", [1, 2, 9, 12], ids=lambda L: f"L{L}")
def test_spectral_filter_matches_dft_loop(L):
    torch.manual_seed(0)
    x = torch.randn(3, L, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(L // 2 + 1, 5, 2, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, L, 5, dtype=torch.float64)
    fast, ref = spectral_filter(x, weight), spectral_filter_ref(x, weight)
    assert_close("filter", ref, fast, rtol=1e-10, atol=1e-12)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), (x, weight))
    grads_ref = torch.autograd.grad((ref * upstream).sum(), (x, weight))
    for name, a, b in zip(("dx", "dW"), grads_ref, grads_fast):
        assert_close(name, a, b, rtol=1e-10, atol=1e-12)


def test_spectral_filter_with_unit_weight_is_identity():
    """W = 1 + 0i passes every bin: irFFT(rFFT(x)) = x, a check independent of both paths."""
    x = torch.randn(2, 11, 4, dtype=torch.float64)
    weight = torch.zeros(6, 4, 2, dtype=torch.float64)
    weight[..., 0] = 1
    assert_close("identity", x, spectral_filter(x, weight), rtol=1e-12, atol=1e-12)
    assert_close("identity ref", x, spectral_filter_ref(x, weight), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scan", ["loop", "ref"])
def test_scan_paths_agree(scan):
    """The chunked scan (default) against the per-step oracles: scores and every gradient."""
    torch.manual_seed(0)
    fast = models.build("echomamba4rec", **SMALL)
    oracle = models.build("echomamba4rec", **SMALL, scan=scan)
    oracle.load_state_dict(fast.state_dict())
    fast.eval(), oracle.eval()
    item_seq, target = make_batch(3, 12, 50)
    assert_close("scores", oracle.full_scores(item_seq), fast.full_scores(item_seq), rtol=1e-4, atol=1e-5)
    for model in (fast, oracle):
        model.loss(item_seq, target).backward()
    for (name, a), (_, b) in zip(oracle.named_parameters(), fast.named_parameters()):
        assert_close(f"grad {name}", a.grad, b.grad, rtol=1e-4, atol=1e-6)


# --- the official forward, written out by hand --------------------------------------------------
def test_forward_is_filter_nested_bidirectional_pairs_and_glu():
    torch.manual_seed(0)
    model = models.build("echomamba4rec", **SMALL).eval()
    item_seq, _ = make_batch(3, 12, 50)
    x = F.layer_norm(model.item_embedding(item_seq), (16,), model.norm.weight, model.norm.bias, eps=1e-12)
    for layer in model.layers:
        f = layer.filter
        x = F.layer_norm(spectral_filter_ref(x, f.weight) + x, (16,), f.norm.weight, f.norm.bias, eps=1e-12)
        for pair in layer.pairs:
            fwd = F.layer_norm(pair.mamba_forward(x) + x, (16,), pair.norm_forward.weight, pair.norm_forward.bias,
                               eps=1e-5)
            rev = torch.flip(pair.mamba_backward(torch.flip(x, [1])), [1])
            bwd = F.layer_norm(rev + x, (16,), pair.norm_backward.weight, pair.norm_backward.bias, eps=1e-5)
            x = fwd + bwd
        g = layer.glu
        value, gate = g.fc1(x).chunk(2, dim=-1)
        x = F.layer_norm(g.fc2(value * torch.sigmoid(gate)) + x, (16,), g.norm.weight, g.norm.bias, eps=1e-12)
    assert_close("hidden", x, model(item_seq), rtol=1e-4, atol=1e-5)
    assert [m.eps for m in (model.layers[0].pairs[0].norm_forward, model.layers[0].glu.norm,
                            model.layers[0].filter.norm, model.norm)] == [1e-5, 1e-12, 1e-12, 1e-12]


def test_glu_dropout_covers_the_residual():
    """Official GLU: LN(Dropout(fc2(P * sigmoid(Q)) + x)); dropping x too, not the branch alone."""
    torch.manual_seed(0)
    glu = models.build("echomamba4rec", **dict(SMALL, n_layers=1), dropout=0.5).layers[0].glu.train()
    x = torch.randn(4, 12, 16)
    value, gate = glu.fc1(x).chunk(2, dim=-1)
    branch = glu.fc2(value * torch.sigmoid(gate))
    torch.manual_seed(1)
    out = glu(x)
    torch.manual_seed(1)
    keep = F.dropout(torch.ones_like(x), 0.5) / 2  # the same mask draw
    assert_close("glu", glu.norm(keep * 2 * (branch + x)), out, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, glu.norm(keep * 2 * branch + x))


# --- quirks of the official code ----------------------------------------------------------------
def test_user_vector_sees_the_padding():
    """The flip and the FFT run over the whole padded width: the user vector at n_b - 1 depends
    on the (random, RecBole-initialised) padding row, unlike a causal Mamba4Rec's."""
    torch.manual_seed(0)
    model = models.build("echomamba4rec", **SMALL).eval()
    item_seq = torch.tensor([[5, 7, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        before = model.user_vector(item_seq)
        model.item_embedding.weight[0] += torch.randn(16)  # LN would cancel a constant shift
        after = model.user_vector(item_seq)
    assert not torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("L", [12, 11], ids=["even", "odd"])
def test_imaginary_parts_of_self_conjugate_bins_are_dead(L):
    """irFFT drops Im of the DC bin (and the Nyquist bin for even L): zero gradient, no effect."""
    torch.manual_seed(0)
    model = models.build("echomamba4rec", **dict(SMALL, max_len=L, n_layers=1))
    item_seq, target = make_batch(4, L, 50)
    model.loss(item_seq, target).backward()
    grad = model.layers[0].filter.weight.grad  # [L//2+1, d, 2]
    dead = [0] + ([L // 2] if L % 2 == 0 else [])
    live = [f for f in range(L // 2 + 1) if f not in dead]
    assert torch.all(grad[dead, :, 1] == 0) and grad[live, :, 1].abs().min() > 0
    assert grad[:, :, 0].abs().min() > 0


def test_filter_is_tied_to_max_len():
    model = models.build("echomamba4rec", **SMALL)
    assert model.layers[0].filter.weight.shape == (7, 16, 2)
    with pytest.raises(ValueError, match="max_len=12"):
        model(torch.randint(1, 50, (2, 13)))


def test_init_follows_official_and_recbole():
    torch.manual_seed(0)
    model = models.build("echomamba4rec", n_items=100, max_len=200)
    layer = model.layers[0]
    w = layer.filter.weight
    assert 0.018 < w.std().item() < 0.022 and abs(w.mean().item()) < 0.002  # N(0, 0.02^2), not reset
    for block in (layer.pairs[0].mamba_forward, layer.pairs[0].mamba_backward):
        assert torch.all(block.dt_proj.bias == 0)  # RecBole zeroes every Linear bias
        assert torch.allclose(block.A_log[3], torch.log(torch.arange(1, 33.0))) and torch.all(block.D == 1)
    assert torch.all(layer.glu.fc1.bias == 0) and 0.018 < layer.glu.fc1.weight.std().item() < 0.022
    assert not torch.equal(layer.pairs[0].mamba_forward.in_proj.weight, layer.pairs[0].mamba_backward.in_proj.weight)
    assert model.causal is False and model.config.max_len == 200
    defaults = models.make_config("echomamba4rec")
    assert (defaults.max_len, defaults.d_model, defaults.n_layers, defaults.dropout, defaults.d_state,
            defaults.d_conv, defaults.expand, defaults.nested_pairs) == (50, 64, 1, 0.2, 32, 4, 2, True)


# --- FLOPs: matrix products analytic, FFT in scan_flops ------------------------------------------
def test_fft_filter_is_invisible_to_both_counters():
    """The FFT filter has no matrix product: both counters see 0, so it belongs in scan_flops."""
    filt = models.build("echomamba4rec", **SMALL).layers[0].filter
    x = torch.randn(2, 12, 16, requires_grad=True)
    assert flopcounter_flops(lambda: filt(x).sum().backward()) == 0
    counted = fvcore_forward_flops(filt, (x,))
    assert counted.flops == 0 and "aten::fft_rfft" in counted.unsupported_ops


def test_flop_formulas():
    B, L, d, n = 3, 12, 16, 2
    model = models.build("echomamba4rec", **SMALL)
    tokens, D, N, R, k = B * L, 2 * d, 32, 1, 4
    mamba = 2 * tokens * (d * 2 * D + D * (R + 2 * N) + R * D + D * d) + 2 * B * (L + k - 1) * D * k \
        + 2 * tokens * D * N  # projections, conv over L+k-1 outputs, readout C.h
    glu = 2 * tokens * 3 * d * d
    assert model.forward_flops(B, L) == n * (2 * n * mamba + glu) + 2 * B * d * 50
    fft = B * d * (2 * 5 * L * math.log2(L) + 6 * (L // 2 + 1))
    assert model.scan_flops(B, L) == round(n * (2 * n * 3 * tokens * D * N + fft))
    flat = models.build("echomamba4rec", **SMALL, nested_pairs=False)
    assert flat.forward_flops(B, L) == n * (2 * mamba + glu) + 2 * B * d * 50


# --- config validation --------------------------------------------------------------------------
@pytest.mark.parametrize("key,value", [("dropout", 1.0), ("dropout", -0.1), ("d_state", 0), ("d_conv", -1),
                                       ("expand", 0), ("scan", "cuda"), ("scan_chunk", 0), ("nested_pairs", 2),
                                       ("max_len", 0), ("n_layers", 0), ("d_model", 2.5)])
def test_bad_config_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        models.build("echomamba4rec", **{key: value})
    with pytest.raises(ValueError, match="valid keys: .*nested_pairs"):
        models.build("echomamba4rec", num_experts=2)
