"""The key/value cache of the causal attention models (SASRec, EulerFormer; models/sasrec.py
"Streaming"): beyond tests/test_stream.py, the step against the full forward with every per-slot
parameter of EulerFormer's transform away from its identity init, in float64, with the "math"
backend; the cache written only at its own slot; the limits; the FLOP count at every length."""
from __future__ import annotations

import pytest
import torch

import models
from tests.test_models_interface import SMALL, assert_close

CACHED = ["sasrec", "eulerformer"]


def _model(name: str, seed: int = 0, **config):
    torch.manual_seed(seed)
    model = models.build(name, **dict(SMALL, **config)).eval()
    with torch.no_grad():  # RecBole's init (std 0.02) makes the attention almost uniform: sharpen it
        for layer in model.layers:
            layer.attention.query.weight.mul_(30.0)
            layer.attention.key.weight.mul_(30.0)
    if name == "eulerformer":  # move every position-dependent part off its identity init
        with torch.no_grad():
            model.input_phase.weight.normal_(0.0, 1.0)  # R[t]
            for layer in model.layers:
                layer.attention.qk_transform.delta.fill_(0.7)
                if layer.attention.qk_transform.bias is not None:
                    layer.attention.qk_transform.bias.fill_(0.3)
    return model


def _history(B: int, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, SMALL["n_items"], (B, n), generator=torch.Generator().manual_seed(seed))


def _every_prefix(model, history, dtype=torch.float32, rtol=1e-4, atol=1e-5):
    L = model.config.max_len
    with torch.no_grad():
        state = model.stream_init(history.shape[0], L)
        for t in range(history.shape[1]):
            u, state = model.stream_step(state, history[:, t])
            assert u.dtype == dtype
            full = model.user_vector(torch.nn.functional.pad(history[:, : t + 1], (0, L - t - 1)))
            assert_close(f"t={t + 1}", full, u, rtol=rtol, atol=atol)


SHARED = [{}, {"attention": "math"}, {"n_heads": 4}]
CONFIGS = [(name, config) for name in CACHED for config in SHARED] + \
    [("eulerformer", {"euler_bias": False}), ("eulerformer", {"angle_params": True})]


@pytest.mark.parametrize(("name", "config"), CONFIGS)
def test_every_prefix_with_the_transform_off_its_init(name, config):
    _every_prefix(_model(name, **config), _history(3, SMALL["max_len"]))


@pytest.mark.parametrize("name", CACHED)
def test_float64_is_exact(name):
    _every_prefix(_model(name).double(), _history(2, SMALL["max_len"]), torch.float64, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", CACHED)
def test_a_step_writes_its_own_slot_only(name):
    """The buffers are shared by the old and the new state; a step writes slot t of every layer's
    keys and values, leaves the slots below it as they were and the slots above it zero."""
    model = _model(name)
    capacity = SMALL["max_len"]
    with torch.no_grad():
        _, state = model.stream_prefill(_history(2, 5), capacity)
        before = [b.clone() for b in state["keys"] + state["values"]]
        _, after = model.stream_step(state, torch.tensor([3, 4]))
    buffers = state["keys"] + state["values"]
    assert all(a is b for a, b in zip(after["keys"] + after["values"], buffers))
    assert state["length"] == 5 and after["length"] == 6
    assert len(buffers) == 2 * SMALL["n_layers"]
    for old, new in zip(before, buffers):
        assert new.shape == (2, SMALL["n_heads"], capacity, SMALL["d_model"] // SMALL["n_heads"])
        assert torch.equal(old[:, :, :5], new[:, :, :5])
        assert new[:, :, 5].abs().sum() > 0
        assert not new[:, :, 6:].any()


@pytest.mark.parametrize("name", CACHED)
def test_the_state_is_on_the_model_dtype_and_holds_only_the_cache(name):
    model = _model(name).double()
    state = model.stream_init(3, 7)
    assert state["length"] == 0 and set(state) == {"length", "keys", "values"}
    assert all(b.dtype == torch.float64 and not b.any() for b in state["keys"] + state["values"])
    d, layers = SMALL["d_model"], SMALL["n_layers"]
    assert model.stream_state_bytes(state) == 2 * layers * 3 * 7 * d * 8


@pytest.mark.parametrize("name", CACHED)
def test_a_step_beyond_the_capacity_or_the_positions_raises(name):
    model = _model(name)
    L = SMALL["max_len"]
    with torch.no_grad():
        _, state = model.stream_prefill(_history(2, 4), 4)
        with pytest.raises(ValueError, match="capacity 4"):
            model.stream_step(state, torch.tensor([1, 2]))
        _, state = model.stream_prefill(_history(2, L), 2 * L)  # room in the cache, no position P[L]
        with pytest.raises(ValueError, match=f"max_len {L}"):
            model.stream_step(state, torch.tensor([1, 2]))


@pytest.mark.parametrize("name", CACHED)
def test_stream_flops_equal_the_counter_at_every_length(name):
    from torch.utils.flop_counter import FlopCounterMode

    model = _model(name)
    B = 2
    with torch.inference_mode():
        state = model.stream_init(B, SMALL["max_len"])
        for t in range(SMALL["max_len"]):
            with FlopCounterMode(display=False) as counter:
                u, state = model.stream_step(state, torch.tensor([1, 2]))
                model.scores(u)
            assert counter.get_total_flops() == model.stream_flops(B, t + 1), f"length {t + 1}"
    # O(L) per event: each cached key adds q K^T and A V in every layer
    d, layers = SMALL["d_model"], SMALL["n_layers"]
    assert model.stream_flops(B, 9) - model.stream_flops(B, 8) == layers * 4 * B * d


def test_linrec_is_not_causal_and_recomputes():
    model = _model("linrec")
    assert model.stream_mode == "recompute"
    with pytest.raises(NotImplementedError, match="recomput"):
        model.stream_init(2, SMALL["max_len"])
    with pytest.raises(NotImplementedError, match="recomput"):
        model.stream_step({"length": 0}, torch.tensor([1, 2]))
    assert model.stream_flops(2, SMALL["max_len"]) == model.forward_flops(2, SMALL["max_len"])
    assert models.model_class("elastic").stream_mode == "recompute"


def test_a_step_reuses_the_layers_parameters():
    """The step adds no parameter and reads the layer's own: perturbing W_V of layer 0 changes u."""
    model = _model("sasrec")
    n_params = model.num_params()
    history = _history(2, 3)
    with torch.no_grad():
        first, _ = model.stream_prefill(history, SMALL["max_len"])
        model.layers[0].attention.value.weight.add_(0.1 * torch.randn_like(model.layers[0].attention.value.weight))
        second, _ = model.stream_prefill(history, SMALL["max_len"])
        assert_close("after W_V", model.user_vector(torch.nn.functional.pad(history, (0, 9))), second,
                     rtol=1e-4, atol=1e-5)
    assert model.num_params() == n_params
    assert not torch.equal(first, second)
