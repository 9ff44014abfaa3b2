"""EchoMamba4Rec's declared departures from the official code, each shown to be exactly what is
declared (the equality at the official behaviour is tests/test_official_equivalence.py)."""
from __future__ import annotations

import pytest
import torch

import models
from tests.test_official_equivalence import REL_TOL, _require_peers, batch, build_pair, ours_holding
from tests.test_official_mamba4rec import worst_error

DIMS = {"n_items": 37, "max_len": 8, "d_model": 16, "n_layers": 2, "n_heads": 2}
LENGTHS = [1, 8, 3, 5, 2, 7]


def test_unused_attention_block_is_only_parameters():
    """Declared: the official never-called MultiQueryTransformerBlock is left out by default. Ours
    without it lacks exactly those tensors (15 d^2 + 18 d per layer) and computes the same user
    vector, scores, loss and gradients; the official block's parameters never get a gradient."""
    _require_peers()
    twin, with_block = build_pair("echomamba4rec", DIMS)
    ours, result = ours_holding("echomamba4rec", twin, strict=False, unused_attention_block=False)
    assert not result.missing_keys
    assert result.unexpected_keys and all(".unused_attention." in k for k in result.unexpected_keys)
    assert set(result.unexpected_keys) == {k for k in with_block.state_dict() if ".unused_attention." in k}
    d, n = DIMS["d_model"], DIMS["n_layers"]
    assert with_block.num_params()[0] - ours.num_params()[0] == n * (15 * d * d + 18 * d)
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    what, error = worst_error("echomamba4rec", twin, ours, item_seq, target)
    assert error <= REL_TOL, f"{what} differs by {error:.3e}"
    unused = [p for k, p in twin.official.named_parameters() if "multi_query_transformer_block" in k]
    assert unused and all(p.grad is None for p in unused)


def test_filter_weight_drops_only_the_broadcast_axis():
    """Declared: W is stored as [L//2+1, d, 2], the official [1, L//2+1, d, 2] without its axis of 1."""
    _require_peers()
    twin, ours = build_pair("echomamba4rec", DIMS)
    for layer_twin, layer_ours in zip(twin.official.mamba_layers, ours.layers):
        official_weight = layer_twin.filter_layer.complex_weight
        assert official_weight.shape[0] == 1
        assert torch.equal(layer_ours.filter.weight, official_weight[0])


def test_num_heads_of_the_yaml_is_not_read():
    """Declared: the config's num_heads (8 in the YAML) is unused: the official model built with
    another value has the same parameters and computes the same loss."""
    _require_peers()
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    losses, counts = [], []
    for num_heads in (8, 2):
        torch.manual_seed(0)
        twin = models.build("official/echomamba4rec", **DIMS, dropout_prob=0.0, num_heads=num_heads).double()
        losses.append(twin.loss(item_seq, target))
        counts.append(twin.num_params())
    assert counts[0] == counts[1]
    assert torch.equal(losses[0], losses[1])


def test_other_lengths_raise_where_official_may_run_silently():
    """Declared: an input of L != max_len raises ValueError in ours. The official filter fails for
    most such L but runs when L//2+1 equals max_len//2+1 (here max_len 9 and L 8: 5 bins each)."""
    _require_peers()
    dims = DIMS | {"max_len": 9}
    twin, ours = build_pair("echomamba4rec", dims)
    item_seq, _ = batch(dims["n_items"], 8, [8, 3])
    assert twin.user_vector(item_seq).shape == (2, dims["d_model"])  # silently accepted
    with pytest.raises(ValueError, match="max_len=9"):
        ours.user_vector(item_seq)
    with pytest.raises(RuntimeError):
        twin.user_vector(batch(dims["n_items"], 7, [7])[0])  # 4 bins against 5
