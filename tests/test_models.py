"""The shared interface, each model's math against a plain reference, causality and FLOP agreement."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import models
from bench.measure.flops import check_nonzero, flopcounter_flops, fvcore_forward_flops
from bench.workload import build_workload, make_batch
from models.layers import CausalDepthwiseConv1d, DropPath, RotaryEmbedding
from models.linrec import LinRecAttention
from models.recgrela import rela, rela_quadratic
from models.sasrec import recbole_attention_mask

SMALL = dict(n_items=50, max_len=12, d_model=16, n_layers=2, n_heads=2)
NAMES = models.available()


def assert_close(name, ref, out, rtol=1e-5, atol=1e-6):
    """Max-abs and relative-RMS error, named; NaN fails."""
    assert not torch.isnan(out).any() and not torch.isnan(ref).any(), f"{name}: NaN"
    diff, size = (out - ref).abs(), ref.abs()  # magnitudes: complex tensors too
    err = diff.max().item()
    rel_rms = (diff.pow(2).mean().sqrt() / size.pow(2).mean().sqrt().clamp_min(1e-30)).item()
    assert err <= atol + rtol * ref.abs().max().item(), f"{name}: max-abs {err:.3g}, rel-rms {rel_rms:.3g}"


def assert_same_model(reference, other, item_seq, target, rtol=1e-4):
    """Two builds of one model (other's weights loaded from reference) agree on scores and on
    every parameter gradient; both in eval mode so dropout does not differ."""
    other.load_state_dict(reference.state_dict())
    reference.eval(), other.eval()
    assert_close("scores", reference.full_scores(item_seq), other.full_scores(item_seq), rtol=rtol, atol=1e-5)
    for model in (reference, other):
        model.zero_grad()
        model.loss(item_seq, target).backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), other.named_parameters()):
        assert_close(f"grad {name}", a.grad, b.grad, rtol=rtol, atol=1e-6)


def batch(B=3, L=12, n_items=50, seed=0):
    return make_batch(B, L, n_items, seed)


# --- registry --------------------------------------------------------------------------------
def test_registry_names_and_errors():
    assert {"sasrec", "linrec", "recgrela"} <= set(NAMES)
    with pytest.raises(ValueError, match="available models: .*recgrela"):
        models.build("nope")
    with pytest.raises(ValueError, match="valid keys: .*n_items"):
        models.build("recgrela", not_a_key=1)
    with pytest.raises(ValueError, match="does not divide"):
        models.build("sasrec", d_model=64, n_heads=3)
    with pytest.raises(ValueError, match="positive integer"):
        models.build("linrec", n_layers=0)


# --- the interface, for every registered model ----------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_interface(name):
    torch.manual_seed(0)
    model = models.build(name, **SMALL)
    item_seq, target = batch()
    hidden = model(item_seq)
    assert hidden.shape == (3, 12, 16) and hidden.dtype == torch.float32
    scores = model.full_scores(item_seq)
    assert scores.shape == (3, 50)
    u = model.user_vector(item_seq)
    last = (item_seq != 0).sum(1) - 1
    model.eval()
    assert_close("user vector", model(item_seq)[torch.arange(3), last], model.user_vector(item_seq))
    model.train()
    loss = model.loss(item_seq, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert isinstance(model.causal, bool) and model.faithful_to and model.reconstruction in (True, False)
    total, trainable = model.num_params()
    assert total == trainable > 0 and u.shape == (3, 16)


@pytest.mark.parametrize("name", NAMES)
def test_declared_causality(name):
    """A causal model's slot t never changes when slots > t change; a non-causal one does."""
    torch.manual_seed(0)
    model = models.build(name, **SMALL).eval()
    item_seq = torch.randint(1, 50, (2, 12))  # no padding: every slot is real
    changed = item_seq.clone()
    t = 5
    changed[:, t + 1:] = torch.randint(1, 50, (2, 12 - t - 1))
    with torch.no_grad():
        before, after = model(item_seq)[:, : t + 1], model(changed)[:, : t + 1]
    if model.causal:
        assert_close("prefix outputs", before, after)
    else:
        assert not torch.allclose(before, after), f"{name} is declared non-causal but shows no leak"


# --- parameter counts of the official configurations (architecture facts) -----------------
def test_recgrela_parameter_count_matches_official_log():
    model = models.build("recgrela", n_items=3417, max_len=200, d_model=64, n_layers=4, n_heads=4)
    assert model.num_params() == (436_672, 436_672)


@pytest.mark.parametrize("name,config,expected", [
    ("sasrec", dict(max_len=200), 331_584),
    ("linrec", dict(max_len=200, d_model=64, n_heads=2), 331_584),
    ("linrec", dict(max_len=200), 728_192),
])
def test_transformer_parameter_counts(name, config, expected):
    assert models.build(name, n_items=3417, **config).num_params()[0] == expected


# --- SASRec: the two softmax backends ------------------------------------------------------
def test_recbole_mask_is_causal_and_key_padding():
    item_seq = torch.tensor([[3, 4, 0, 0]])
    mask = recbole_attention_mask(item_seq)[0, 0]
    allowed = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask == 0, allowed) and torch.all(mask[~allowed] == -10000)


