"""RecGRELA's declared departures from the official code, each shown to be exactly what is declared
(the equality with the official behaviour is tests/test_official_equivalence.py)."""
from __future__ import annotations

import sys

import pytest
import torch

from bench.adapters import official
from tests.test_official_equivalence import _require_peers, batch, build_pair, relative_error

DIMS = {"n_items": 37, "max_len": 8, "d_model": 16, "n_layers": 2, "n_heads": 2}


def test_official_cpu_conv_fallback_crashes_so_the_twin_uses_the_reference_conv():
    """Declared: the official pure-PyTorch conv fallback is not followed (it adds a [B, d, L] tensor
    to a [B, L, d] one). The twin therefore runs the CUDA path's math (`causal_conv1d_ref`)."""
    _require_peers()
    official_class, subs = official.load_official("recgrela")
    assert any("causal_conv1d_ref" in s for s in subs)
    twin, _ = build_pair("recgrela", DIMS)
    item_seq, _ = batch(DIMS["n_items"], DIMS["max_len"], [8, 3])
    official_module = sys.modules[official_class.__module__]
    reference = official_module.causal_conv1d_fn
    official_module.causal_conv1d_fn = None  # what the file does when causal_conv1d is missing
    try:
        with pytest.raises(RuntimeError, match="size of tensor"):
            twin.user_vector(item_seq)
    finally:
        official_module.causal_conv1d_fn = reference


def test_float32_difference_is_rounding_only():
    """Declared: 1/L is applied once to the d_h x d_h product instead of L^-1/2 on K^r and on V.
    In the benchmark's float32 the two codes then differ by rounding only."""
    _require_peers()
    twin, ours = build_pair("recgrela", DIMS)
    twin.float().eval()
    ours.float().eval()
    item_seq, _ = batch(DIMS["n_items"], DIMS["max_len"], [1, 8, 5, 2])
    with torch.no_grad():
        error = relative_error(ours.user_vector(item_seq), twin.user_vector(item_seq))
    assert error < 1e-5
