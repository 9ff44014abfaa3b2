"""SIGMA (models/sigma.py): parameter count, fast paths against their plain references, the
official code's quirks, the FLOP accounting of its scan paths and config validation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from bench.measure.flops import flopcounter_flops, fvcore_forward_flops
from bench.workload import LossForward, make_batch
from models.sigma import SIGMAConfig, gru_loop, partial_flip_order

SMALL = dict(n_items=50, max_len=12, d_model=16, n_layers=1, n_heads=1)


def assert_close(name, ref, out, rtol=1e-10, atol=1e-12):
    err = (out - ref).abs().max().item()
    assert err <= atol + rtol * ref.abs().max().item(), f"{name}: max-abs {err:.3g}"


def block_of(model):
    return model.layers[0].mixer


# --- architecture facts -----------------------------------------------------------------------
def test_official_parameter_count():
    """From the spec's formulas (models-recurrent.md 1.1, 4.3), not from the model."""
    d, expand, N, k, V = 64, 2, 32, 4, 3417
    D, R = expand * d, math.ceil(d / 16)
    mamba = 2 * D * d + (D * k + D) + (R + 2 * N) * D + (R * D + D) + D * N + D + d * D
    linear = d * d + d
    # dense1, dense2, proj; Mamba; bias-free GRU; S_a, S_b; k = 3 conv; the three mixing weights
    gated_block = 3 * linear + mamba + 2 * 3 * d * d + 2 * linear + (3 * d * d + d) + 3
    wrapper = 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * d  # LN, FFN, LN
    assert mamba == 38_784 and gated_block + wrapper == 129_859  # the spec's per-layer figures
    model = models.build("sigma", n_items=V)
    assert model.num_params() == (V * d + 2 * d + gated_block + wrapper,) * 2


def test_official_defaults_flip_45_of_50():
    config = SIGMAConfig()
    shape = (config.max_len, config.d_model, config.n_layers, config.d_state, config.d_conv, config.expand)
    assert shape == (50, 64, 1, 32, 4, 2)
    assert (config.dropout, config.gate_dropout) == (0.2, 0.2)
    order = partial_flip_order(config.max_len, config.flip_keep)
    assert order.tolist() == list(range(44, -1, -1)) + list(range(45, 50))


def test_builds_for_any_depth():
    """Fig. 6 compares SIGMA over 1..6 layers: each depth builds and adds one layer's parameters,
    with the residual from two layers on; the deepest one trains."""
    embedding = SMALL["n_items"] * SMALL["d_model"] + 2 * SMALL["d_model"]
    per_layer = models.build("sigma", **SMALL).num_params()[0] - embedding
    for n_layers in range(1, 7):
        model = models.build("sigma", **dict(SMALL, n_layers=n_layers))
        assert model.num_params()[0] == embedding + n_layers * per_layer
        assert [layer.residual for layer in model.layers] == [n_layers > 1] * n_layers
    model.loss(*make_batch(2, 12, 50)).backward()
    assert all(p.grad is not None for p in model.parameters())


# --- fast paths against their plain references, forward and backward ---------------------------
@pytest.mark.parametrize("flip_keep", [5, 0, 30])  # official r, full flip, no flip (r >= L)
def test_block_matches_reference(flip_keep):
    """One 2B Mamba call, index_select flip, nn.Conv1d and nn.GRU vs two Mamba calls, a slot-by-slot
    flip, the conv as three taps and the GRU step by step (fp64)."""
    torch.manual_seed(0)
    block = block_of(models.build("sigma", **SMALL, flip_keep=flip_keep)).double().eval()
    for p in block.parameters():  # move off RecBole's tiny init so every branch matters
        p.data.add_(0.3 * torch.randn_like(p))
    x = torch.randn(3, 12, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 12, 16, dtype=torch.float64)
    params = [x] + list(block.parameters())
    fast, ref = block(x), block.forward_reference(x)
    assert_close("block forward", ref, fast)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), params)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), params)
    names = ["x"] + [n for n, _ in block.named_parameters()]
    for name, a, b in zip(names, grads_ref, grads_fast):
        assert_close(f"grad {name}", a, b)


