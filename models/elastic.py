"""ELASTIC-style model, RECONSTRUCTED (Deng et al., "ELASTIC: Efficient Linear Attention for
SequenTial Interest Compression", arXiv 2408.09380, Kuaishou). There is no public code, and only
the abstract of the paper could be read. Everything below is a reconstruction built on
`elastic-notes.md` §3 and `models-attention.md` §5. It is not the authors' model, and its results
must never be reported as ELASTIC's (the class says `reconstruction = True`, and so does every
CSV row).

Notation: B batch, L padded length, d width, h heads, d_h = d / h, k interest experts
(`n_interests`), M = m^2 memory slots (`memory_size`), t slots read per expert (`memory_topk`).

Embedding (SASRec):  H0 = Dropout(LN(E[S] + P))         learnable absolute positions
Each of the n_layers layers (post-LN, SASRec's residual/LN/FFN conventions), H: [B, L, d]:
  Interest Memory Retrieval (IMR), once per user, independent of L:
    u   = sum_j r_j H_j / n                  masked mean over the n real slots (r_j = 1 if real)
    q_i = LN_q((u W_mq + b_mq)_i)            one query per expert i = 1..k: [B, k, d]
    s1  = q_i[:d/2] K1^T,  s2 = q_i[d/2:] K2^T          two sets of m sub-keys: [m] each
    I1, I2 = top-t(s1), top-t(s2)                       product keys (Lample et al., 2019)
    S   = top-t over the t^2 sums s1[a] + s2[b], a in I1, b in I2    = the exact top-t of all M
    D_i = sum_{(a,b) in S} softmax(s1[a] + s2[b]) V[a m + b]         one memory bank V: [M, d]
  Linear Dispatcher Attention (LDA), per head, linear in L:
    Q, K, V = H W_Q + b_Q, H W_K + b_K, H W_V + b_V
    Z   = softmax(D K^T / sqrt(d_h) + pad) V     dispatch: k interest tokens compress L slots  [k, d]
    C   = softmax(Q (Z W_ZK + b)^T / sqrt(d_h)) (Z W_ZV + b)   redistribute: each slot reads k  [L, d]
    H'  = LN1(H + Dropout(C W_O + b_O))
    H   = LN2(H' + Dropout(W2 GELU(W1 H' + b1) + b2))        models/layers.FeedForward, as SASRec
Output: u = H[n_b - 1]; scores u E^T over all N ids; CE (models/base.py).
`interest_memory=False` is the IMR ablation: D is a static learned [k, d] parameter per layer.

Design choices and the abstract claim each serves (all [inference]; § = elastic-notes.md):

| # | choice | abstract claim served | basis |
|---|---|---|---|
| 1 | k tokens dispatch the L slots: Z = softmax(D K^T) V | "interest experts", "linear dispatcher attention" | §3.3 |
| 2 | redistribution: C = softmax(Q Z_K^T) Z_V, all slots | a per-slot output at linear cost | §3.3 |
| 3 | no L x L tensor: maps are [B,h,k,L], [B,h,L,k] | "linear time"; "90% memory", "x2.7" (sweeps check) | 1-2 |
| 4 | D: product-key read (top-t, softmax sum) of one M = m^2 bank | "vast ... memory bank", "sparsely retrieves" | §3.2, §1.4 |
| 5 | a query head per expert; one bank for all layers | "decoupling capacity from cost": O(k(m+t)d), no L | own |
| 6 | user query = masked mean of the layer input, then LN | "user's interests"; padding excluded | §3.2.1 |
| 7 | SASRec backbone: E + P, LN, dropout, post-LN, GELU FFN, tied CE | the SASRec-style parts | §3.1, §3.3 |
| 8 | non-causal; padded keys masked in dispatch and pool | linear cost kept (see Causality) | §3.4 (a) |

Causality, declared: NOT causal. The dispatch and the memory query pool over all real slots, so a
slot sees later slots of the same sequence. That is valid under the suite's protocol: the loss is
taken only at the last real slot of a history (RecBole prefix augmentation), and the input holds
no future item. The causal alternative, with prefix sums, would keep a [B, h, L, k, d_h] state
and would run one memory read per slot instead of one per user. It is not implemented.
Padding: padded keys are masked in the dispatch (SDPA boolean mask), and the mean pool weights
them 0. No sum over the sequence includes a padded slot, so real-slot outputs do not depend on how
much padding follows them. Padded slots still receive redistributed outputs, but never feed back
into real ones. Slot 0 always counts as attendable, which only matters for an all-padding row:
there it avoids a NaN. A real sequence always has slot 0 real.

Cost accounting (the suite's FLOP convention, 2 per multiply-add, matrix products only). The mean
pool and the memory's weighted read are written as matrix products on purpose, so both FLOP
counters see them. The sub-key scores are one bmm. top-k, the Cartesian sum and the value gather
are element-wise or lookups, and count 0 as for every model. The pool's weights are constants, so
in a train step its backward is one product, not two (`step_flops`).

Deviations from the named sources, declared:
- PKM (Lample et al.) normalises the query with BatchNorm. Here it is a per-expert LayerNorm, so
  one user's interests never depend on the other users in the batch.
- PKM heads have their own sub-keys. Here the k expert heads share one set of sub-keys and differ
  by their query projection.
- Memory values and sub-keys use RecBole's N(0, 0.02^2) init.
- The read gathers dense rows and gets a dense gradient (Adam state for all M rows). PKM uses
  EmbeddingBag with a sparse gradient.
- The dispatcher queries D enter the dispatch unprojected: memory values and the static experts are
  already learned in query space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import FeedForward, attention_heads, merge_heads, recbole_init
from .sasrec import RecBoleTransformer, TransformerConfig


@dataclass
class ElasticConfig(TransformerConfig):
    """No official code or settings exist. The backbone keys keep SASRec.yaml's defaults (2 heads,
    FFN 256, dropouts 0.5, eps 1e-12). The ELASTIC keys take elastic-notes.md §3.6's "plausible
    choices": ML-1M L = 200, d = 64, 2 layers, k = 16 from {8, 16, 32, 64}, M = 128^2, top-32."""

    max_len: int = 200
    d_model: int = 64  # even: the product-key query is split in two halves
    n_layers: int = 2
    n_heads: int = 2  # heads of both LDA attentions (d_h = d / h)
    n_interests: int = 16  # k interest experts / dispatcher tokens per layer
    memory_size: int = 16384  # M = m^2 slots of the interest memory bank (m = 128 sub-keys per half)
    memory_topk: int = 32  # t: slots kept per sub-key half, then read per expert (t <= m)
    interest_memory: bool = True  # False: IMR ablated, D is a static learned [k, d] per layer

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_interests", "memory_size", "memory_topk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.interest_memory, bool):
            raise ValueError(f"interest_memory must be a bool, got {self.interest_memory!r}")
        if math.isqrt(self.memory_size) ** 2 != self.memory_size:
            raise ValueError(f"memory_size must be a perfect square m^2 (product keys), got {self.memory_size}")
        if self.memory_topk > self.memory_side:
            raise ValueError(f"memory_topk={self.memory_topk} exceeds the {self.memory_side} sub-keys "
                             f"per half of memory_size={self.memory_size}")
        if self.interest_memory and self.d_model % 2:
            raise ValueError(f"d_model must be even (product keys split the query), got {self.d_model}")

    @property
    def memory_side(self) -> int:
        """m: sub-keys per half, M = m^2."""
        return math.isqrt(self.memory_size)


