"""The recurrent family (Mamba4Rec, LRURec, RecBLR, SIGMA, EchoMamba4Rec): each model's math against
a plain reference or a step-by-step transcription of the spec (forward and backward), every scan
path against the others, the official configurations' parameter counts, the official code's quirks,
the FLOP accounting beyond the shared test (tests/test_models_interface.py) and config validation.
The scan operators themselves are tested in tests/test_selective_scan.py and tests/test_linear_scan.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from bench.measure.flops import flopcounter_flops, fvcore_forward_flops
from bench.workload import LossForward, make_batch
from models.echomamba4rec import spectral_filter, spectral_filter_ref
from models.sigma import SIGMAConfig, gru_ref, partial_flip_order
from tests.test_models_interface import SMALL, assert_close, assert_flop_counters_agree, assert_same_model, batch


def mamba_params(d, d_state, d_conv, expand):
    """docs/models-recurrent.md section 1.1: W_in, conv (+bias), W_x, W_dt (+bias), A_log, D, W_out."""
    D, R = expand * d, math.ceil(d / 16)
    return 2 * D * d + (D * d_conv + D) + (R + 2 * d_state) * D + (R * D + D) + D * d_state + D + d * D


# === Mamba4Rec ===================================================================================
def test_mamba4rec_parameter_count():
    model = models.build("mamba4rec", n_items=3417)
    assert model.num_params()[0] == 3417 * 64 + 128 + 72_128  # embedding + input LN + one layer


@pytest.mark.parametrize("path", ["chunked", "loop", "ref"])
def test_declared_scan_product_flops(path):
    """The (forward, backward) product FLOPs each scan path declares are what FlopCounterMode sees."""
    from models.mamba4rec import SCAN_PRODUCT_FLOPS
    from models.ops import SELECTIVE_SCANS as SCANS
    torch.manual_seed(0)
    B, L, D, N = 2, 9, 6, 4
    u, Bm, C = torch.randn(B, L, D), torch.randn(B, L, N), torch.randn(B, L, N)
    delta, A, Dskip = F.softplus(torch.randn(B, L, D)), -torch.rand(D, N), torch.ones(D)
    inputs = [t.requires_grad_() for t in (u, delta, A, Bm, C, Dskip)]
    forward = flopcounter_flops(lambda: SCANS[path](*inputs))
    both = flopcounter_flops(lambda: SCANS[path](*inputs).sum().backward())
    unit = B * L * D * N
    assert (forward / unit, (both - forward) / unit) == SCAN_PRODUCT_FLOPS[path]


@pytest.mark.parametrize("scan", ["loop", "ref"])
def test_mamba4rec_scan_paths_agree(scan):
    torch.manual_seed(0)
    config = dict(SMALL, n_heads=1)
    assert_same_model(models.build("mamba4rec", **config), models.build("mamba4rec", **config, scan=scan), *batch())


def test_mamba4rec_init_follows_recbole_override():
    model = models.build("mamba4rec", n_items=100)
    block = model.layers[0].mixer
    assert torch.all(block.dt_proj.bias == 0)  # RecBole zeroes every Linear bias: delta starts at softplus(0)
    assert torch.allclose(block.A_log[0], torch.log(torch.arange(1, 33.0))) and torch.all(block.D == 1)
    assert not model.layers[0].residual  # one layer: no residual around Mamba


def test_mamba4rec_memory_saving_functions_are_exact():
    from models.mamba4rec import SoftplusSavingOutput
    x = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SoftplusSavingOutput.apply, ((x * 5).detach().requires_grad_(),))
    wide = torch.tensor([-30.0, -5.0, 0.0, 5.0, 19.9, 25.0], requires_grad=True)
    SoftplusSavingOutput.apply(wide).sum().backward()
    assert_close("softplus grad", torch.sigmoid(wide.detach()), wide.grad, rtol=1e-6, atol=1e-7)
    assert torch.equal(SoftplusSavingOutput.apply(wide), F.softplus(wide))


# === LRURec ======================================================================================
def test_lrurec_parameter_count_matches_official():
    model = models.build("lrurec", n_items=3417)
    assert model.num_params()[0] == 355_993  # complex parameters count as two reals
    lru = model.blocks[0].lru
    assert sum(p.numel() * (2 if p.is_complex() else 1) for p in lru.parameters()) == 33_664


def test_lrurec_scan_paths_agree():
    torch.manual_seed(0)
    assert_same_model(models.build("lrurec", **SMALL), models.build("lrurec", **SMALL, scan="ref"), *batch())


def test_lrurec_layer_equals_stepwise_recurrence():
    torch.manual_seed(0)
    model = models.build("lrurec", **SMALL).eval()
    lru = model.blocks[0].lru
    x = torch.randn(2, 12, 16)
    nu_log, theta_log, gamma_log = lru.params_log
    lam = torch.exp(torch.complex(-nu_log.exp(), theta_log.exp()))
    assert torch.all(lam.abs() < 1)  # ring init keeps the recurrence stable
    b = gamma_log.exp() * lru.in_proj(x.to(torch.complex64))
    h, states = torch.zeros(2, 32, dtype=torch.complex64), []
    for b_t in b.unbind(1):
        h = lam * h + b_t
        states.append(h)
    ref = lru.norm(lru.out_proj(torch.stack(states, 1)).real + x)
    assert_close("lru layer", ref, lru(x), rtol=1e-4, atol=1e-5)


# === RecBLR ======================================================================================
def right_padded(lengths, width, n_items, seed=0):
    """Right-padded ids [B, width] with the given true lengths (the suite's input convention)."""
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items, (len(lengths), width), generator=gen)
    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return torch.where(real, items, 0)