def test_sasrec_sdpa_and_math_agree():
    torch.manual_seed(0)
    fused = models.build("sasrec", **SMALL, attention="sdpa")
    math_form = models.build("sasrec", **SMALL, attention="math")
    item_seq, target = batch(B=4)
    assert_same_model(fused, math_form, item_seq, target)
    real = (item_seq != 0)
    assert_close("real-slot hidden", math_form(item_seq)[real], fused(item_seq)[real], rtol=1e-5, atol=1e-5)


# --- LinRec attention --------------------------------------------------------------------------
def test_linrec_attention_equals_quadratic_form():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, dtype=torch.float64) for _ in range(3))
    qn = F.elu(q) / F.elu(q).norm(dim=-1, keepdim=True)
    kn = F.elu(k) / F.elu(k).norm(dim=-1, keepdim=True)
    naive = (qn @ kn.transpose(-2, -1)) @ v / math.sqrt(8)  # (Q K^T) V: L x L first
    assert_close("linrec", naive, LinRecAttention()(q, k, v), rtol=1e-12, atol=1e-12)


# --- RecGRELA ----------------------------------------------------------------------------------
@pytest.mark.parametrize("B,h,L,dh", [(2, 2, 7, 4), (1, 4, 33, 16), (3, 1, 1, 6)], ids=lambda x: str(x))
def test_rela_equals_naive_quadratic_form(B, h, L, dh):
    torch.manual_seed(0)
    q, k = (F.elu(torch.randn(B, h, L, dh, dtype=torch.float64)) + 1 for _ in range(2))
    q_rot, k_rot, v = (torch.randn(B, h, L, dh, dtype=torch.float64, requires_grad=True) for _ in range(3))
    q.requires_grad_(), k.requires_grad_()
    inputs = (q, k, q_rot, k_rot, v)
    upstream = torch.randn(B, h, L, dh, dtype=torch.float64)
    fast, ref = rela(*inputs), rela_quadratic(*inputs)
    assert_close("RELA forward", ref, fast, rtol=1e-10, atol=1e-12)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), inputs)
    for name, a, b in zip(("dq", "dk", "dq_rot", "dk_rot", "dv"), grads_ref, grads_fast):
        assert_close(name, a, b, rtol=1e-10, atol=1e-12)


def test_rope_matches_per_pair_rotation():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)
    out = RotaryEmbedding(8, 6)(x)
    ref = torch.empty_like(x)
    for t in range(6):
        for i in range(4):
            angle = t * 10000 ** (-2 * i / 8)
            c, s = math.cos(angle), math.sin(angle)
            ref[:, t, 2 * i] = x[:, t, 2 * i] * c - x[:, t, 2 * i + 1] * s
            ref[:, t, 2 * i + 1] = x[:, t, 2 * i] * s + x[:, t, 2 * i + 1] * c
    assert_close("rope", ref, out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="slots"):
        RotaryEmbedding(8, 5)(x)


def test_causal_depthwise_conv_matches_loop():
    torch.manual_seed(0)
    conv = CausalDepthwiseConv1d(5, kernel_size=4)
    x = torch.randn(2, 9, 5)
    w, b = conv.conv.weight[:, 0, :], conv.conv.bias  # [C, k], [C]
    ref = torch.stack([b + sum(w[:, j] * x[:, t - 3 + j] for j in range(4) if t - 3 + j >= 0)
                       for t in range(9)], dim=1)
    assert_close("conv", ref, conv(x), rtol=1e-5, atol=1e-6)


def test_drop_path_per_sample():
    x = torch.ones(1000, 3, 2)
    dp = DropPath(0.25)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    kept = (y[:, 0, 0] != 0).float().mean().item()
    assert 0.65 < kept < 0.85 and torch.allclose(y[y != 0], torch.tensor(1 / 0.75))
    assert torch.all((y == 0).all(dim=(1, 2)) | (y != 0).all(dim=(1, 2)))  # whole samples


