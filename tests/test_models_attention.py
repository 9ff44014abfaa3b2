"""The attention family (SASRec, LinRec, RecGRELA, EulerFormer, ELASTIC): each model's math against
a plain reference, the official configurations' parameter counts, the declared quirks and the FLOP
accounting beyond the shared test (tests/test_models_interface.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import models
import models.elastic
from bench.grid import Point
from bench.measure.flops import flopcounter_flops, fvcore_forward_flops
from bench.sweep.point import base_row
from bench.workload import build_workload, make_batch
from models.elastic import Elastic, ElasticConfig, LinearDispatcherAttention, ProductKeyMemory
from models.eulerformer import euler_transform
from models.layers import RotaryEmbedding, rope_angles
from models.linrec import LinRecAttention
from models.recgrela import rela, rela_ref
from models.sasrec import recbole_attention_mask
from tests.test_models_interface import SMALL, assert_close, assert_same_model, batch


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
def test_rela_equals_its_quadratic_reference(B, h, L, dh):
    torch.manual_seed(0)
    q, k = (F.elu(torch.randn(B, h, L, dh, dtype=torch.float64)) + 1 for _ in range(2))
    q_rot, k_rot, v = (torch.randn(B, h, L, dh, dtype=torch.float64, requires_grad=True) for _ in range(3))
    q.requires_grad_(), k.requires_grad_()
    inputs = (q, k, q_rot, k_rot, v)
    upstream = torch.randn(B, h, L, dh, dtype=torch.float64)
    fast, ref = rela(*inputs), rela_ref(*inputs)
    assert_close("RELA forward", ref, fast, rtol=1e-10, atol=1e-12)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), inputs)
    for name, a, b in zip(("dq", "dk", "dq_rot", "dk_rot", "dv"), grads_ref, grads_fast, strict=True):
        assert_close(name, a, b, rtol=1e-10, atol=1e-12)


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


# --- EulerFormer -------------------------------------------------------------------------------
def test_euler_transform_with_unit_delta_and_no_bias_is_rope():
    torch.manual_seed(0)
    q, k = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    alpha = rope_angles(10, 16)
    rope = RotaryEmbedding(16, 10)
    q_e, _ = euler_transform(q, 1.0, alpha)
    k_e, _ = euler_transform(k, 1.0, alpha)
    assert_close("q", rope(q), q_e, rtol=1e-5, atol=1e-5)
    assert_close("scores", rope(q) @ rope(k).transpose(1, 2), q_e @ k_e.transpose(1, 2), rtol=1e-5, atol=1e-4)


def test_eulerformer_contrastive_loss_only_in_training():
    """The phase contrastive term comes with the hidden states from `forward_with_aux` (training
    only); its B x L x L products are `auxiliary_flops`, in the train step, never in the inference
    forward_flops."""
    torch.manual_seed(0)
    model = models.build("eulerformer", **SMALL)
    item_seq, target = batch()
    model.train()
    _, auxiliary = model.loss_terms(item_seq, target)
    assert auxiliary is not None and auxiliary > 0
    hidden, auxiliary = model.forward_with_aux(item_seq)
    assert auxiliary is not None and auxiliary > 0 and hidden.shape == (3, 12, 16)
    model.eval()
    assert model.loss_terms(item_seq, target)[1] is None
    contrastive = SMALL["n_layers"] * 4 * 3 * 12 ** 2 * SMALL["d_model"]
    assert model.auxiliary_flops(3, 12) == contrastive
    assert model.step_flops(3, 12) == 3 * (model.forward_flops(3, 12) + contrastive)
    off = models.build("eulerformer", **SMALL, lamb=0.0).train()
    assert off.loss_terms(item_seq, target)[1] is None and off.forward_with_aux(item_seq)[1] is None
    assert off.auxiliary_flops(3, 12) == 0 and off.forward_flops(3, 12) == model.forward_flops(3, 12)
    assert "alpha" not in dict(model.named_parameters())  # a fixed buffer, one copy
    assert len([b for n, b in model.named_buffers() if n.endswith("alpha")]) == 1


# === ELASTIC (reconstruction) ====================================================================
ELASTIC_TINY = dict(n_items=50, max_len=12, d_model=16, n_layers=2, n_heads=2, n_interests=3,
                    memory_size=64, memory_topk=4)


def test_elastic_declared_labels():
    assert Elastic.reconstruction is True and Elastic.causal is False
    assert "reconstruction" in Elastic.faithful_to
    assert "RECONSTRUCTED" in models.elastic.__doc__ and "| choice | abstract claim served |" in models.elastic.__doc__
    row = base_row(Point("elastic", (), "infer", "seq_len", seq_len=12, batch_size=2, n_layers=1,
                         n_heads=2, d_model=16, n_items=40))
    assert row["reconstruction"] is True and row["causal"] is False


# --- parameter count of the default configuration, from the formulas --------------------------
def test_elastic_default_parameter_count():
    N, L, d, d_ff, n_layers, k, M = 3417, 200, 64, 256, 2, 16, 128 ** 2
    m = math.isqrt(M)
    embeddings = N * d + L * d + 2 * d  # items, positions, input LN
    memory = M * d + 2 * m * (d // 2)  # values + two sets of m sub-keys of width d/2
    lda = 6 * (d * d + d) + 2 * d  # W_Q, W_K, W_V, W_ZK, W_ZV, W_O (biased) + LN1
    ffn = 2 * d * d_ff + d_ff + d + 2 * d  # W1, W2 (biased) + LN2
    query_net = d * k * d + k * d + 2 * d  # d -> k d (biased) + per-expert query LN
    expected = embeddings + memory + n_layers * (lda + ffn + query_net)
    assert expected == 1_538_368  # worked by hand in the module's notation
    assert models.build("elastic", n_items=N).num_params() == (expected, expected)
    static = embeddings + n_layers * (lda + ffn + k * d)  # IMR ablated: a [k, d] per layer
    assert models.build("elastic", n_items=N, interest_memory=False).num_params()[0] == static


# --- fast paths against plain loops, forward and backward --------------------------------------
def test_elastic_product_key_read_equals_exhaustive_search():
    """Top-t of the t x t candidate pairs is the exact top-t of all M slots (Lample et al.)."""
    torch.manual_seed(0)
    memory = ProductKeyMemory(ElasticConfig(d_model=8, n_heads=1, memory_size=256, memory_topk=5)).double()
    with torch.no_grad():
        memory.sub_keys.normal_()
        memory.values.weight.normal_()
    query = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 8, dtype=torch.float64)
    fast, ref = memory(query), memory.forward_ref(query)
    assert_close("read", ref, fast, rtol=1e-12, atol=1e-12)
    inputs = (query, memory.sub_keys, memory.values.weight)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), inputs)
    for name, a, b in zip(("query", "sub_keys", "values"), grads_ref, grads_fast, strict=True):
        assert_close(name, a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("static", [False, True], ids=["per-user", "static"])
def test_elastic_dispatcher_attention_equals_loop(static):
    """SDPA with the key-padding mask == a loop that only ever reads each sequence's real slots."""
    torch.manual_seed(0)
    B, L, k = 3, 12, 4
    config = ElasticConfig(d_model=16, n_heads=2, n_interests=k, interest_memory=not static)
    block = LinearDispatcherAttention(config).double().eval()
    lengths = torch.tensor([12, 5, 1])
    h = torch.randn(B, L, 16, dtype=torch.float64, requires_grad=True)
    experts = None if static else torch.randn(B, k, 16, dtype=torch.float64, requires_grad=True)
    attendable = (torch.arange(L)[None, :] < lengths[:, None])[:, None, None, :]
    upstream = torch.randn(B, L, 16, dtype=torch.float64)
    fast, ref = block(h, experts, attendable), block.forward_ref(h, experts, lengths)
    assert_close("LDA", ref, fast, rtol=1e-10, atol=1e-12)
    inputs = (h, *(() if static else (experts,)), *block.parameters())
    grads_fast = torch.autograd.grad((fast * upstream).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), inputs)
    names = ["h"] + ([] if static else ["experts"]) + [n for n, _ in block.named_parameters()]
    assert static == ("static_experts" in names)
    for name, a, b in zip(names, grads_ref, grads_fast, strict=True):
        assert_close(name, a, b, rtol=1e-10, atol=1e-12)


