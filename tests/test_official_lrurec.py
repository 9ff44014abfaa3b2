"""official/lrurec: each declared departure of models/lrurec.py against the official port
(RecGRELA-paper `model/LRURec.py`, RecBole), measured in float64 with the twin's weights.

The generic test (tests/test_official_equivalence.py -k lrurec) shows equality at L = 6, which
the port left-pads to 8 with its padding-mask gate; here the other lengths and options."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import models
from bench.adapters import official
from tests.test_official_equivalence import (
    REL_TOL,
    _require_peers,
    batch,
    build_pair,
    grads,
    ours_holding,
    relative_error,
)

DIMS = dict(n_items=37, max_len=6, d_model=16, n_layers=2, n_heads=2)


def twin_module():
    return official.twin_module("lrurec")


def differences(twin, ours, item_seq, target) -> dict[str, float]:
    """Relative error of user vector, scores, CE loss and every gradient of ours vs the twin."""
    with official.keep_float64():
        checks = {"user vector": (ours.user_vector(item_seq), twin.user_vector(item_seq)),
                  "full scores": (ours.full_scores(item_seq), twin.full_scores(item_seq))}
        loss_ours, loss_twin = ours.loss(item_seq, target), twin.loss(item_seq, target)
        twin.official.zero_grad(set_to_none=True)
        loss_ours.backward()
        loss_twin.backward()
    checks["CE loss"] = (loss_ours, loss_twin)
    ours_grads, twin_grads = grads(ours), twin_module().to_ours(grads(twin.official))
    checks |= {f"grad {k}": (ours_grads[k], twin_grads[k]) for k in ours_grads}
    return {what: relative_error(a.detach(), b.detach()) for what, (a, b) in checks.items()}


def assert_equal(errors: dict[str, float]):
    worst = max(errors, key=errors.get)
    assert errors[worst] <= REL_TOL, f"{worst}: {errors[worst]:.3e}"


@pytest.mark.parametrize("max_len, scan", [(5, "parallel"), (9, "parallel"), (6, "sequential")])
def test_no_power_of_two_padding_nor_mask_same_outputs(max_len, scan):
    """Declared: the port's move to the right, its left padding to 2^ceil(log2 L) (5 -> 8, 9 -> 16)
    and its mask gate on the carry are output-neutral for the last real slot under right padding,
    and so is our scan (linear_scan, or the loop oracle) against its block doubling: equal to 1e-9,
    gradients included, for lengths 1..L."""
    _require_peers()
    dims = DIMS | {"max_len": max_len}
    item_seq, target = batch(dims["n_items"], max_len, [1, max_len, 3, 4, 2, max_len - 1])
    twin, _ = build_pair("lrurec", dims)
    assert_equal(differences(twin, ours_holding("lrurec", twin, scan=scan)[0], item_seq, target))


def test_loss_is_last_slot_ce_in_both():
    """Declared against yueqirex/LRURec (CE on every position): this port, the official code of
    the comparison, scores only the last real item's slot, B logit rows, as ours. Its
    calculate_loss is the mean CE of its own full_sort_predict rows; ours the same of its own."""
    _require_peers()
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], [1, 6, 3, 5, 2, 5])
    twin, ours = build_pair("lrurec", DIMS)
    with official.keep_float64():
        twin_loss, twin_rows = twin.loss(item_seq, target), F.cross_entropy(twin.full_scores(item_seq), target)
    assert relative_error(twin_loss.detach(), twin_rows.detach()) <= 1e-15
    ours_rows = F.cross_entropy(ours.full_scores(item_seq), target)
    assert relative_error(ours.loss(item_seq, target).detach(), ours_rows.detach()) <= 1e-15


def test_padding_row_is_learnable_in_both():
    """Declared "no padding_idx" (yueqirex); the port sets padding_idx=0 but its truncated init
    overwrites that row and its pad slots never reach the user vector, so the difference is
    inert: row 0 is random in both and gets the same (logits-only, nonzero) gradient."""
    _require_peers()
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], [1, 6, 3, 5, 2, 5])
    twin, ours = build_pair("lrurec", DIMS)
    assert twin.official.item_embedding.padding_idx == 0 and ours.item_embedding.padding_idx is None
    assert twin.official.item_embedding.weight[0].abs().min() > 0
    differences(twin, ours, item_seq, target)
    row_ours, row_twin = ours.item_embedding.weight.grad[0], twin.official.item_embedding.weight.grad[0]
    assert row_twin.abs().max() > 0 and relative_error(row_ours, row_twin) <= REL_TOL


def test_truncated_normal_init_of_the_same_tensors():
    """Kept as official: every tensor but the LayerNorms and params_log ~ N(0, 0.02^2) cut at
    +-0.04 (real and imaginary parts), the others untouched; the same tensors in both."""
    _require_peers()
    torch.manual_seed(0)
    twin = models.build("official/lrurec", **DIMS)
    ours = models.build("lrurec", **twin_module().ours_config(twin.recbole_config))

    def truncated(state: dict) -> set[str]:
        real = {k: (torch.view_as_real(v) if v.is_complex() else v).detach() for k, v in state.items()}
        return {k for k, v in real.items() if v.abs().max() <= 0.04 and v.std() > 0.01}

    twin_state = twin_module().to_ours(dict(twin.official.named_parameters()))
    ours_state = dict(ours.named_parameters())
    assert truncated(twin_state) == truncated(ours_state)
    assert truncated(ours_state) == {k for k in ours_state if "norm" not in k and "params_log" not in k}


def test_complex_projections_follow_the_real_dtype():
    """complex64 at the default float32 (as official), complex128 after `.double()` (in both
    our model and the twin, so that the float64 equivalence is not capped at complex64)."""
    _require_peers()
    ours = models.build("lrurec", **DIMS)
    twin = models.build("official/lrurec", **DIMS)
    def ours_weight():
        return ours.blocks[0].lru.in_proj.weight.dtype
    def twin_weight():
        return twin.official.encoder.lru_blocks[0].lru_layer.in_proj.weight.dtype
    assert ours_weight() == twin_weight() == torch.complex64
    ours.double(), twin.double()
    assert ours_weight() == twin_weight() == torch.complex128
    ours.float(), twin.float()
    assert ours_weight() == twin_weight() == torch.complex64