def test_recgrela_ablations_are_configs():
    base = models.build("recgrela", **SMALL).num_params()[0]
    d = SMALL["d_model"]
    no_shortcut = models.build("recgrela", **SMALL, local_shortcut=False).num_params()[0]
    assert base - no_shortcut == SMALL["n_layers"] * (4 * d + d)  # conv weight + bias per block
    assert models.build("recgrela", **SMALL, gate=False).num_params()[0] == base  # gate -> value proj
    assert models.build("recgrela", **SMALL, input_proj=False).num_params()[0] == base  # W_in -> value
    assert models.build("recgrela", **SMALL, position="lpe").num_params()[0] == base + SMALL["max_len"] * d
    assert models.build("recgrela", **SMALL, position="ape").num_params()[0] == base
    item_seq, target = batch()

    def scores(model):
        with torch.no_grad():
            return model.eval().full_scores(item_seq)

    torch.manual_seed(0)
    default_scores = scores(models.build("recgrela", **SMALL))
    for variant in (dict(position="none"), dict(position="ape"), dict(gate_activation="relu"),
                    dict(drop_path=0.0), dict(gate=False, input_proj=False)):
        torch.manual_seed(0)
        model = models.build("recgrela", **SMALL, **variant)
        loss = model.loss(item_seq, target)
        loss.backward()
        assert torch.isfinite(loss), variant
        unreached = [n for n, prm in model.named_parameters() if prm.requires_grad and prm.grad is None]
        assert not unreached, (variant, unreached)
        if variant == dict(drop_path=0.0):  # DropPath is the identity in eval mode: same function
            torch.testing.assert_close(scores(model), default_scores)
        else:  # every other ablation changes the function the model computes
            assert not torch.allclose(scores(model), default_scores), variant
    with pytest.raises(ValueError, match="position"):
        models.build("recgrela", position="alibi")


def test_recgrela_single_layer_has_no_residual():
    """Official one-layer case: H = MLP(LN2(DropPath(O))), no residual around either branch."""
    torch.manual_seed(0)
    model = models.build("recgrela", **dict(SMALL, n_layers=1)).eval()
    block = model.blocks[0]
    item_seq, _ = batch()
    h0 = model.norm(model.item_embedding(item_seq))
    captured = {}
    block.out_proj.register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    out = model(item_seq)
    assert_close("one-layer block", block.mlp(block.norm2(captured["o"])), out)
    assert not torch.allclose(out, h0 + block.mlp(block.norm2(h0 + captured["o"])))


# --- FLOP counters agree (forward and whole train step) ---------------------------------------
@pytest.mark.parametrize("name,extra", [(n, {}) for n in NAMES] + [("sasrec", {"attention": "math"}),
                                       ("recgrela", {"local_shortcut": False, "position": "lpe"})])
def test_flop_counters_agree(name, extra):
    config = dict(n_items=300, max_len=24, d_model=32, n_layers=2, n_heads=4, **extra)
    train = build_workload(name, config, "train", batch_size=4)
    fwd_fvcore = check_nonzero("fvcore", fvcore_forward_flops(train.forward_module, train.inputs).flops)
    meta = build_workload(name, config, "train", batch_size=4, device="meta")
    with torch.no_grad():
        fwd_counter = check_nonzero("FlopCounterMode", flopcounter_flops(lambda: meta.forward_module(*meta.inputs)))
    step_counter = check_nonzero("FlopCounterMode", flopcounter_flops(meta.step))
    fwd_analytic = train.model.forward_flops(4, 24)
    for counted in (fwd_fvcore, fwd_counter):  # the issue asks for 2%; they agree exactly
        assert abs(counted - fwd_analytic) <= 0.02 * fwd_analytic, (name, counted, fwd_analytic)
        assert counted == fwd_analytic
    step_analytic = train.model.step_flops(4, 24)
    assert abs(step_counter - step_analytic) <= 0.02 * step_analytic
    assert step_counter == step_analytic
    # the CPU tensors give the same FlopCounterMode figure as the meta ones
    cpu_step = flopcounter_flops(train.step)
    assert cpu_step == step_counter


def test_fused_attention_is_counted_like_its_math_form():
    """fvcore (via our SDPA handle) and FlopCounterMode on real CPU tensors count the fused SASRec
    exactly as the explicit-matmul RecBole form: attention never silently counts 0."""
    config = dict(n_items=300, max_len=48, d_model=32, n_layers=2, n_heads=2)
    counts = {}
    for attention in ("sdpa", "math"):
        w = build_workload("sasrec", dict(config, attention=attention), "train", batch_size=2)
        counts[attention] = (fvcore_forward_flops(w.forward_module, w.inputs).flops, flopcounter_flops(w.step))
    assert counts["sdpa"] == counts["math"]
    attention = w.model.attention_flops(2, 48) * 2  # two layers
    assert counts["sdpa"][0] == w.model.forward_flops(2, 48) and attention > 0.1 * counts["sdpa"][0]