# --- the quirks the model declares ---------------------------------------------------------------
def test_elastic_padding_never_reaches_real_slots():
    """Real-slot outputs do not depend on how much padding follows, nor on the padding vector."""
    torch.manual_seed(0)
    model = models.build("elastic", **dict(ELASTIC_TINY, max_len=20)).eval()
    item_seq, _ = make_batch(3, 12, 50, seed=1)
    real = item_seq != 0
    assert not real.all()  # the batch does have padding
    wider = torch.cat([item_seq, torch.zeros(3, 8, dtype=item_seq.dtype)], dim=1)
    with torch.no_grad():
        out = model(item_seq)
        assert_close("more padding", out[real], model(wider)[:, :12][real], rtol=1e-5, atol=1e-6)
        model.item_embedding.weight[0].normal_()  # a different padding vector
        assert_close("padding vector", out[real], model(item_seq)[real], rtol=1e-5, atol=1e-6)
        empty = model(torch.zeros(1, 12, dtype=torch.long))  # all padding: slot 0 guard, no NaN
    assert torch.isfinite(empty).all()


def test_elastic_later_items_reach_earlier_slots():
    """Declared non-causal: an item after slot t changes slot t (through the dispatch and the pool)."""
    torch.manual_seed(0)
    for memory in (True, False):
        model = models.build("elastic", **ELASTIC_TINY, interest_memory=memory).eval()
        item_seq = torch.randint(1, 50, (1, 12))
        changed = item_seq.clone()
        changed[0, -1] = item_seq[0, -1] % 49 + 1
        with torch.no_grad():
            assert not torch.allclose(model(item_seq)[:, 0], model(changed)[:, 0])


