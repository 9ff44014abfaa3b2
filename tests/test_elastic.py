"""ELASTIC-style reconstruction: parameter count, fast paths against loop oracles, the declared
quirks (padding, no L x L tensor, sparse memory reads), FLOP accounting and config validation."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import models
import models.elastic
from bench.grid import Point
from bench.measure.flops import flopcounter_flops, fvcore_forward_flops
from bench.point import base_row
from bench.workload import build_workload, make_batch
from models.elastic import Elastic, ElasticConfig, LinearDispatcherAttention, ProductKeyMemory
from tests.test_models import assert_close

TINY = dict(n_items=50, max_len=12, d_model=16, n_layers=2, n_heads=2, n_interests=3,
            memory_size=64, memory_topk=4)


def test_declared_labels():
    assert Elastic.reconstruction is True and Elastic.causal is False
    assert "reconstruction" in Elastic.faithful_to
    assert "RECONSTRUCTED" in models.elastic.__doc__ and "| choice | abstract claim served |" in models.elastic.__doc__
    row = base_row(Point("elastic", (), "infer", "seq_len", seq_len=12, batch_size=2, n_layers=1,
                         n_heads=2, d_model=16, n_items=40))
    assert row["reconstruction"] is True and row["causal"] is False


# --- parameter count of the default configuration, from the formulas --------------------------
def test_default_parameter_count():
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
def test_product_key_read_equals_exhaustive_search():
    """Top-t of the t x t candidate pairs is the exact top-t of all M slots (Lample et al.)."""
    torch.manual_seed(0)
    memory = ProductKeyMemory(ElasticConfig(d_model=8, n_heads=1, memory_size=256, memory_topk=5)).double()
    with torch.no_grad():
        memory.sub_keys.normal_()
        memory.values.weight.normal_()
    query = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 8, dtype=torch.float64)
    fast, ref = memory(query), memory.reference(query)
    assert_close("read", ref, fast, rtol=1e-12, atol=1e-12)
    inputs = (query, memory.sub_keys, memory.values.weight)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), inputs)
    for name, a, b in zip(("query", "sub_keys", "values"), grads_ref, grads_fast):
        assert_close(name, a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("static", [False, True], ids=["per-user", "static"])
def test_dispatcher_attention_equals_loop(static):
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
    fast, ref = block(h, experts, attendable), block.reference(h, experts, lengths)
    assert_close("LDA", ref, fast, rtol=1e-10, atol=1e-12)
    inputs = (h, *(() if static else (experts,)), *block.parameters())
    grads_fast = torch.autograd.grad((fast * upstream).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), inputs)
    names = ["h"] + ([] if static else ["experts"]) + [n for n, _ in block.named_parameters()]
    assert static == ("static_experts" in names)
    for name, a, b in zip(names, grads_ref, grads_fast):
        assert_close(name, a, b, rtol=1e-10, atol=1e-12)


# --- the quirks the model declares ---------------------------------------------------------------
def test_padding_never_reaches_real_slots():
    """Real-slot outputs do not depend on how much padding follows, nor on the padding vector."""
    torch.manual_seed(0)
    model = models.build("elastic", **dict(TINY, max_len=20)).eval()
    item_seq, _ = make_batch(3, 12, 50, seed=1)
    real = item_seq != 0
    assert not real.all()  # the batch does have padding
    wider = torch.cat([item_seq, torch.zeros(3, 8, dtype=item_seq.dtype)], dim=1)
    with torch.no_grad():
        out = model(item_seq)
        assert_close("more padding", out[real], model(wider)[:, :12][real], rtol=1e-5, atol=1e-6)
        model.item_embedding.weight[0].normal_()  # a different frozen padding vector
        assert_close("padding vector", out[real], model(item_seq)[real], rtol=1e-5, atol=1e-6)
        empty = model(torch.zeros(1, 12, dtype=torch.long))  # all padding: slot 0 guard, no NaN
    assert torch.isfinite(empty).all()


def test_later_items_reach_earlier_slots():
    """Declared non-causal: an item after slot t changes slot t (through the dispatch and the pool)."""
    torch.manual_seed(0)
    for memory in (True, False):
        model = models.build("elastic", **TINY, interest_memory=memory).eval()
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


def test_no_length_squared_tensor():
    """No tensor of a forward + backward has two axes of length L (checked with a prime L that no other
    size equals); the same probe does find SASRec's L x L attention."""
    L = 29
    quadratic = lambda shapes: [s for s in shapes if list(s).count(L) >= 2]  # noqa: E731
    assert quadratic(shapes_of_forward_backward("sasrec", L, attention="math"))  # the probe can fail
    for memory in (True, False):
        shapes = shapes_of_forward_backward("elastic", L, n_interests=5, memory_size=64, memory_topk=4,
                                      interest_memory=memory)
        assert not quadratic(shapes), quadratic(shapes)


def test_memory_is_read_sparsely():
    """Only the slots each expert selected receive gradient: at most layers x B x k x t of M rows."""
    torch.manual_seed(0)
    config = dict(TINY, memory_size=32 ** 2, memory_topk=4)
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
def test_flops_counted_exactly_and_linear_in_length(extra):
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
def test_config_validation_names_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        models.build("elastic", **bad)


def test_odd_width_allowed_without_memory():
    model = models.build("elastic", **dict(TINY, d_model=15, n_heads=3, interest_memory=False))
    item_seq, target = make_batch(2, 12, 50)
    model.loss(item_seq, target).backward()