def test_gru_loop_matches_nn_gru():
    torch.manual_seed(0)
    gru = nn.GRU(6, 5, bias=False, batch_first=True).double()
    u = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 9, 5, dtype=torch.float64)
    fast, ref = gru(u)[0], gru_loop(u, gru.weight_ih_l0, gru.weight_hh_l0)
    assert_close("gru", ref, fast)
    inputs = (u, gru.weight_ih_l0, gru.weight_hh_l0)
    for a, b in zip(torch.autograd.grad((ref * upstream).sum(), inputs),
                    torch.autograd.grad((fast * upstream).sum(), inputs)):
        assert_close("gru grad", a, b)


@pytest.mark.parametrize("L,keep,expected", [(6, 2, [3, 2, 1, 0, 4, 5]), (4, 0, [3, 2, 1, 0]),
                                            (4, 4, [0, 1, 2, 3]), (3, 9, [0, 1, 2])])
def test_partial_flip_order(L, keep, expected):
    assert partial_flip_order(L, keep).tolist() == expected


def test_scan_paths_agree():
    torch.manual_seed(0)
    chunked, loop = models.build("sigma", **SMALL), models.build("sigma", **SMALL, scan="loop")
    loop.load_state_dict(chunked.state_dict())
    chunked.eval(), loop.eval()
    item_seq, target = make_batch(3, 12, 50)
    assert_close("scores", chunked.full_scores(item_seq), loop.full_scores(item_seq), rtol=1e-4, atol=1e-5)
    for model in (chunked, loop):
        model.loss(item_seq, target).backward()
    for (name, a), (_, b) in zip(chunked.named_parameters(), loop.named_parameters()):
        assert_close(f"grad {name}", a.grad, b.grad, rtol=1e-4, atol=1e-6)