def transcribed_hidden(model, item_seq, n_pad):
    """Spec 6.1 transcribed literally from the model's weights (eval: no dropout): the GRL's input
    half is left-padded with n_pad zero slots after the in-projection, then conv, gates and the
    recurrence run one slot at a time; the first n_pad states are dropped."""
    d = model.config.d_model
    X = F.layer_norm(model.item_embedding.weight[item_seq], (d,), model.norm.weight, model.norm.bias, 1e-12)
    B, L, _ = X.shape
    for layer in model.layers:
        grl = layer.mixer
        H = grl.Lambda.numel()
        xz = X @ grl.in_proj.weight.T  # [B, L, 2H]
        x, z = xz[..., :H], xz[..., H:]
        x = torch.cat([x.new_zeros(B, n_pad, H), x], dim=1)  # zero LEFT padding
        w, b_conv = grl.conv.conv.weight[:, 0], grl.conv.conv.bias  # [H, k], [H]
        k = w.shape[1]
        h, states = x.new_zeros(B, H), []
        for t in range(n_pad + L):
            conv = b_conv + sum(w[:, j] * x[:, t - k + 1 + j] for j in range(k) if t - k + 1 + j >= 0)
            x_t = F.silu(conv)
            r_t, iota_t = (x_t @ grl.gates.weight.T + grl.gates.bias).split(H, dim=-1)
            a_t = torch.exp(-F.softplus(grl.Lambda) * torch.sigmoid(r_t))
            beta_t = torch.sqrt(1 - a_t ** 2 + 1e-8) * torch.sigmoid(iota_t)
            h = a_t * h + beta_t * x_t
            states.append(h)
        h = torch.stack(states[n_pad:], dim=1)  # drop the pad slots: [B, L, H]
        Y = (F.silu(z) * h) @ grl.out_proj.weight.T
        X1 = F.layer_norm(Y + X, (d,), layer.norm.weight, layer.norm.bias, 1e-12)  # residual, every layer
        ffn = layer.ffn
        inner = F.silu(X1 @ ffn.fc1.weight.T + ffn.fc1.bias)  # SiLU, not GELU
        X = F.layer_norm(inner @ ffn.fc2.weight.T + ffn.fc2.bias + X1, (d,), ffn.norm.weight, ffn.norm.bias, 1e-12)
    return X