# --- EulerFormer -------------------------------------------------------------------------------
def test_euler_transform_with_unit_delta_and_no_bias_is_rope():
    from models.eulerformer import euler_transform
    from models.layers import rope_angles
    torch.manual_seed(0)
    q, k = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    alpha = rope_angles(10, 16)
    rope = RotaryEmbedding(16, 10)
    q_e, _ = euler_transform(q, 1.0, alpha)
    k_e, _ = euler_transform(k, 1.0, alpha)
    assert_close("q", rope(q), q_e, rtol=1e-5, atol=1e-5)
    assert_close("scores", rope(q) @ rope(k).transpose(1, 2), q_e @ k_e.transpose(1, 2), rtol=1e-5, atol=1e-4)


def test_eulerformer_contrastive_loss_only_in_training():
    torch.manual_seed(0)
    model = models.build("eulerformer", **SMALL)
    item_seq, target = batch()
    model.train()
    model.loss(item_seq, target)
    assert model.auxiliary_loss() is not None and model.auxiliary_loss() > 0
    train_flops = model.forward_flops(3, 12)
    model.eval()
    model.loss(item_seq, target)
    assert model.auxiliary_loss() is None
    # the B x L x L contrastive products are counted in training only
    assert train_flops - model.forward_flops(3, 12) == SMALL["n_layers"] * 4 * 3 * 12 ** 2 * SMALL["d_model"]
    off = models.build("eulerformer", **SMALL, lamb=0.0).train()
    off.loss(item_seq, target)
    assert off.auxiliary_loss() is None and off.forward_flops(3, 12) == model.forward_flops(3, 12)
    assert "alpha" not in dict(model.named_parameters())  # a fixed buffer, one copy
    assert len([b for n, b in model.named_buffers() if n.endswith("alpha")]) == 1


# --- LRURec ------------------------------------------------------------------------------------
def test_lrurec_parameter_count_matches_official():
    model = models.build("lrurec", n_items=3417)
    assert model.num_params()[0] == 355_993  # complex parameters count as two reals
    lru = model.blocks[0].lru
    assert sum(p.numel() * (2 if p.is_complex() else 1) for p in lru.parameters()) == 33_664


def test_lrurec_scan_paths_agree():
    torch.manual_seed(0)
    assert_same_model(models.build("lrurec", **SMALL), models.build("lrurec", **SMALL, scan="sequential"), *batch())


def test_lru_layer_equals_stepwise_recurrence():
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


# --- Mamba4Rec ---------------------------------------------------------------------------------
def test_mamba4rec_parameter_count():
    model = models.build("mamba4rec", n_items=3417)
    assert model.num_params()[0] == 3417 * 64 + 128 + 72_128  # embedding + input LN + one layer


@pytest.mark.parametrize("path", ["chunked", "loop", "ref"])
def test_declared_scan_product_flops(path):
    """The (forward, backward) product FLOPs each scan path declares are what FlopCounterMode sees."""
    from models.mamba4rec import SCAN_PRODUCT_FLOPS, SCANS
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


def _saved_bytes(fn, *args) -> int:
    """Bytes of the distinct storages autograd saves for backward while running fn(*args)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(storages.values())


@pytest.mark.parametrize("act", ["silu", "gelu", "relu"])
def test_gated_equals_the_plain_gate_and_keeps_one_tensor_less(act):
    from models.layers import ACTIVATIONS, gated
    plain = lambda y, a: y * ACTIVATIONS[act]()(a)  # noqa: E731
    y64, a64 = (torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda y, a: gated(y, a, act), (y64, a64))
    y, a = (torch.randn(4, 50, 16, requires_grad=True) for _ in range(2))
    g = torch.randn(4, 50, 16)
    assert torch.equal(gated(y, a, act), plain(y, a))  # the same forward ops
    grads = torch.autograd.grad(gated(y, a, act), (y, a), g)
    expected = torch.autograd.grad(plain(y, a), (y, a), g)
    for name, got, want in zip(("grad y", "grad a"), grads, expected):
        assert_close(f"{act} {name}", want, got, rtol=1e-6, atol=1e-6)
    a2 = (a * 1.0).detach().requires_grad_()  # a fresh storage: a Linear output in the models
    one = y.numel() * y.element_size()
    assert _saved_bytes(gated, y, a2, act) == 2 * one  # y and a
    assert _saved_bytes(plain, y, a2) == (2 if act == "relu" else 3) * one  # relu keeps its output only
    with pytest.raises(ValueError, match="unknown gate activation"):
        gated(y, a, "tanh")


def test_mamba_memory_saving_functions_are_exact():
    from models.mamba4rec import SoftplusSavingOutput
    x = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SoftplusSavingOutput.apply, ((x * 5).detach().requires_grad_(),))
    wide = torch.tensor([-30.0, -5.0, 0.0, 5.0, 19.9, 25.0], requires_grad=True)
    SoftplusSavingOutput.apply(wide).sum().backward()
    assert_close("softplus grad", torch.sigmoid(wide.detach()), wide.grad, rtol=1e-6, atol=1e-7)
    assert torch.equal(SoftplusSavingOutput.apply(wide), F.softplus(wide))