class _ShapeRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor):
                self.shapes.add(tuple(t.shape))
        return out


def shapes_of_forward_backward(name, L, **config):
    torch.manual_seed(0)
    model = models.build(name, n_items=50, max_len=L, d_model=16, n_layers=1, n_heads=2, **config)
    item_seq, target = make_batch(3, L, 50)
    recorder = _ShapeRecorder()
    with recorder:
        model.loss(item_seq, target).backward()
    return recorder.shapes


def test_elastic_no_length_squared_tensor():
    """No tensor of a forward + backward has two axes of length L (checked with a prime L that no other
    size equals); the same probe does find SASRec's L x L attention."""
    L = 29
    quadratic = lambda shapes: [s for s in shapes if list(s).count(L) >= 2]  # noqa: E731
    assert quadratic(shapes_of_forward_backward("sasrec", L, attention="math"))  # the probe can fail
    for memory in (True, False):
        shapes = shapes_of_forward_backward("elastic", L, n_interests=5, memory_size=64, memory_topk=4,
                                            interest_memory=memory)
        assert not quadratic(shapes), quadratic(shapes)


def test_elastic_memory_is_read_sparsely():
    """Only the slots each expert selected receive gradient: at most layers x B x k x t of M rows."""
    torch.manual_seed(0)
    config = dict(ELASTIC_TINY, memory_size=32 ** 2, memory_topk=4)
    model = models.build("elastic", **config).eval()
    selected = []
    model.memory.values.register_forward_hook(lambda mod, inp, out: selected.append(inp[0].flatten()))
    item_seq, target = make_batch(2, 12, 50)
    model.loss(item_seq, target).backward()
    touched = model.memory.values.weight.grad.abs().sum(dim=1).nonzero().flatten()
    read = torch.cat(selected).unique()
    assert len(selected) == config["n_layers"]  # one read per layer from the shared bank
    assert set(touched.tolist()) <= set(read.tolist()) and len(touched) > 0
    assert len(read) <= config["n_layers"] * 2 * config["n_interests"] * config["memory_topk"] < 32 ** 2


# --- FLOP accounting beyond the shared test's one configuration --------------------------------
@pytest.mark.parametrize("extra", [dict(), dict(interest_memory=False),
                                   dict(n_interests=7, memory_size=100, memory_topk=10)],
                         ids=["memory", "static", "k7-M100-t10"])
def test_elastic_flops_counted_exactly_and_linear_in_length(extra):
    """Other k, M, t than the shared test's: both counters == the analytic forward, FlopCounterMode
    == the analytic step, and the counted forward is affine in L (no L^2 product hides anywhere)."""
    config = dict(n_items=60, max_len=8, d_model=16, n_layers=2, n_heads=2, n_interests=3,
                  memory_size=64, memory_topk=4) | extra
    w = build_workload("elastic", config, "train", batch_size=2)
    forward = w.model.forward_flops(2, 8)
    assert fvcore_forward_flops(w.forward_module, w.inputs).flops == forward
    meta = build_workload("elastic", config, "train", batch_size=2, device="meta")
    step = flopcounter_flops(meta.step)
    assert step == w.model.step_flops(2, 8)
    # the mean pool's weights are constants: its backward is one product, not two
    assert 3 * forward - step == (2 * 2 * 2 * 8 * 16 if w.model.config.interest_memory else 0)
    counted = []
    for L in (8, 16, 24):
        meta = build_workload("elastic", dict(config, max_len=L), "infer", batch_size=2, device="meta")
        with torch.no_grad():
            counted.append(flopcounter_flops(lambda: meta.forward_module(*meta.inputs)))
        assert counted[-1] == meta.model.forward_flops(2, L)
    assert counted[2] - counted[1] == counted[1] - counted[0] > 0


# --- config validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("bad,key", [
    (dict(n_interests=0), "n_interests"),
    (dict(n_interests=True), "n_interests"),
    (dict(memory_size=1000), "memory_size"),
    (dict(memory_size=-4), "memory_size"),
    (dict(memory_topk=129), "memory_topk"),
    (dict(memory_topk=2.5), "memory_topk"),
    (dict(d_model=15, n_heads=3), "d_model"),
    (dict(interest_memory="yes"), "interest_memory"),
    (dict(attn_dropout=1.0), "attn_dropout"),
])
def test_elastic_config_validation_names_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        models.build("elastic", **bad)


def test_elastic_odd_width_allowed_without_memory():
    model = models.build("elastic", **dict(ELASTIC_TINY, d_model=15, n_heads=3, interest_memory=False))
    item_seq, target = make_batch(2, 12, 50)
    model.loss(item_seq, target).backward()