# --- the model equals the transcription, forward and backward ----------------------------------
@pytest.mark.parametrize("pow2_pad,scan,width,n_layers,n_pad", [
    ("full", "parallel", 12, 2, 4),     # the default (official) path
    ("state", "parallel", 12, 2, 4),    # pads run once at batch 1: the same numbers
    ("full", "ref", 12, 2, 4),          # the loop oracle of the scan
    ("state", "parallel", 9, 1, 7),     # one layer keeps its residual
    ("full", "parallel", 16, 1, 0),     # a power of two: no pad slots
    ("none", "parallel", 12, 2, 0),     # the declared deviation: no padding at all
], ids=lambda v: str(v))
def test_recblr_equals_stepwise_transcription(pow2_pad, scan, width, n_layers, n_pad):
    torch.manual_seed(0)
    config = dict(SMALL, max_len=width, n_layers=n_layers, pow2_pad=pow2_pad, scan=scan)
    model = models.build("recblr", **config).double().eval()
    item_seq = right_padded([2, 7, width], width, SMALL["n_items"])
    target = torch.tensor([3, 11, 42])
    ref = transcribed_hidden(model, item_seq, n_pad)
    out = model(item_seq)
    assert_close("hidden", ref, out, rtol=1e-10, atol=1e-12)
    last = (item_seq != 0).sum(1) - 1
    assert_close("user vector", ref[torch.arange(3), last], model.user_vector(item_seq), rtol=1e-10, atol=1e-12)

    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(model.loss(item_seq, target), params)
    ref_scores = ref[torch.arange(3), last] @ model.item_embedding.weight.T
    ref_grads = torch.autograd.grad(F.cross_entropy(ref_scores, target), params)
    for name, g_ref, g in zip(names, ref_grads, grads, strict=True):
        assert_close(f"grad {name}", g_ref, g, rtol=1e-9, atol=1e-12)


def test_recblr_float32_paths_agree_with_the_oracle():
    """The float32 model (default scan and padding) against the sequential scan, scores and grads."""
    torch.manual_seed(0)
    fast = models.build("recblr", **SMALL)
    torch.manual_seed(0)
    slow = models.build("recblr", **SMALL, scan="ref")
    slow.load_state_dict(fast.state_dict())
    fast.eval(), slow.eval()
    item_seq = right_padded([1, 5, 12, 9], 12, SMALL["n_items"])
    target = torch.tensor([1, 2, 3, 4])
    assert_close("scores", slow.full_scores(item_seq), fast.full_scores(item_seq), rtol=1e-5, atol=1e-6)
    for model in (fast, slow):
        model.loss(item_seq, target).backward()
    for (name, a), (_, b) in zip(slow.named_parameters(), fast.named_parameters(), strict=True):
        assert_close(f"grad {name}", a.grad, b.grad, rtol=1e-4, atol=1e-6)


# --- the power-of-two padding quirk -------------------------------------------------------------
def test_recblr_pad_slots_feed_a_user_independent_state():
    torch.manual_seed(0)
    model = models.build("recblr", **SMALL).double().eval()
    grl = model.layers[0].mixer
    x = torch.zeros(1, 4, grl.Lambda.numel(), dtype=torch.float64)
    h_pad = grl.pad_state(4, x)
    assert h_pad.shape == (1, grl.Lambda.numel()) and h_pad.abs().min() > 0  # SiLU(b_conv) != 0
    # the official state after the 4 zero slots: the same for every user (it enters as h0)
    a, b = grl.gated_input(x)
    h = torch.zeros_like(h_pad)
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = a_t * h + b_t
    assert_close("pad state", h, h_pad, rtol=1e-12, atol=1e-15)


def test_recblr_outputs_depend_on_padded_width_only_through_the_pads():
    """The same user at widths 12, 13 and 16 (L' - L = 4, 3, 0): the official user vector changes
    with the width; without the power-of-two padding it does not (right padding is harmless)."""
    torch.manual_seed(0)
    official = models.build("recblr", **SMALL).double().eval()
    no_pad = models.build("recblr", **SMALL, pow2_pad="none").double().eval()
    no_pad.load_state_dict(official.state_dict())
    seq = right_padded([6], 16, SMALL["n_items"])
    with torch.no_grad():
        u_official = [official.user_vector(seq[:, :w]) for w in (12, 13, 16)]
        u_none = [no_pad.user_vector(seq[:, :w]) for w in (12, 13, 16)]
    assert not torch.allclose(u_official[0], u_official[1]) and not torch.allclose(u_official[1], u_official[2])
    assert_close("no pad, 12 vs 13", u_none[0], u_none[1], rtol=1e-12, atol=1e-14)
    assert_close("no pad, 12 vs 16", u_none[0], u_none[2], rtol=1e-12, atol=1e-14)
    assert_close("16 is a power of two", u_none[2], u_official[2], rtol=1e-12, atol=1e-14)


