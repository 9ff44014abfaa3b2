"""SASRec's declared departure from RecBole: the default `attention="sdpa"` (fused, causal, no
key-padding mask) against RecBole's materialised [B, 1, L, L] mask (models/sasrec.py docstring).

The generic test (tests/test_official_equivalence.py) compares RecBole with `attention="math"`;
here our default backend must give RecBole's user vector, scores, CE loss and every gradient, and
differ from the masked form only at padded query slots, which never reach a real one.
"""
from __future__ import annotations

import dataclasses

import torch

import models
from bench.adapters import official
from tests.test_official_equivalence import (
    REL_TOL,
    ZERO_SCALE,
    _require_peers,
    batch,
    grads,
    paired_checks,
    relative_error,
)

DIMS = dict(n_items=37, max_len=8, d_model=16, n_layers=2, n_heads=2)
LENGTHS = [1, 8, 3, 5, 2, 7]


def sdpa_pair(seed: int = 0):
    """(RecBole's SASRec twin, our default `sasrec` holding its weights), float64, dropout off."""
    adapter = official.twin_module("sasrec")
    torch.manual_seed(seed)
    twin = models.build("official/sasrec", **DIMS, **adapter.EQUIVALENCE["no_dropout"])
    config = adapter.ours_config(twin.recbole_config) | {"attention": "sdpa"}
    assert models.build("sasrec", n_items=37).config.attention == "sdpa"  # it is our default
    ours = models.build("sasrec", **config)
    twin.double().train()
    ours.double().train()
    ours.load_state_dict(adapter.to_ours(twin.official.state_dict()))
    return twin, ours, adapter


def test_default_sdpa_equals_recbole_masked_attention():
    _require_peers()
    twin, ours, adapter = sdpa_pair()
    assert not ours.materialise_mask  # no [B, 1, L, L] mask is built
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    checks = paired_checks(ours, twin, adapter.to_ours, item_seq, target)
    assert set(grads(ours)) == set(adapter.to_ours(grads(twin.official)))
    # the key bias's gradient is a mathematical zero (softmax shift invariance): ~1e-21 of rounding
    # noise on both sides, summed in another order by the fused kernel, so compared as a zero
    zeros = {k for k, (_, theirs) in checks.items() if theirs.abs().max() < ZERO_SCALE}
    assert {k for k in zeros if "key.bias" not in k} == set()
    assert all(checks[k][0].abs().max() < ZERO_SCALE for k in zeros)
    errors = {what: relative_error(a, b) for what, (a, b) in checks.items() if what not in zeros}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= REL_TOL, f"{worst} differs by {errors[worst]:.3e} (relative)"


def test_sdpa_differs_from_the_mask_only_at_padded_query_slots():
    """The key-padding mask only changes padded query rows: real slots agree, padded ones do not."""
    _require_peers()
    _, fused, _ = sdpa_pair()
    masked = models.build("sasrec", **dataclasses.asdict(fused.config) | {"attention": "math"})
    masked.double().train()
    masked.load_state_dict(fused.state_dict())
    item_seq, _ = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    real = item_seq != 0  # [B, L]
    hidden_fused, hidden_masked = fused(item_seq), masked(item_seq)  # [B, L, d]
    assert relative_error(hidden_fused[real], hidden_masked[real]) <= REL_TOL
    assert relative_error(hidden_fused[~real], hidden_masked[~real]) > 1e-3

