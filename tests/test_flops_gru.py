"""fvcore's `aten::gru` handle (bench/measure/flops.py) counts what FlopCounterMode counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from bench.measure.flops import flopcounter_flops, fvcore_forward_flops


class PackedGRU(nn.Module):
    """A GRU over a packed batch: the trace holds the `.data` overload of aten::gru."""

    def __init__(self, gru: nn.GRU, lengths: torch.Tensor):
        super().__init__()
        self.gru, self.lengths = gru, lengths

    def forward(self, x):
        packed = pack_padded_sequence(x, self.lengths, batch_first=self.gru.batch_first, enforce_sorted=False)
        return self.gru(packed)[0].data


def gru_product_flops(tokens, input_size, hidden, num_layers, directions):
    """2 x MACs: per token, per layer and direction, three gates read the input and the state."""
    widths = [input_size] + [directions * hidden] * (num_layers - 1)
    return sum(2 * tokens * directions * 3 * hidden * (width + hidden) for width in widths)


@pytest.mark.parametrize("bias,num_layers,bidirectional,batch_first", [
    (False, 1, False, True), (True, 1, False, False), (True, 2, False, True),
    (False, 1, True, True), (True, 2, True, False),
])
def test_gru_handle_matches_flopcounter(bias, num_layers, bidirectional, batch_first):
    torch.manual_seed(0)
    B, L, input_size, hidden = 3, 7, 5, 4
    gru = nn.GRU(input_size, hidden, num_layers=num_layers, bias=bias, bidirectional=bidirectional,
                 batch_first=batch_first)
    x = torch.randn(B, L, input_size) if batch_first else torch.randn(L, B, input_size)
    fvcore = fvcore_forward_flops(gru, (x,))
    with torch.no_grad():
        counter = flopcounter_flops(lambda: gru(x))
    assert "aten::gru" not in fvcore.unsupported_ops
    assert fvcore.flops == counter == gru_product_flops(B * L, input_size, hidden, num_layers, 1 + bidirectional)


def test_gru_handle_counts_packed_tokens_only():
    torch.manual_seed(0)
    gru = nn.GRU(5, 4, num_layers=2, batch_first=True)
    lengths = torch.tensor([7, 2, 5])
    module, x = PackedGRU(gru, lengths), torch.randn(3, 7, 5)
    fvcore = fvcore_forward_flops(module, (x,))
    with torch.no_grad():
        counter = flopcounter_flops(lambda: module(x))
    assert fvcore.flops == counter == gru_product_flops(int(lengths.sum()), 5, 4, 2, 1)