# --- init and parameters -------------------------------------------------------------------------
def test_recblr_lambda_linspace_and_recbole_init():
    torch.manual_seed(0)
    model = models.build("recblr", n_items=100)
    grl = model.layers[0].mixer
    decay = torch.exp(-F.softplus(grl.Lambda.detach().double()))
    assert abs(decay[0].item() - 0.9) < 1e-6 and abs(decay[-1].item() - 0.999) < 1e-6
    steps = grl.Lambda.detach().diff()
    assert torch.allclose(steps, steps.mean().expand_as(steps), atol=1e-5)  # linear in Lambda space
    assert abs(grl.Lambda[0].item() - math.log(math.expm1(-math.log(0.9)))) < 1e-5  # -2.197
    assert abs(grl.Lambda[-1].item() - math.log(math.expm1(-math.log(0.999)))) < 1e-4  # -6.907
    assert torch.all(grl.gates.bias == 0)  # RecBole zeroes Linear biases
    for weight in (grl.in_proj.weight, grl.gates.weight, grl.out_proj.weight):
        assert abs(weight.std().item() - 0.02) < 0.002
    conv = grl.conv.conv.weight  # PyTorch default U(+-1/sqrt(k)) = U(+-0.5), not N(0, 0.02^2)
    assert conv.abs().max() <= 0.5 and conv.std() > 0.2
    assert model.item_embedding.weight[0].abs().sum() > 0  # padding row: random (RecBole re-initialises it)


def test_recblr_official_parameter_count():
    """Default config (hidden 64, 2 layers, expand 2, d_conv 4), counted from the spec's formulas."""
    V, d, k = 3417, 64, 4
    H = 2 * d
    grl = d * 2 * H + (H * k + H) + (H * 2 * H + 2 * H) + H + H * d  # W_in, conv, W_g + b_g, Lambda, W_out
    ffn = (d * 4 * d + 4 * d) + (4 * d * d + d)
    layer = grl + 2 * d + ffn + 2 * d  # GRL, LN, FFN, LN
    assert (grl, layer) == (58_368, 91_712)  # the spec's per-layer table
    model = models.build("recblr", n_items=V)
    assert model.num_params() == (V * d + 2 * d + 2 * layer,) * 2
    assert model.config.max_len == 200 and model.config.dropout == 0.2 and model.config.pow2_pad == "full"


# --- FLOPs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [{"pow2_pad": "state"}, {"pow2_pad": "none"}, {"scan": "ref"}],
                         ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_recblr_flop_counters_agree_for_every_path(extra):
    assert_flop_counters_agree("recblr", dict(n_items=300, max_len=24, d_model=32, n_layers=2, n_heads=4, **extra))  # L' = 32


def test_recblr_padding_cost_in_the_analytic_counts():
    """conv, gates and scan run on L' slots ("full"), on L plus one shared pad row ("state"), or L."""
    B, L, d, n_layers = 4, 24, 32, 2
    H, Lp = 2 * d, 32
    built = {p: models.build("recblr", n_items=300, max_len=L, d_model=d, n_layers=n_layers, pow2_pad=p)
             for p in ("full", "state", "none")}
    fwd = {p: m.forward_flops(B, L) for p, m in built.items()}
    assert fwd["full"] > fwd["state"] > fwd["none"]
    mixing = lambda rows, slots: 2 * rows * (slots + 3) * H * 4 + 4 * rows * slots * H * H  # noqa: E731
    assert fwd["full"] - fwd["none"] == n_layers * (mixing(B, Lp) - mixing(B, L))
    assert fwd["state"] - fwd["none"] == n_layers * mixing(1, Lp - L)
    scan = {p: m.scan_flops(B, L) for p, m in built.items()}
    assert scan == {"full": n_layers * 2 * B * Lp * H, "state": n_layers * 2 * (B * L + Lp - L) * H,
                    "none": n_layers * 2 * B * L * H}
    assert len({m.forward_flops(B, 32) for m in built.values()}) == 1  # a power of two: no pads