# --- the official code's quirks ---------------------------------------------------------------
def test_second_gate_reads_first_gate_output():
    """G2 = Dropout(S_a(SiLU(H2)) + S_b(sigmoid(G1))), as coded (not sigmoid(H2))."""
    torch.manual_seed(0)
    block = block_of(models.build("sigma", **SMALL)).eval()
    gates = []
    block.gate_dropout.register_forward_hook(lambda m, i, o: gates.append(o))
    x = torch.randn(2, 12, 16)
    block(x)
    gate_f, gate_b = gates
    x_flip = x[:, partial_flip_order(12, 5)]
    s_a, s_b = block.gate_silu, block.gate_sigmoid
    h1, h2 = x + block.dense1(x), x_flip + block.dense2(x_flip)
    assert_close("G1", s_a(F.silu(h1)) + s_b(torch.sigmoid(h1)), gate_f, rtol=1e-6, atol=1e-7)
    assert_close("G2", s_a(F.silu(h2)) + s_b(torch.sigmoid(gate_f)), gate_b, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(gate_b, s_a(F.silu(h2)) + s_b(torch.sigmoid(h2)))


def test_raw_mixing_weights_and_unflipped_backward_branch():
    torch.manual_seed(0)
    block = block_of(models.build("sigma", **SMALL)).eval()
    x = torch.randn(2, 12, 16)
    with torch.no_grad():
        block.proj.bias.normal_()
        block.combining_weights.zero_()  # raw weights: all branches off (a softmax would give 1/3 each)
        assert torch.equal(block(x), block.proj.bias.expand(2, 12, 16))
        block.combining_weights.copy_(torch.tensor([0.0, 1.0, 0.0]))  # the flipped branch alone
        for gate in (block.gate_silu, block.gate_sigmoid):  # G1 = G2 = 0
            gate.weight.zero_(), gate.bias.zero_()
        order = partial_flip_order(12, 5)
        y_b = block.mamba(x[:, order])
        assert_close("M_b not flipped back", block.proj(y_b), block(x), rtol=1e-6, atol=1e-7)
        assert not torch.allclose(block.proj(y_b[:, order]), block(x), atol=1e-4)


def test_leaks_come_from_flip_and_conv():
    """Non-causal through the flip and the conv's t+1 tap; with neither, the model is causal."""
    torch.manual_seed(0)
    item_seq = torch.randint(1, 50, (2, 12))
    changed = item_seq.clone()
    changed[:, 6:] = torch.randint(1, 50, (2, 6))

    def prefix_changes(flip_keep, future_tap):
        torch.manual_seed(0)
        model = models.build("sigma", **SMALL, flip_keep=flip_keep).eval()
        with torch.no_grad():
            block_of(model).feature_conv.weight[:, :, 2] *= future_tap
            return not torch.allclose(model(item_seq)[:, :6], model(changed)[:, :6], rtol=0, atol=1e-6)

    assert prefix_changes(flip_keep=12, future_tap=1.0)  # conv alone leaks
    assert prefix_changes(flip_keep=5, future_tap=0.0)  # flip alone leaks
    assert not prefix_changes(flip_keep=12, future_tap=0.0)  # neither: causal


def test_gate_dropout_is_fixed_and_one_layer_has_no_residual():
    torch.manual_seed(0)
    model = models.build("sigma", **dict(SMALL, dropout=0.5))
    assert block_of(model).gate_dropout.p == 0.2 and model.layers[0].dropout.p == 0.5
    layer = model.eval().layers[0]
    x = torch.randn(2, 12, 16)
    assert_close("one layer", layer.ffn(layer.norm(layer.mixer(x))), layer(x), rtol=1e-6, atol=1e-6)


def test_init_follows_recbole_override():
    torch.manual_seed(0)
    block = block_of(models.build("sigma", n_items=100))
    d = 64
    for linear in (block.dense1, block.dense2, block.gate_silu, block.gate_sigmoid, block.proj, block.mamba.dt_proj):
        assert torch.all(linear.bias == 0) and 0.015 < linear.weight.std().item() < 0.025
    # the GRU and the conv keep PyTorch's default init: U(+-1/sqrt(d)), U(+-1/sqrt(3d))
    for weight in (block.gru.weight_ih_l0, block.gru.weight_hh_l0):
        assert 0.9 / math.sqrt(d) < weight.abs().max().item() <= 1 / math.sqrt(d)
    assert 0.9 / math.sqrt(3 * d) < block.feature_conv.weight.abs().max().item() <= 1 / math.sqrt(3 * d)
    assert block.combining_weights.tolist() == pytest.approx([0.1, 0.1, 0.8])


# --- FLOP accounting for each scan path -------------------------------------------------------
def test_flops_match_counters_on_the_loop_scan():
    """fvcore (with the aten::gru handle) == FlopCounterMode == forward_flops; the train step
    (the GRU's h_0 product has no input gradient) == step_flops. The shared test in
    tests/test_models.py does this for the default chunked scan; here the loop scan, whose
    backward products differ."""
    config = dict(n_items=40, max_len=6, d_model=16, n_layers=2, n_heads=1, scan="loop")
    item_seq, target = make_batch(2, 6, 40)
    torch.manual_seed(0)
    model = models.build("sigma", **config)
    meta = models.build("sigma", **config).to("meta")
    meta_inputs = (item_seq.to("meta"), target.to("meta"))
    fvcore = fvcore_forward_flops(LossForward(model), (item_seq, target))
    with torch.no_grad():
        counter = flopcounter_flops(lambda: meta.loss(*meta_inputs))
    assert "aten::gru" not in fvcore.unsupported_ops
    assert fvcore.flops == counter == model.forward_flops(2, 6)
    assert flopcounter_flops(lambda: meta.loss(*meta_inputs).backward()) == model.step_flops(2, 6)


# --- config validation ------------------------------------------------------------------------
@pytest.mark.parametrize("key,value", [("flip_keep", -1), ("flip_keep", True), ("flip_keep", 2.5),
                                       ("gate_dropout", 1.0), ("dropout", -0.1), ("scan", "bogus"),
                                       ("d_state", 0), ("n_layers", 0)])
def test_bad_config_raises_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        models.build("sigma", **{key: value})
