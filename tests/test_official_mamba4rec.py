"""Mamba4Rec against its official twin beyond the generic test (tests/test_official_equivalence.py,
which runs our default `scan=chunked`): the other scan paths, the one-layer wrapper, and the
declared init shortcut. `worst_error` is shared with the EchoMamba4Rec and SIGMA twin tests."""
from __future__ import annotations

import contextlib

import pytest
import torch

import models
from bench.adapters import official
from tests.test_official_equivalence import (
    REL_TOL,
    _require_peers,
    batch,
    build_pair,
    ours_holding,
    paired_checks,
    relative_error,
)

DIMS = {"n_items": 37, "max_len": 8, "d_model": 16, "n_layers": 2, "n_heads": 2}
LENGTHS = [1, 8, 3, 5, 2, 7]


def worst_error(name: str, twin, ours, item_seq, target, context=None) -> tuple[str, float]:
    """(what, relative error) of the worst of: user vector, full scores, CE loss and every gradient of
    ours (its parameters that the mapped official gradients name), one forward/backward each."""
    module = official.twin_module(name)
    context = context or module.EQUIVALENCE.get("context", contextlib.nullcontext)
    checks = paired_checks(ours, twin, module.to_ours, item_seq, target, context)
    errors = {what: relative_error(a, b) for what, (a, b) in checks.items()}
    worst = max(errors, key=errors.get)
    return worst, errors[worst]


@pytest.mark.parametrize("scan", ["loop", "ref"])
def test_other_scan_paths_equal_official(scan):
    """The generic test runs `scan=chunked`; the per-step loop and the selective_scan_ref-style
    oracle compute the same user vector, scores, loss and gradients as the official code."""
    _require_peers()
    twin, _ = build_pair("mamba4rec", DIMS)
    ours, _ = ours_holding("mamba4rec", twin, scan=scan)
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    what, error = worst_error("mamba4rec", twin, ours, item_seq, target)
    assert error <= REL_TOL, f"scan={scan}: {what} differs by {error:.3e}"


def test_one_layer_drops_the_residual_as_official():
    """With ONE layer the official MambaLayer has no residual (X' = LN(Dropout(Mamba(X)))); ours too."""
    _require_peers()
    dims = DIMS | {"n_layers": 1}
    twin, ours = build_pair("mamba4rec", dims)
    assert not ours.layers[0].residual
    item_seq, target = batch(dims["n_items"], dims["max_len"], LENGTHS)
    what, error = worst_error("mamba4rec", twin, ours, item_seq, target)
    assert error <= REL_TOL, f"{what} differs by {error:.3e}"


def test_mamba_dt_init_does_not_survive_recbole_init():
    """Declared: RecBole's `_init_weights` reaches Mamba's Linears, so the official dt_proj bias ends
    at 0 (Mamba's inverse-softplus dt init is overwritten), which is why ours never computes it."""
    _require_peers()
    torch.manual_seed(0)
    twin = models.build("official/mamba4rec", **DIMS)
    ours = models.build("mamba4rec", **official.twin_module("mamba4rec").ours_config(twin.recbole_config))
    for layer_twin, layer_ours in zip(twin.official.mamba_layers, ours.layers):
        assert torch.count_nonzero(layer_twin.mamba.dt_proj.bias) == 0
        assert torch.count_nonzero(layer_ours.mixer.dt_proj.bias) == 0
        assert torch.equal(layer_twin.mamba.A_log, layer_ours.mixer.A_log)  # S4D-real, both