# --- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,key", [
    (dict(expand=0), "expand"), (dict(d_conv=-1), "d_conv"), (dict(expand=1.5), "expand"),
    (dict(pow2_pad="left"), "pow2_pad"), (dict(scan="triton"), "scan"),
    (dict(r_min=0.999, r_max=0.9), "r_min"), (dict(r_max=1.0), "r_max"), (dict(dropout=1.0), "dropout"),
])
def test_recblr_config_validation(bad, key):
    with pytest.raises(ValueError, match=key):
        models.build("recblr", **dict(SMALL, **bad))


# === SIGMA =======================================================================================
SIGMA_SMALL = dict(n_items=50, max_len=12, d_model=16, n_layers=1, n_heads=1)


def block_of(model):
    return model.layers[0].mixer


# --- architecture facts -----------------------------------------------------------------------
def test_sigma_official_parameter_count():
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


def test_sigma_official_defaults_flip_45_of_50():
    config = SIGMAConfig()
    shape = (config.max_len, config.d_model, config.n_layers, config.d_state, config.d_conv, config.expand)
    assert shape == (50, 64, 1, 32, 4, 2)
    assert (config.dropout, config.gate_dropout) == (0.2, 0.2)
    order = partial_flip_order(config.max_len, config.flip_keep)
    assert order.tolist() == list(range(44, -1, -1)) + list(range(45, 50))


def test_sigma_builds_for_any_depth():
    """Fig. 6 compares SIGMA over 1..6 layers: each depth builds and adds one layer's parameters,
    with the residual from two layers on; the deepest one trains."""
    embedding = SIGMA_SMALL["n_items"] * SIGMA_SMALL["d_model"] + 2 * SIGMA_SMALL["d_model"]
    per_layer = models.build("sigma", **SIGMA_SMALL).num_params()[0] - embedding
    for n_layers in range(1, 7):
        model = models.build("sigma", **dict(SIGMA_SMALL, n_layers=n_layers))
        assert model.num_params()[0] == embedding + n_layers * per_layer
        assert [layer.residual for layer in model.layers] == [n_layers > 1] * n_layers
    model.loss(*make_batch(2, 12, 50)).backward()
    assert all(p.grad is not None for p in model.parameters())


# --- fast paths against their plain references, forward and backward ---------------------------
@pytest.mark.parametrize("flip_keep", [5, 0, 30])  # official r, full flip, no flip (r >= L)
def test_sigma_block_matches_reference(flip_keep):
    """One 2B Mamba call, index_select flip, nn.Conv1d and nn.GRU vs two Mamba calls, a slot-by-slot
    flip, the conv as three taps and the GRU step by step (fp64)."""
    torch.manual_seed(0)
    block = block_of(models.build("sigma", **SIGMA_SMALL, flip_keep=flip_keep)).double().eval()
    for p in block.parameters():  # move off RecBole's tiny init so every branch matters
        p.data.add_(0.3 * torch.randn_like(p))
    x = torch.randn(3, 12, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 12, 16, dtype=torch.float64)
    params = [x] + list(block.parameters())
    fast, ref = block(x), block.forward_ref(x)
    assert_close("block forward", ref, fast, rtol=1e-10, atol=1e-12)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), params)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), params)
    names = ["x"] + [n for n, _ in block.named_parameters()]
    for name, a, b in zip(names, grads_ref, grads_fast, strict=True):
        assert_close(f"grad {name}", a, b, rtol=1e-10, atol=1e-12)


