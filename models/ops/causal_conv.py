"""One step of the causal depthwise conv (models/layers.py `CausalDepthwiseConv1d`), for streaming.

The conv of the Mamba block (Mamba4Rec) and of RecBLR's gated recurrent layer reads, at slot t,
its inputs at slots t-k+1..t (zeros before slot 0):

    y_t,c = b_c + sum_j w_{c,j} x_{t-k+1+j, c},    j = 0..k-1

so a stream keeps the last k - 1 inputs of every channel, the conv window [B, C, k-1] (oldest
first, zeros at the start), and one step is a conv over exactly k inputs: O(C k) whatever t, as
Dao-AILab/causal-conv1d's `causal_conv1d_update` (here without the fused activation, and returning
a new window rather than rolling it in place).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv1d_update", "causal_conv1d_update_flops"]


def causal_conv1d_update(
    x: torch.Tensor, window: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv's output at the new slot and the next window; `window` is not modified.

    x:      [B, C]        the new input x_t
    window: [B, C, k-1]   x_{t-k+1}..x_{t-1}, oldest first (zeros before slot 0)
    weight: [C, 1, k]     the depthwise Conv1d's weight (`CausalDepthwiseConv1d.conv.weight`)
    bias:   [C] or None
    -> y_t [B, C], window' [B, C, k-1] (x_{t-k+2}..x_t)
    One F.conv1d over the k inputs with one output: 2 B C k FLOPs (`causal_conv1d_update_flops`),
    where the sequence conv at L = 1 computes k outputs (the k - 1 it drops included).
    """
    inputs = torch.cat([window, x.unsqueeze(-1)], dim=-1)  # [B, C, k]
    y = F.conv1d(inputs, weight, bias, groups=x.shape[1]).squeeze(-1)  # [B, C, 1] -> [B, C]
    return y, inputs[..., 1:]


def causal_conv1d_update_flops(batch_size: int, channels: int, kernel_size: int) -> int:
    """Product FLOPs of one `causal_conv1d_update`: 2 x (B C k) multiply-adds."""
    return 2 * batch_size * channels * kernel_size
