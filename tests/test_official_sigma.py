"""SIGMA's declared departures from the official code, each shown to be exactly what is declared
(the equality at the official behaviour is tests/test_official_equivalence.py)."""
from __future__ import annotations

import torch

from bench.adapters import official
from models.sigma import SIGMAConfig
from tests.test_official_equivalence import (
    REL_TOL,
    _require_peers,
    batch,
    build_pair,
    ours_holding,
    relative_error,
)
from tests.test_official_mamba4rec import worst_error

DIMS = {"n_items": 37, "max_len": 8, "d_model": 16, "n_layers": 2, "n_heads": 2}
DEFAULT_FLIP_KEEP = SIGMAConfig.flip_keep


def test_flip_length_scales_with_L_and_equals_official_at_its_L_50():
    """Declared: ours flips P = L - flip_keep slots (default flip_keep 5), the official code the
    first 45 whatever L. At the official L = 50 our DEFAULT config flips the same 45 slots and
    equals the official code; at L = 8 the twin's config needs flip_keep = 0 (all 8 flipped)."""
    _require_peers()
    assert DEFAULT_FLIP_KEEP == 5
    dims = DIMS | {"max_len": 50}
    twin, _ = build_pair("sigma", dims)
    assert official.twin_module("sigma").ours_config(twin.recbole_config)["flip_keep"] == DEFAULT_FLIP_KEEP
    ours, _ = ours_holding("sigma", twin, flip_keep=DEFAULT_FLIP_KEEP)
    item_seq, target = batch(dims["n_items"], 50, [1, 50, 44, 45, 46, 20])
    what, error = worst_error("sigma", twin, ours, item_seq, target)
    assert error <= REL_TOL, f"{what} differs by {error:.3e}"


def test_default_flip_at_short_L_is_a_different_model():
    """The other side of the same departure: at L = 8 our default flips 3 slots, the official code
    all 8, so the models differ, far beyond rounding (user vector about 8e-6 relative at the init's
    small weights, gradients over 1e-3), while flip_keep = 0 (the twin's config) is equal."""
    _require_peers()
    twin, _ = build_pair("sigma", DIMS)
    assert official.twin_module("sigma").ours_config(twin.recbole_config)["flip_keep"] == 0
    ours, _ = ours_holding("sigma", twin, flip_keep=DEFAULT_FLIP_KEEP)
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], [8, 7, 5, 3])
    with official.float64_without_dropout(), torch.no_grad():
        user_error = relative_error(ours.user_vector(item_seq), twin.user_vector(item_seq))
    assert user_error > 1e3 * REL_TOL, f"user vector: {user_error:.3e}"
    what, error = worst_error("sigma", twin, ours, item_seq, target)
    assert error > 1e-3, f"{what}: {error:.3e}"


def test_gate_dropout_is_hard_coded_and_the_same_in_eval_mode():
    """The official gates' Dropout(0.2) has no config key (the equivalence test's context removes
    it): with dropout_prob = 0 the official model is still stochastic in train mode. In eval mode,
    without any scaffolding but the float64 casts, ours (gate_dropout 0.2, as official) equals it."""
    _require_peers()
    twin, ours = build_pair("sigma", DIMS)
    assert ours.config.gate_dropout == 0.2
    item_seq, _ = batch(DIMS["n_items"], DIMS["max_len"], [1, 8, 3, 5])
    with official.keep_float64(), torch.no_grad():
        torch.manual_seed(1)
        first = twin.user_vector(item_seq)
        assert not torch.equal(first, twin.user_vector(item_seq))  # the hard-coded gate dropout
        twin.eval()
        ours.eval()
        error = relative_error(ours.user_vector(item_seq), twin.user_vector(item_seq))
    assert error <= REL_TOL, f"eval-mode user vector differs by {error:.3e}"