class ProductKeyMemory(nn.Module):
    """The interest memory bank: M = m^2 value rows addressed by two sets of m sub-keys.

    `forward(query [..., d]) -> [..., d]`: the softmax-weighted sum of the t best slots per query
    (exact top-t of all M slots, found from t + t + t^2 candidate scores instead of M).
    """

    def __init__(self, config: ElasticConfig):
        super().__init__()
        d, m = config.d_model, config.memory_side
        self.side, self.topk = m, config.memory_topk
        self.queries_per_user = config.n_interests  # one read per interest expert and layer
        self.sub_keys = nn.Parameter(torch.empty(2, d // 2, m).normal_(0.0, 0.02))  # [{1, 2}, d/2, m]
        self.values = nn.Embedding(config.memory_size, d)  # V [M, d]; recbole_init draws N(0, 0.02^2)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        shape, d = query.shape, query.shape[-1]
        m, t = self.side, self.topk
        halves = query.reshape(-1, 2, d // 2).transpose(0, 1)  # [2, R, d/2], R = query rows
        scores = halves @ self.sub_keys  # [2, R, m]: s1, s2 (one bmm)
        best, index = scores.topk(t, dim=-1)  # [2, R, t] each
        pair = (best[0, :, :, None] + best[1, :, None, :]).flatten(1)  # [R, t^2]: s1[a] + s2[b]
        score, cell = pair.topk(t, dim=-1)  # [R, t]: the top-t of all M
        row = index[0].gather(1, torch.div(cell, t, rounding_mode="floor"))  # a
        col = index[1].gather(1, cell % t)  # b
        weights = score.softmax(dim=-1)  # [R, t]
        selected = self.values(row * m + col)  # [R, t, d]
        read = weights.unsqueeze(1) @ selected  # [R, 1, t] @ [R, t, d]: a counted product
        return read.view(shape)

    def forward_ref(self, query: torch.Tensor) -> torch.Tensor:
        """Oracle for `forward`: every query scored against ALL M slots, one query at a time."""
        d = query.shape[-1]
        out = []
        for q in query.reshape(-1, d):
            s1, s2 = q[: d // 2] @ self.sub_keys[0], q[d // 2:] @ self.sub_keys[1]  # [m] each
            every = (s1[:, None] + s2[None, :]).flatten()  # [M], slot a m + b
            score, slot = every.topk(self.topk)
            out.append(score.softmax(dim=0) @ self.values.weight[slot])
        return torch.stack(out).view(query.shape)

    def flops(self, batch_size: int, seq_len: int) -> int:
        """One layer's read for the batch: k query rows per user (independent of seq_len), each
        with the sub-key scores (2 halves x m x d/2) and the weighted read (t x d)."""
        d, rows = self.values.embedding_dim, batch_size * self.queries_per_user
        return 2 * rows * (self.side * d + self.topk * d)


class InterestQuery(nn.Module):
    """IMR for one layer: the k dispatcher queries D [B, k, d] read from the shared memory bank."""

    def __init__(self, config: ElasticConfig):
        super().__init__()
        d, self.k = config.d_model, config.n_interests
        self.query = nn.Linear(d, self.k * d)  # PKM query network, one head per expert
        self.query_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor, pool: torch.Tensor, memory: ProductKeyMemory) -> torch.Tensor:
        B, _, d = h.shape
        user = pool @ h  # [B, 1, L] @ [B, L, d]: masked mean over real slots
        q = self.query_norm(self.query(user).view(B, self.k, d))  # [B, k, d]
        return memory(q)  # [B, k, d]


class LinearDispatcherAttention(nn.Module):
    """Dispatch L slots into k interest tokens, redistribute them to the L slots; W_O, residual, LN."""

    def __init__(self, config: ElasticConfig):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.dropout_p = config.attn_dropout
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.interest_key, self.interest_value = nn.Linear(d, d), nn.Linear(d, d)  # W_ZK, W_ZV on [k, d]
        self.dense = nn.Linear(d, d)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        # IMR ablated: D is a static learned [k, d], the same for every user
        self.static_experts = (None if config.interest_memory else
                               nn.Parameter(torch.empty(config.n_interests, d).normal_(0.0, 0.02)))

    def dispatcher_queries(self, experts: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """D [B, k, d]: the IMR read, or the static experts broadcast over the batch (a view)."""
        return self.static_experts.expand(batch_size, -1, -1) if experts is None else experts

    def forward(self, h: torch.Tensor, experts: torch.Tensor | None, attendable: torch.Tensor) -> torch.Tensor:
        """h [B, L, d], experts D [B, k, d] (None: static), attendable [B, 1, 1, L] (readable keys)."""
        p = self.dropout_p if self.training else 0.0
        experts = self.dispatcher_queries(experts, h.shape[0])  # [B, k, d]
        heads = lambda x: attention_heads(x, self.n_heads)  # noqa: E731  [B, n, d] -> [B, h, n, d_h]
        k, v = heads(self.key(h)), heads(self.value(h))  # [B, h, L, d_h]
        z = merge_heads(F.scaled_dot_product_attention(heads(experts), k, v, attn_mask=attendable,
                                                       dropout_p=p))  # dispatch: [B, k, d]
        z_k, z_v = heads(self.interest_key(z)), heads(self.interest_value(z))  # [B, h, k, d_h]
        c = merge_heads(F.scaled_dot_product_attention(heads(self.query(h)), z_k, z_v, dropout_p=p))  # [B, L, d]
        return self.norm(h + self.dropout(self.dense(c)))

    def forward_ref(self, h: torch.Tensor, experts: torch.Tensor | None, lengths: torch.Tensor) -> torch.Tensor:
        """Oracle for `forward` (no dropout; the n_b = `lengths` real slots in place of its mask): a
        loop over sequences and heads that only ever reads the first n_b slots as keys, with
        explicit softmax products instead of SDPA and its mask."""
        B, L, d = h.shape
        d_h, experts = d // self.n_heads, self.dispatcher_queries(experts, B)
        head_slices = [slice(i * d_h, (i + 1) * d_h) for i in range(self.n_heads)]

        def attend(q, k, v):  # per head: softmax(q k^T / sqrt(d_h)) v, heads concatenated
            return torch.cat([torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(d_h), dim=-1) @ v[:, s]
                              for s in head_slices], dim=-1)

        out = []
        for b in range(B):
            n = int(lengths[b])
            z = attend(experts[b], self.key(h[b, :n]), self.value(h[b, :n]))  # dispatch: [k, d]
            c = attend(self.query(h[b]), self.interest_key(z), self.interest_value(z))  # redistribute: [L, d]
            out.append(self.norm(h[b] + self.dense(c)))
        return torch.stack(out)


class ElasticLayer(nn.Module):
    """IMR (dispatcher queries) -> LDA block -> RecBole FeedForward (GELU, residual, LN)."""

    def __init__(self, config: ElasticConfig):
        super().__init__()
        self.interest_query = InterestQuery(config) if config.interest_memory else None
        self.attention = LinearDispatcherAttention(config)
        self.ffn = FeedForward(config.d_model, config.d_inner, config.hidden_dropout, "gelu",
                               post_norm_eps=config.layer_norm_eps, inner_dropout=False)

    def forward(self, h, attendable, pool, memory: ProductKeyMemory | None) -> torch.Tensor:
        experts = None if memory is None else self.interest_query(h, pool, memory)  # D [B, k, d]
        return self.ffn(self.attention(h, experts, attendable))


class Elastic(RecBoleTransformer):
    """ELASTIC-style interest compression (reconstructed; see the module docstring) on RecBole's
    Transformer wrapper (SASRec's input, post-LN layers, init and per-layer projection + FFN cost)."""

    causal = False  # dispatch and the memory query pool every real slot of the history
    faithful_to = "reconstruction: no public code; arXiv 2408.09380 abstract via elastic-notes.md §3"
    reconstruction = True
    config_class = ElasticConfig

    def __init__(self, config: ElasticConfig):
        super().__init__(config)
        self.memory = ProductKeyMemory(config) if config.interest_memory else None  # shared by all layers
        if self.memory is not None:
            self.memory.apply(recbole_init)  # built after the wrapper's init ran: its values get it too

    def make_layer(self, config: ElasticConfig) -> ElasticLayer:
        return ElasticLayer(config)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        h = self.input_states(item_seq)  # [B, L, d]
        attendable = (item_seq != 0) | (positions == 0)  # [B, L]; slot 0 only guards all-padding rows
        pool = attendable.to(h.dtype)
        pool = (pool / pool.sum(dim=1, keepdim=True)).unsqueeze(1)  # [B, 1, L]: 1/n on real slots
        attendable = attendable[:, None, None, :]  # [B, 1, 1, L] for SDPA
        for layer in self.layers:
            h = layer(h, attendable, pool, self.memory)
        return h  # [B, L, d]

    # --- analytic cost -------------------------------------------------------------------------
    def layer_flops(self, batch_size: int, seq_len: int) -> int:
        """W_Q, W_K, W_V, W_O and the FFN on L slots (the wrapper's), the LDA, the interest tokens."""
        return super().layer_flops(batch_size, seq_len) + self.interest_flops(batch_size, seq_len)

    def attention_flops(self, batch_size: int, seq_len: int) -> int:
        """Dispatch (D K^T, A V) and redistribution (Q Z_K^T, A Z_V): 4 products of L x k x d."""
        return 8 * batch_size * seq_len * self.config.n_interests * self.config.d_model

    def interest_flops(self, batch_size: int, seq_len: int) -> int:
        """Per layer, on the k interest tokens: W_ZK, W_ZV; with IMR also the mean pool (2BLd),
        the query network (d -> k d) and the memory read (sub-key scores, weighted sum)."""
        c = self.config
        d, k = c.d_model, c.n_interests
        flops = 4 * batch_size * k * d * d  # W_ZK, W_ZV
        if self.memory is not None:
            flops += self.pool_flops(batch_size, seq_len) + 2 * batch_size * d * k * d
            flops += self.memory.flops(batch_size, seq_len)
        return flops

    def pool_flops(self, batch_size: int, seq_len: int) -> int:
        """The masked mean as a product, [B, 1, L] @ [B, L, d]; 0 without IMR."""
        return 2 * batch_size * seq_len * self.config.d_model if self.memory is not None else 0

    def step_flops(self, batch_size: int, seq_len: int) -> int:
        """3 x forward, except the pool: its weights are constants, so its backward is one product."""
        return super().step_flops(batch_size, seq_len) - self.config.n_layers * self.pool_flops(batch_size, seq_len)
