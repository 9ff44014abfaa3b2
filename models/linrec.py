"""LinRec (Liu et al., SIGIR 2023; Applied-Machine-Learning-Lab/LinRec `layers.py`).

LinRec is RecBole SASRec with only the attention kernel swapped (the official repo replaces
RecBole's layers.py and runs model='SASRec'), so this file reuses models/sasrec.py whole:
absolute positions, LN -> dropout on the input, post-LN blocks, GELU FFN, gather at n_b - 1, CE.

Attention, per head (q, k, v: [B, h, L, d_h] from the same biased projections):
  phi(x) = ELU(x)                          no "+1": features may be negative
  Q^ = phi(Q) / ||phi(Q)||_2               L2 norm per token over d_h (no epsilon, as official)
  K^ = phi(K) / ||phi(K)||_2               each key vector gets unit norm ("columns of K^T")
  C  = Q^ (K^^T V) / sqrt(d_h)             right association: K^^T V is d_h x d_h, linear in L
No causal or padding mask (padding slots enter the global sum), no attention dropout and no
denominator, exactly as the official code.

Deviation, declared: the official forward still builds RecBole's [B, 1, L, L] float mask and then
ignores it; that pure O(L^2) cost is left out here (the outputs are unchanged).

Streaming: `stream_mode = "recompute"` (not SASRec's "cache"): the attention is not causal (every
slot's K^^T V sums all L slots, padding included), so no per-event cache is exact; each event reruns
the whole forward over the window, `forward_flops(B, L)` per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sasrec import SASRec, TransformerConfig


@dataclass
class LinRecConfig(TransformerConfig):
    """Official LinRec `run.py` / `ml-1m.yaml` defaults."""

    max_len: int = 200
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 8
    d_inner: int = 256
    hidden_dropout: float = 0.2
    attn_dropout: float = 0.2  # configured by the official code but never applied


class LinRecAttention(nn.Module):
    """C = Q^ (K^^T V) / sqrt(d_h) with Q^, K^ the L2-normalised ELU features (no mask)."""

    def forward(self, q, k, v, mask=None) -> torch.Tensor:
        q, k = F.elu(q), F.elu(k)
        q = q / q.norm(dim=-1, keepdim=True)  # [B, h, L, d_h], unit norm per token
        k = k / k.norm(dim=-1, keepdim=True)
        kv = k.transpose(-2, -1) @ v  # [B, h, d_h, d_h]
        return (q @ kv) / math.sqrt(q.shape[-1])  # [B, h, L, d_h]


class LinRec(SASRec):
    causal = False  # global sums over all L slots, padding included
    stream_mode = "recompute"  # not causal: every slot's output changes with each new event
    faithful_to = "Applied-Machine-Learning-Lab/LinRec@0a924d6 layers.py on RecBole SASRec"
    config_class = LinRecConfig

    def make_kernel(self, config) -> nn.Module:
        return LinRecAttention()

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        """K^^T V and Q^ (K^^T V): 2 x 2 B h L d_h^2 = 4 B L d d_h."""
        c = self.config
        return 4 * batch_size * seq_len * c.d_model * c.head_dim
