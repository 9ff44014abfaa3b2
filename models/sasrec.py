"""SASRec as RecBole runs it (Kang & McAuley, ICDM 2018; RUCAIBox/RecBole `sasrec.py`, `layers.py`).

Embedding:  H0 = Dropout(LN(E[S] + P))                 learnable absolute positions, LN before dropout
Layer (post-LN, n_layers times):
  Q, K, V = H W_Q + b_Q, H W_K + b_K, H W_V + b_V      split into h heads of d_h = d / h
  A = softmax(Q K^T / sqrt(d_h) + M) V                  causal (+ key padding) attention
  H' = LN1(H + Dropout(A W_O + b_O))
  H  = LN2(H' + Dropout(W2 GELU(W1 H' + b1) + b2))      no dropout between W1 and W2
Output: u = H[n_b - 1]; scores u E^T; CE over all N ids.

Two attention backends (config `attention`), both exact for the user vector:
- "sdpa" (default): fused `scaled_dot_product_attention(is_causal=True)`. Under right padding every
  real query slot i < n_b only sees keys j <= i < n_b, so RecBole's key-padding mask changes only
  padded query slots, which never feed back into real ones: u is identical.
- "math": RecBole's own form, the materialised [B, 1, L, L] additive mask (0 / -10000, causal and
  key padding) built once per forward, explicit softmax and attention dropout on the L x L
  probabilities. This is the cost profile of the official code.
LinRec (models/linrec.py) reuses this whole backbone with another attention kernel, EulerFormer
(models/eulerformer.py) adds a q, k transform; the wrapper itself (E[S] + P, LN, dropout, the
layers, RecBole's init and the per-layer cost of projections and FFN) is `RecBoleTransformer`,
which Elastic (models/elastic.py) shares.

Streaming (`stream_mode = "cache"`, models/base.py): the state keeps every layer's keys and values of
the past events, [B, h, capacity, d_h] each, preallocated by `stream_init`. A step embeds the one new
event at slot t = length (E[i] + P[t], LN), and in each layer projects that slot's q, k, v, writes
k, v into slot t of the cache in place, attends its one query over slots 0..t (no mask: all are real
events), then W_O, residual, LN and FFN as the layer's forward (an inference path: no attention
dropout). Cost per step: the forward of one slot (the four d x d projections and the FFN per layer,
the output product) plus 4 B n d per layer for q K^T and A V over the n = t + 1 cached keys, O(L)
per event (`stream_flops`); memory 2 n_layers B d capacity numbers. The cache is exact while the
history fits max_len (the learned P has max_len rows and a step past it raises ValueError); past it
the window slides, every absolute position shifts and the cache would have to be rebuilt. The
reference is the full forward (`user_vector`, tests/test_stream.py, tests/test_stream_attention.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SeqRecConfig, SequentialRecommender
from .layers import FeedForward, attention_heads, merge_heads, recbole_init


@dataclass
class TransformerConfig(SeqRecConfig):
    """The RecBole Transformer backbone's keys, with `SASRec.yaml` + `overall.yaml` defaults."""

    max_len: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    d_inner: int = 256
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    layer_norm_eps: float = 1e-12


@dataclass
class SASRecConfig(TransformerConfig):
    attention: str = "sdpa"  # "sdpa" (fused, causal) | "math" (RecBole's materialised mask)

    def __post_init__(self):
        super().__post_init__()
        if self.attention not in ("sdpa", "math"):
            raise ValueError(f"attention must be 'sdpa' or 'math', got {self.attention!r}")


def recbole_attention_mask(item_seq: torch.Tensor) -> torch.Tensor:
    """RecBole's `get_attention_mask`: [B, 1, L, L] fp32, 0 where j <= i and S[b, j] != 0, else -10000."""
    L = item_seq.shape[1]
    key_is_item = (item_seq != 0)[:, None, None, :]  # [B, 1, 1, L]
    causal = torch.ones(L, L, dtype=torch.bool, device=item_seq.device).tril()
    allowed = key_is_item & causal  # [B, 1, L, L]
    return torch.where(allowed, 0.0, -10000.0)


class SoftmaxAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_h) + M) V with dropout on the probabilities; q, k, v are [B, h, L, d_h]."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.fused = config.attention == "sdpa"  # chosen once, recorded in the result row's variant
        self.needs_mask = not self.fused
        self.dropout_p = config.attn_dropout
        self.dropout = nn.Dropout(config.attn_dropout)

    def forward(self, q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
        if self.fused:
            p = self.dropout_p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask  # [B, h, L, L]
        return self.dropout(scores.softmax(dim=-1)) @ v  # [B, h, L, d_h]


class MultiHeadAttention(nn.Module):
    """RecBole's MultiHeadAttention block: projections, an attention kernel, W_O, residual, LN."""

    def __init__(self, config: TransformerConfig, kernel: nn.Module, qk_transform: nn.Module | None = None):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.qk_transform = qk_transform  # applied to full-width q, k before the head split (EulerFormer)
        self.kernel = kernel
        self.dense = nn.Linear(d, d)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None, aux_losses: list | None = None) -> torch.Tensor:
        """aux_losses: where the qk_transform appends its auxiliary loss (None: none is computed)."""
        q, k = self.query(h), self.key(h)  # [B, L, d]
        if self.qk_transform is not None:
            q, k = self.qk_transform(q, k, aux_losses)
        q, k = attention_heads(q, self.n_heads), attention_heads(k, self.n_heads)  # [B, h, L, d_h]
        v = attention_heads(self.value(h), self.n_heads)
        context = merge_heads(self.kernel(q, k, v, mask))  # [B, L, d]
        return self.norm(h + self.dropout(self.dense(context)))

    def stream_step(self, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, t: int) -> torch.Tensor:
        """The block on one new slot t, h [B, 1, d], with softmax attention over the cached slots
        0..t-1 and itself: writes its k, v into slot t of keys, values [B, h, capacity, d_h] (in
        place; slots < t are read only) and returns the block's output [B, 1, d]."""
        q, k = self.query(h), self.key(h)  # [B, 1, d]
        if self.qk_transform is not None:
            q, k = self.qk_transform(q, k, start=t)  # the transform of slot t
        q, k = attention_heads(q, self.n_heads), attention_heads(k, self.n_heads)  # [B, h, 1, d_h]
        v = attention_heads(self.value(h), self.n_heads)
        keys[:, :, t:t + 1] = k  # cache slot t
        values[:, :, t:t + 1] = v
        K, V = keys[:, :, :t + 1], values[:, :, :t + 1]  # [B, h, t+1, d_h]
        # a = softmax(q K^T / sqrt(d_h)) V: one query over every real slot, so no mask
        scores = q @ K.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, h, 1, t+1]
        context = merge_heads(scores.softmax(dim=-1) @ V)  # [B, h, 1, d_h] -> [B, 1, d]
        return self.norm(h + self.dropout(self.dense(context)))  # LN(h + a W_O + b_O)


class TransformerLayer(nn.Module):
    """Post-LN: attention block, then RecBole's FeedForward (GELU, residual, LN)."""

    def __init__(self, config: TransformerConfig, kernel: nn.Module, qk_transform: nn.Module | None = None):
        super().__init__()
        self.attention = MultiHeadAttention(config, kernel, qk_transform)
        self.ffn = FeedForward(config.d_model, config.d_inner, config.hidden_dropout, "gelu",
                               post_norm_eps=config.layer_norm_eps, inner_dropout=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None, aux_losses: list | None = None) -> torch.Tensor:
        return self.ffn(self.attention(h, mask, aux_losses))

    def stream_step(self, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, t: int) -> torch.Tensor:
        """The layer on one new slot t (h [B, 1, d]) against its key/value cache: [B, 1, d]."""
        return self.ffn(self.attention.stream_step(h, keys, values, t))


class RecBoleTransformer(SequentialRecommender):
    """RecBole's Transformer wrapper: H0 = Dropout(LN(E[S] + P)), then n_layers post-LN layers from
    `make_layer` (each with an `ffn`), RecBole's init over the whole model. A layer's forward cost
    is the four d x d projections (W_Q, W_K, W_V, W_O on L slots), its FFN and `attention_flops`."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.position_embedding = nn.Embedding(config.max_len, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(self.make_layer(config) for _ in range(config.n_layers))
        self.apply(recbole_init)

    def make_layer(self, config) -> nn.Module:
        raise NotImplementedError

    def embed(self, item_seq: torch.Tensor, start: int = 0) -> torch.Tensor:
        """E[S] + P: item plus learnable absolute position, [B, L, d]; the L slots are positions
        start..start+L-1 (a stream step embeds one slot at its position)."""
        positions = torch.arange(start, start + item_seq.shape[1], device=item_seq.device)
        return self.item_embedding(item_seq) + self.position_embedding(positions)

    def input_states(self, item_seq: torch.Tensor, start: int = 0) -> torch.Tensor:
        """H0 = Dropout(LN(E[S] + P)): [B, L, d] (positions from `start`)."""
        return self.dropout(self.norm(self.embed(item_seq, start)))

    def layer_flops(self, batch_size: int, seq_len: int) -> int:
        projections = 8 * batch_size * seq_len * self.config.d_model ** 2  # W_Q, W_K, W_V, W_O
        return projections + self.layers[0].ffn.flops(batch_size, seq_len) + self.attention_flops(batch_size, seq_len)

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        """The attention kernel's products for the batch (one layer)."""
        raise NotImplementedError


