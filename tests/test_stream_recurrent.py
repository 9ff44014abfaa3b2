"""Streaming of the recurrent models (Mamba4Rec, LRURec, RecBLR; tests/test_stream.py states the
contract for every model): the one-step ops against their sequence ops at float64, the state's size
per user, exactness at float64 over the configs that change what a step must keep (one Mamba layer
without the residual, RecBLR's pow2 pad modes and a window that is or is not a power of two), and
the step's FLOPs under the suite's counter (complex products x4)."""
from __future__ import annotations

import pytest
import torch

import models
from bench.measure.flops import flopcounter_flops
from models.layers import CausalDepthwiseConv1d
from models.ops import causal_conv1d_update, selective_state_update
from models.ops.selective_scan import selective_scan_ref
from tests.test_models_interface import SMALL, assert_close


def test_selective_state_update_steps_the_scan():
    """y_t, h_t of one step at a time equal selective_scan_ref's outputs; h is never written."""
    torch.manual_seed(0)
    B, L, D, N = 2, 7, 5, 3
    f64 = dict(dtype=torch.float64)
    u, Bm, C = torch.randn(B, L, D, **f64), torch.randn(B, L, N, **f64), torch.randn(B, L, N, **f64)
    delta, A, Dskip = torch.rand(B, L, D, **f64), -torch.rand(D, N, **f64), torch.randn(D, **f64)
    ref = selective_scan_ref(u, delta, A, Bm, C, Dskip)
    h = torch.zeros(B, D, N, **f64)
    for t in range(L):
        before = h.clone()
        y, h_next = selective_state_update(h, u[:, t], delta[:, t], A, Bm[:, t], C[:, t], Dskip)
        assert torch.equal(h, before)
        assert_close(f"t={t}", ref[:, t], y, rtol=1e-12, atol=1e-12)
        h = h_next


def test_causal_conv1d_update_steps_the_conv():
    torch.manual_seed(0)
    B, L, C, k = 2, 6, 4, 4
    conv = CausalDepthwiseConv1d(C, k).double()
    x = torch.randn(B, L, C, dtype=torch.float64)
    ref = conv(x)
    window = torch.zeros(B, C, k - 1, dtype=torch.float64)
    for t in range(L):
        before = window.clone()
        y, window_next = causal_conv1d_update(x[:, t], window, conv.conv.weight, conv.conv.bias)
        assert torch.equal(window, before)
        assert_close(f"t={t}", ref[:, t], y, rtol=1e-12, atol=1e-12)
        window = window_next


def _floats_per_user(model) -> int:
    """Real numbers a stream state keeps per user (a complex number is two)."""
    from models.base import state_tensors

    state = model.stream_init(1, SMALL["max_len"])
    return sum(t.numel() * (2 if t.is_complex() else 1) for t in state_tensors(state))


def test_state_size_formulas():
    d, n_layers = SMALL["d_model"], SMALL["n_layers"]
    mamba = models.build("mamba4rec", **SMALL, d_state=8, d_conv=3, expand=2)
    assert _floats_per_user(mamba) == n_layers * 2 * d * (8 + 3 - 1)  # D_in (N + d_conv - 1)
    assert _floats_per_user(models.build("lrurec", **SMALL)) == n_layers * 4 * d  # P = 2d complex
    recblr = models.build("recblr", **SMALL, d_conv=3, expand=2)
    assert _floats_per_user(recblr) == n_layers * 2 * d * 3  # H d_conv


CASES = [("mamba4rec", {}), ("mamba4rec", {"n_layers": 1}), ("mamba4rec", {"scan": "loop"}),
         ("lrurec", {}), ("lrurec", {"scan": "ref"}),
         ("recblr", {}), ("recblr", {"pow2_pad": "state"}), ("recblr", {"pow2_pad": "none"}),
         ("recblr", {"max_len": 16})]


@pytest.mark.parametrize("name,config", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_stream_equals_the_forward_at_float64(name, config):
    torch.manual_seed(0)
    model = models.build(name, **dict(SMALL, **config)).double().eval()
    L = model.config.max_len
    history = torch.randint(1, SMALL["n_items"], (3, L), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        state = model.stream_init(3, L)
        for t in range(L):
            u, state = model.stream_step(state, history[:, t])
            full = model.user_vector(torch.nn.functional.pad(history[:, : t + 1], (0, L - t - 1)))
            assert_close(f"{name} {config} t={t + 1}", full, u, rtol=1e-10, atol=1e-12)


def test_recblr_stream_follows_the_window_of_its_capacity():
    """The pow2 pad state depends on the padded width: stream_init(B, capacity) streams the forward
    over `capacity` slots (6 -> 2 pad slots, 12 -> 4), not over max_len."""
    torch.manual_seed(0)
    model = models.build("recblr", **SMALL).double().eval()
    history = torch.randint(1, SMALL["n_items"], (2, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for capacity in (6, 12):
            u, _ = model.stream_prefill(history, capacity)
            full = model.user_vector(torch.nn.functional.pad(history, (0, capacity - 5)))
            assert_close(f"capacity {capacity}", full, u, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["mamba4rec", "lrurec", "recblr"])
def test_stream_flops_equal_the_suite_counter(name):
    """stream_flops == bench.measure.flops.flopcounter_flops of one step and its scores: the suite's
    convention counts a complex multiply-add as 4 real ones (LRURec's projections), which plain
    FlopCounterMode does not."""
    torch.manual_seed(0)
    model = models.build(name, **SMALL).eval()
    L = SMALL["max_len"]
    with torch.inference_mode():
        _, state = model.stream_prefill(torch.randint(1, SMALL["n_items"], (3, L - 1)), L)
        counted = flopcounter_flops(lambda: model.scores(model.stream_step(state, torch.tensor([1, 2, 3]))[0]))
    assert counted == model.stream_flops(3, L)