def test_sigma_gru_ref_matches_nn_gru():
    torch.manual_seed(0)
    gru = nn.GRU(6, 5, bias=False, batch_first=True).double()
    u = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 9, 5, dtype=torch.float64)
    fast, ref = gru(u)[0], gru_ref(u, gru.weight_ih_l0, gru.weight_hh_l0)
    assert_close("gru", ref, fast, rtol=1e-10, atol=1e-12)
    inputs = (u, gru.weight_ih_l0, gru.weight_hh_l0)
    for a, b in zip(torch.autograd.grad((ref * upstream).sum(), inputs),
                    torch.autograd.grad((fast * upstream).sum(), inputs), strict=True):
        assert_close("gru grad", a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("L,keep,expected", [(6, 2, [3, 2, 1, 0, 4, 5]), (4, 0, [3, 2, 1, 0]),
                                            (4, 4, [0, 1, 2, 3]), (3, 9, [0, 1, 2])])
def test_sigma_partial_flip_order(L, keep, expected):
    assert partial_flip_order(L, keep).tolist() == expected


def test_sigma_scan_paths_agree():
    torch.manual_seed(0)
    chunked, loop = models.build("sigma", **SIGMA_SMALL), models.build("sigma", **SIGMA_SMALL, scan="loop")
    assert_same_model(chunked, loop, *make_batch(3, 12, 50))


# --- the official code's quirks ---------------------------------------------------------------
def test_sigma_second_gate_reads_first_gate_output():
    """G2 = Dropout(S_a(SiLU(H2)) + S_b(sigmoid(G1))), as coded (not sigmoid(H2))."""
    torch.manual_seed(0)
    block = block_of(models.build("sigma", **SIGMA_SMALL)).eval()
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


def test_sigma_raw_mixing_weights_and_unflipped_backward_branch():
    torch.manual_seed(0)
    block = block_of(models.build("sigma", **SIGMA_SMALL)).eval()
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


def test_sigma_leaks_come_from_flip_and_conv():
    """Non-causal through the flip and the conv's t+1 tap; with neither, the model is causal."""
    torch.manual_seed(0)
    item_seq = torch.randint(1, 50, (2, 12))
    changed = item_seq.clone()
    changed[:, 6:] = torch.randint(1, 50, (2, 6))

    def prefix_changes(flip_keep, future_tap):
        torch.manual_seed(0)
        model = models.build("sigma", **SIGMA_SMALL, flip_keep=flip_keep).eval()
        with torch.no_grad():
            block_of(model).feature_conv.weight[:, :, 2] *= future_tap
            return not torch.allclose(model(item_seq)[:, :6], model(changed)[:, :6], rtol=0, atol=1e-6)

    assert prefix_changes(flip_keep=12, future_tap=1.0)  # conv alone leaks
    assert prefix_changes(flip_keep=5, future_tap=0.0)  # flip alone leaks
    assert not prefix_changes(flip_keep=12, future_tap=0.0)  # neither: causal


def test_sigma_gate_dropout_is_fixed_and_one_layer_has_no_residual():
    torch.manual_seed(0)
    model = models.build("sigma", **dict(SIGMA_SMALL, dropout=0.5))
    assert block_of(model).gate_dropout.p == 0.2 and model.layers[0].dropout.p == 0.5
    layer = model.eval().layers[0]
    x = torch.randn(2, 12, 16)
    assert_close("one layer", layer.ffn(layer.norm(layer.mixer(x))), layer(x), rtol=1e-6, atol=1e-6)


def test_sigma_init_follows_recbole_override():
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
def test_sigma_flops_match_counters_on_the_loop_scan():
    """fvcore (with the aten::gru handle) == FlopCounterMode == forward_flops; the train step
    (the GRU's h_0 product has no input gradient) == step_flops. The shared test in
    tests/test_models_interface.py does this for the default chunked scan; here the loop scan, whose
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
def test_sigma_bad_config_raises_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        models.build("sigma", **{key: value})


# === EchoMamba4Rec ===============================================================================
ECHO_SMALL = dict(n_items=50, max_len=12, d_model=16, n_layers=2, n_heads=1)


def outer_layer_params(L, d, n_pairs, d_state=32, d_conv=4, expand=2):
    """Section 3.3: filter 2 (L/2+1) d, its LN, n pairs of (two Mambas + two LNs), GLU (+ its LN)."""
    filter_ = 2 * (L // 2 + 1) * d + 2 * d
    pair = 2 * mamba_params(d, d_state, d_conv, expand) + 2 * 2 * d
    glu = (d * 2 * d + 2 * d) + (d * d + d) + 2 * d
    return filter_ + n_pairs * pair + glu


# --- parameter counts ---------------------------------------------------------------------------
def test_echomamba4rec_parameter_count_of_the_official_config():
    assert outer_layer_params(50, 64, 1) == 93_888 and outer_layer_params(200, 64, 1) == 103_488  # spec 3.3
    for L in (50, 200):
        model = models.build("echomamba4rec", n_items=3417, max_len=L)  # defaults: d 64, 1 layer, N 32
        assert model.num_params()[0] == 3417 * 64 + 2 * 64 + outer_layer_params(L, 64, 1)


def test_echomamba4rec_layers_nest_n_pairs_each():
    """Official BiMambaLayer holds n_layers pairs, so n outer layers hold n^2 pairs."""
    d, L, V = 16, 12, 50
    nested = models.build("echomamba4rec", **dict(ECHO_SMALL, n_layers=3))
    flat = models.build("echomamba4rec", **dict(ECHO_SMALL, n_layers=3), nested_pairs=False)
    assert [len(layer.pairs) for layer in nested.layers] == [3, 3, 3]
    assert nested.num_params()[0] == V * d + 2 * d + 3 * outer_layer_params(L, d, 3)
    assert flat.num_params()[0] == V * d + 2 * d + 3 * outer_layer_params(L, d, 1)


# --- fast paths against their oracles, forward and backward --------------------------------------
@pytest.mark.parametrize("L", [1, 2, 9, 12], ids=lambda L: f"L{L}")
def test_echomamba4rec_spectral_filter_matches_dft_loop(L):
    torch.manual_seed(0)
    x = torch.randn(3, L, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(L // 2 + 1, 5, 2, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, L, 5, dtype=torch.float64)
    fast, ref = spectral_filter(x, weight), spectral_filter_ref(x, weight)
    assert_close("filter", ref, fast, rtol=1e-10, atol=1e-12)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), (x, weight))
    grads_ref = torch.autograd.grad((ref * upstream).sum(), (x, weight))
    for name, a, b in zip(("dx", "dW"), grads_ref, grads_fast, strict=True):
        assert_close(name, a, b, rtol=1e-10, atol=1e-12)


def test_echomamba4rec_spectral_filter_with_unit_weight_is_identity():
    """W = 1 + 0i passes every bin: irFFT(rFFT(x)) = x, a check independent of both paths."""
    x = torch.randn(2, 11, 4, dtype=torch.float64)
    weight = torch.zeros(6, 4, 2, dtype=torch.float64)
    weight[..., 0] = 1
    assert_close("identity", x, spectral_filter(x, weight), rtol=1e-12, atol=1e-12)
    assert_close("identity ref", x, spectral_filter_ref(x, weight), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scan", ["loop", "ref"])
def test_echomamba4rec_scan_paths_agree(scan):
    """The chunked scan (default) against the per-step oracles: scores and every gradient."""
    torch.manual_seed(0)
    fast = models.build("echomamba4rec", **ECHO_SMALL)
    assert_same_model(fast, models.build("echomamba4rec", **ECHO_SMALL, scan=scan), *make_batch(3, 12, 50))


# --- the official forward, written out by hand --------------------------------------------------
def test_echomamba4rec_forward_is_filter_nested_bidirectional_pairs_and_glu():
    torch.manual_seed(0)
    model = models.build("echomamba4rec", **ECHO_SMALL).eval()
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


def test_echomamba4rec_glu_dropout_covers_the_residual():
    """Official GLU: LN(Dropout(fc2(P * sigmoid(Q)) + x)); dropping x too, not the branch alone."""
    torch.manual_seed(0)
    glu = models.build("echomamba4rec", **dict(ECHO_SMALL, n_layers=1), dropout=0.5).layers[0].glu.train()
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
def test_echomamba4rec_user_vector_sees_the_padding():
    """The flip and the FFT run over the whole padded width: the user vector at n_b - 1 depends
    on the (random, RecBole-initialised) padding row, unlike a causal Mamba4Rec's."""
    torch.manual_seed(0)
    model = models.build("echomamba4rec", **ECHO_SMALL).eval()
    item_seq = torch.tensor([[5, 7, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        before = model.user_vector(item_seq)
        model.item_embedding.weight[0] += torch.randn(16)  # LN would cancel a constant shift
        after = model.user_vector(item_seq)
    assert not torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("L", [12, 11], ids=["even", "odd"])
def test_echomamba4rec_imaginary_parts_of_self_conjugate_bins_are_dead(L):
    """irFFT drops Im of the DC bin (and the Nyquist bin for even L): zero gradient, no effect."""
    torch.manual_seed(0)
    model = models.build("echomamba4rec", **dict(ECHO_SMALL, max_len=L, n_layers=1))
    item_seq, target = make_batch(4, L, 50)
    model.loss(item_seq, target).backward()
    grad = model.layers[0].filter.weight.grad  # [L//2+1, d, 2]
    dead = [0] + ([L // 2] if L % 2 == 0 else [])
    live = [f for f in range(L // 2 + 1) if f not in dead]
    assert torch.all(grad[dead, :, 1] == 0) and grad[live, :, 1].abs().min() > 0
    assert grad[:, :, 0].abs().min() > 0


def test_echomamba4rec_filter_is_tied_to_max_len():
    model = models.build("echomamba4rec", **ECHO_SMALL)
    assert model.layers[0].filter.weight.shape == (7, 16, 2)
    with pytest.raises(ValueError, match="max_len=12"):
        model(torch.randint(1, 50, (2, 13)))


def test_echomamba4rec_init_follows_official_and_recbole():
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
def test_echomamba4rec_fft_filter_is_invisible_to_both_counters():
    """The FFT filter has no matrix product: both counters see 0, so it belongs in scan_flops."""
    filt = models.build("echomamba4rec", **ECHO_SMALL).layers[0].filter
    x = torch.randn(2, 12, 16, requires_grad=True)
    assert flopcounter_flops(lambda: filt(x).sum().backward()) == 0
    counted = fvcore_forward_flops(filt, (x,))
    assert counted.flops == 0 and "aten::fft_rfft" in counted.unsupported_ops


def test_echomamba4rec_flop_formulas():
    B, L, d, n = 3, 12, 16, 2
    model = models.build("echomamba4rec", **ECHO_SMALL)
    tokens, D, N, R, k = B * L, 2 * d, 32, 1, 4
    mamba = 2 * tokens * (d * 2 * D + D * (R + 2 * N) + R * D + D * d) + 2 * B * (L + k - 1) * D * k \
        + 2 * tokens * D * N  # projections, conv over L+k-1 outputs, readout C.h
    glu = 2 * tokens * 3 * d * d
    assert model.forward_flops(B, L) == n * (2 * n * mamba + glu) + 2 * B * d * 50
    fft = B * d * (2 * 5 * L * math.log2(L) + 6 * (L // 2 + 1))
    assert model.scan_flops(B, L) == n * (2 * n * 3 * tokens * D * N + round(fft))  # rounded per filter
    flat = models.build("echomamba4rec", **ECHO_SMALL, nested_pairs=False)
    assert flat.forward_flops(B, L) == n * (2 * mamba + glu) + 2 * B * d * 50


# --- config validation --------------------------------------------------------------------------
@pytest.mark.parametrize("key,value", [("dropout", 1.0), ("dropout", -0.1), ("d_state", 0), ("d_conv", -1),
                                       ("expand", 0), ("scan", "cuda"), ("scan_chunk", 0), ("nested_pairs", 2),
                                       ("max_len", 0), ("n_layers", 0), ("d_model", 2.5)])
def test_echomamba4rec_bad_config_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        models.build("echomamba4rec", **{key: value})
    with pytest.raises(ValueError, match="valid keys: .*nested_pairs"):
        models.build("echomamba4rec", num_experts=2)
