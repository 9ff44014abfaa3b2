"""RecBLR (models/recblr.py): the model against a step-by-step transcription of the spec
(docs/models-recurrent.md section 6.1) forward and backward, the power-of-two padding quirk, the
init, the official parameter count, FLOP agreement of every padding mode, config validation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import models
from bench.measure.flops import check_nonzero, flopcounter_flops, fvcore_forward_flops
from bench.workload import build_workload

SMALL = dict(n_items=50, max_len=12, d_model=16, n_layers=2, n_heads=2)


def assert_close(name, ref, out, rtol, atol):
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert not torch.isnan(out).any() and not torch.isnan(ref).any(), f"{name}: NaN"
    err = (out - ref).abs().max().item()
    assert err <= atol + rtol * ref.abs().max().item(), f"{name}: max-abs {err:.3g}"


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
    ("full", "sequential", 12, 2, 4),   # the loop oracle of the scan
    ("state", "parallel", 9, 1, 7),     # one layer keeps its residual
    ("full", "parallel", 16, 1, 0),     # a power of two: no pad slots
    ("none", "parallel", 12, 2, 0),     # the declared deviation: no padding at all
], ids=lambda v: str(v))
def test_model_equals_stepwise_transcription(pow2_pad, scan, width, n_layers, n_pad):
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
    for name, g_ref, g in zip(names, ref_grads, grads):
        assert_close(f"grad {name}", g_ref, g, rtol=1e-9, atol=1e-12)


def test_float32_paths_agree_with_the_oracle():
    """The float32 model (default scan and padding) against the sequential scan, scores and grads."""
    torch.manual_seed(0)
    fast = models.build("recblr", **SMALL)
    torch.manual_seed(0)
    slow = models.build("recblr", **SMALL, scan="sequential")
    slow.load_state_dict(fast.state_dict())
    fast.eval(), slow.eval()
    item_seq = right_padded([1, 5, 12, 9], 12, SMALL["n_items"])
    target = torch.tensor([1, 2, 3, 4])
    assert_close("scores", slow.full_scores(item_seq), fast.full_scores(item_seq), rtol=1e-5, atol=1e-6)
    for model in (fast, slow):
        model.loss(item_seq, target).backward()
    for (name, a), (_, b) in zip(slow.named_parameters(), fast.named_parameters()):
        assert_close(f"grad {name}", a.grad, b.grad, rtol=1e-4, atol=1e-6)


# --- the power-of-two padding quirk -------------------------------------------------------------
def test_pad_slots_feed_a_user_independent_state():
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


def test_outputs_depend_on_padded_width_only_through_the_pads():
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
def test_lambda_linspace_and_recbole_init():
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
    assert model.item_embedding.weight[0].abs().sum() > 0  # padding row: random, then frozen


def test_official_parameter_count():
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
@pytest.mark.parametrize("extra", [{"pow2_pad": "state"}, {"pow2_pad": "none"}, {"scan": "sequential"}],
                         ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_flop_counters_agree_for_every_path(extra):
    config = dict(n_items=300, max_len=24, d_model=32, n_layers=2, n_heads=4, **extra)  # L' = 32
    train = build_workload("recblr", config, "train", batch_size=4)
    fwd_fvcore = check_nonzero("fvcore", fvcore_forward_flops(train.forward_module, train.inputs).flops)
    meta = build_workload("recblr", config, "train", batch_size=4, device="meta")
    with torch.no_grad():
        fwd_counter = flopcounter_flops(lambda: meta.forward_module(*meta.inputs))
    assert fwd_fvcore == fwd_counter == train.model.forward_flops(4, 24)
    assert flopcounter_flops(meta.step) == flopcounter_flops(train.step) == train.model.step_flops(4, 24)


def test_padding_cost_in_the_analytic_counts():
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
def test_config_validation(bad, key):
    with pytest.raises(ValueError, match=key):
        models.build("recblr", **dict(SMALL, **bad))
