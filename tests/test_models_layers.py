"""The building blocks every model family shares (models/layers.py), against plain references:
RoPE, the causal depthwise conv, DropPath and the memory-saving gate."""
from __future__ import annotations

import math

import pytest
import torch

from models.layers import ACTIVATIONS, CausalDepthwiseConv1d, DropPath, FeedForward, RotaryEmbedding, gated
from tests.test_models_interface import assert_close


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


def test_feed_forward_flops_are_its_two_products():
    assert FeedForward(16, 48, 0.1).flops(3, 7) == 2 * (2 * 3 * 7 * 16 * 48)


def test_drop_path_per_sample():
    x = torch.ones(1000, 3, 2)
    dp = DropPath(0.25)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    kept = (y[:, 0, 0] != 0).float().mean().item()
    assert 0.65 < kept < 0.85 and torch.allclose(y[y != 0], torch.tensor(1 / 0.75))
    assert torch.all((y == 0).all(dim=(1, 2)) | (y != 0).all(dim=(1, 2)))  # whole samples


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
    plain = lambda y, a: y * ACTIVATIONS[act]()(a)  # noqa: E731
    y64, a64 = (torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda y, a: gated(y, a, act), (y64, a64))
    y, a = (torch.randn(4, 50, 16, requires_grad=True) for _ in range(2))
    g = torch.randn(4, 50, 16)
    assert torch.equal(gated(y, a, act), plain(y, a))  # the same forward ops
    grads = torch.autograd.grad(gated(y, a, act), (y, a), g)
    expected = torch.autograd.grad(plain(y, a), (y, a), g)
    for name, got, want in zip(("grad y", "grad a"), grads, expected, strict=True):
        assert_close(f"{act} {name}", want, got, rtol=1e-6, atol=1e-6)
    a2 = (a * 1.0).detach().requires_grad_()  # a fresh storage: a Linear output in the models
    one = y.numel() * y.element_size()
    assert _saved_bytes(gated, y, a2, act) == 2 * one  # y and a
    assert _saved_bytes(plain, y, a2) == (2 if act == "relu" else 3) * one  # relu keeps its output only
    with pytest.raises(ValueError, match="unknown gate activation"):
        gated(y, a, "tanh")