class SASRec(RecBoleTransformer):
    """RecBole SASRec; subclasses swap the attention kernel via `make_kernel`. Streams with a
    key/value cache (the module docstring); a subclass whose kernel is not causal softmax
    attention declares stream_mode "recompute", and then the stream methods are the base's."""

    causal = True
    stream_mode = "cache"
    faithful_to = "RUCAIBox/RecBole@7b02be5 sasrec.py + layers.py (softmax attention)"
    config_class = SASRecConfig

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.materialise_mask = getattr(self.layers[0].attention.kernel, "needs_mask", False)

    def make_layer(self, config) -> TransformerLayer:
        return TransformerLayer(config, self.make_kernel(config))

    def make_kernel(self, config) -> nn.Module:
        """The attention kernel: q, k, v [B, h, L, d_h] (+ mask) -> [B, h, L, d_h]."""
        return SoftmaxAttention(config)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.encode(item_seq)

    def encode(self, item_seq: torch.Tensor, aux_losses: list | None = None) -> torch.Tensor:
        """The hidden states [B, L, d]; each layer's q, k transform appends its auxiliary loss to
        `aux_losses` when one is given (EulerFormer's `forward_with_aux`)."""
        h = self.input_states(item_seq)  # [B, L, d]
        mask = recbole_attention_mask(item_seq) if self.materialise_mask else None  # [B, 1, L, L]
        for layer in self.layers:
            h = layer(h, mask, aux_losses)
        return h  # [B, L, d]

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        """Q K^T and A V over the full L x L (the kernels compute it whole; no causal halving)."""
        return 4 * batch_size * seq_len ** 2 * self.config.d_model

    # --- streaming: a key/value cache per layer (the module docstring) --------------------------
    def stream_init(self, batch_size: int, capacity: int) -> dict:
        """No events yet: per layer, keys and values [B, h, capacity, d_h] of zeros."""
        if self.stream_mode != "cache":
            return super().stream_init(batch_size, capacity)
        c, weight = self.config, self.item_embedding.weight
        shape = (batch_size, c.n_heads, capacity, c.head_dim)
        return {"length": 0,
                "keys": [weight.new_zeros(shape) for _ in self.layers],
                "values": [weight.new_zeros(shape) for _ in self.layers]}

    def stream_step(self, state: dict, item: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Event `item` [B] at slot t = state["length"]: (u [B, d], the state of length t + 1,
        sharing the cache buffers, whose slot t it has written)."""
        if self.stream_mode != "cache":
            return super().stream_step(state, item)
        t, capacity = state["length"], state["keys"][0].shape[2]
        if t >= capacity or t >= self.config.max_len:
            raise ValueError(f"{type(self).__name__} stream: event {t + 1} does not fit (capacity {capacity}, "
                             f"max_len {self.config.max_len} learned positions)")
        h = self.input_states(item[:, None], start=t)  # H0 of slot t: LN(E[i] + P[t]), [B, 1, d]
        for layer, keys, values in zip(self.layers, state["keys"], state["values"]):
            h = layer.stream_step(h, keys, values, t)  # [B, 1, d]
        return h[:, 0], {"length": t + 1, "keys": state["keys"], "values": state["values"]}

    def stream_flops(self, batch_size: int, seq_len: int) -> int:
        """The forward of one slot (projections, FFN, extra, output product) with each layer's
        attention of its one query over seq_len cached keys (q K^T and A V: 4 B seq_len d)."""
        if self.stream_mode != "cache":
            return super().stream_flops(batch_size, seq_len)
        one_slot = self.forward_flops(batch_size, 1) - self.config.n_layers * self.attention_flops(batch_size, 1)
        return one_slot + self.config.n_layers * 4 * batch_size * seq_len * self.config.d_model
