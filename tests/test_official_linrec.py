"""LinRec against the official code: its declared departure and declared property (models/linrec.py).

Equality with the official LinRec is the generic test (tests/test_official_equivalence.py -k linrec).
Declared here:
- the official forward builds RecBole's [B, 1, L, L] mask and never reads it; ours builds none.
  Shown: the official output is unchanged when that mask is all NaN, and ours has no mask.
- (property) `attn_dropout` is configured by the official code but never applied: turning the official
  attention-dropout modules on leaves the train-mode output deterministic and equal to ours.
"""
from __future__ import annotations

import torch

from tests.test_official_equivalence import (
    REL_TOL,
    _require_peers,
    batch,
    build_pair,
    relative_error,
)

DIMS = dict(n_items=37, max_len=8, d_model=16, n_layers=2, n_heads=2)
LENGTHS = [1, 8, 3, 5, 2, 7]


def test_official_mask_is_built_and_never_read():
    _require_peers()
    twin, ours = build_pair("linrec", DIMS)
    item_seq, _ = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    expected = twin.user_vector(item_seq)
    built = []
    recbole_mask = twin.official.get_attention_mask

    def nan_mask(seq, *args, **kwargs):  # [B, 1, L, L], as RecBole's, but all NaN
        built.append(recbole_mask(seq, *args, **kwargs).shape)
        return torch.full(built[-1], float("nan"), dtype=torch.float64)

    twin.official.get_attention_mask = nan_mask
    poisoned = twin.user_vector(item_seq)
    assert built == [(len(LENGTHS), 1, DIMS["max_len"], DIMS["max_len"])]  # the official builds it
    assert torch.equal(poisoned, expected)  # ... and no value of it reaches the output
    assert not ours.materialise_mask  # ours builds none
    assert relative_error(ours.user_vector(item_seq), expected) <= REL_TOL


def test_attention_dropout_is_never_applied():
    _require_peers()
    twin, ours = build_pair("linrec", DIMS)
    for layer in twin.official.trm_encoder.layer:
        layer.multi_head_attention.attn_dropout.p = 0.9  # configured, never called
    item_seq, _ = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    assert twin.official.training
    first, second = twin.user_vector(item_seq), twin.user_vector(item_seq)
    assert torch.equal(first, second)
    assert relative_error(ours.user_vector(item_seq), first) <= REL_TOL
    assert not any(isinstance(m, torch.nn.Dropout) for m in ours.layers[0].attention.kernel.modules())
