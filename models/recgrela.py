"""RecGRELA: Gated Rotary-Enhanced Linear Attention (Hu et al., arXiv 2506.13315; TBI805/RecGRELA).

Follows the official `model/RecGRELA.py` (an MLLA block adapted to sequences), not the paper's
equations where they differ.

Embedding:  H0 = LN(Dropout(E[S]))            dropout BEFORE the LN; no position embedding (RoPE)
GRELA block (pre-LN), H: [B, L, d]:
  X = LN1(H)
  G = SiLU(X W_g + b_g)                        output gate (act_proj)                 Sec. 3.4
  U = X W_in + b_in                            input projection; U is also the value V
  Q, K = ELU(U W_qk + b_qk) + 1                positive features, full width d
  Q^r, K^r = RoPE(Q), RoPE(K)                  interleaved pairs over the full d, fp32  Sec. 3.2
  per head, sums over ALL L slots (non-causal, padding included):
    z_t = 1 / (Q_t . mean_j K_j + 1e-6)        unrotated features in the denominator
    A_t = z_t * Q^r_t (sum_j K^r_j^T V_j) / L  rotated ones in the numerator (RELA)       Eq. 12
  S = SiLU(CausalDWConv_4(V))                  local shortcut on the value                Sec. 3.3
  O = ((A + S) * G) W_out + b_out
  H' = H + DropPath(O)
  H  = H' + MLP(LN2(H'))                       MLP: GELU, ratio 4, dropout; no DropPath
  one-layer special case (official): H = MLP(LN2(DropPath(O))), no residual at all.
Output: u = H[n_b - 1]; scores u E^T; CE over all N ids.

Ablation switches (each paper variant is a config):
- position: "rope" (official) | "ape" (fixed sinusoidal added to E[S]) | "lpe" (learnable,
  added) | "none" (w/o RoPE). With ape/lpe the attention runs without rotation.
- local_shortcut=False: w/o Local Shortcut (A alone).
- gate=False: w/o SiLU gate, "w/ Matrix": the gate branch goes and a value projection
  V = U W_v + b_v is added (Fig. 4).
- input_proj=False: w/o input gate, "w/ Matrix": U = X (no W_in), value V = X W_v + b_v.
- gate_activation: silu (official) | relu | gelu (Fig. 5).
- drop_path=0: w/o DropPath.

Deviations, declared: the 1/L of the key-value product is applied once to the d_h x d_h matrix
instead of as L^-1/2 on K^r and on V (same value up to rounding, two fewer [B, h, L, d_h]
temporaries); the broken pure-PyTorch conv fallback of the official file (no SiLU, layout bug)
is not copied: the conv is its CUDA path's math (causal, kernel 4, bias, SiLU).

Memory (same values, exact gradients): the output gate G is applied by `layers.gated`, which keeps
X W_g + b_g and Y but recomputes G in backward (plain autograd keeps G too: one [B, L, d] tensor
per block more); and no local name outlives its use, so Q, K, their rotations and O are freed
before the MLP. At the official ML-1M shape (B = 64, L = 200, 4 layers, 4 heads, train step) the
exact tracked peak is 413,253,172 B, against 426,514,484 B for the official code with its
reference conv (docs/measurement.md §10; 438,527,020 B before these two changes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SeqRecConfig, SequentialRecommender
from .layers import (
    CausalDepthwiseConv1d,
    DropPath,
    FeedForward,
    RotaryEmbedding,
    activation,
    attention_heads,
    gated,
    merge_heads,
    recbole_init,
    sinusoidal_positions,
)

POSITIONS = ("rope", "ape", "lpe", "none")


@dataclass
class RecGRELAConfig(SeqRecConfig):
    """Official `config/RecGRELA.yaml` defaults (+ hard-coded MLP ratio 4, conv kernel 4)."""

    max_len: int = 200
    d_model: int = 64
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.1
    drop_path: float = 0.1
    mlp_ratio: int = 4
    conv_kernel: int = 4
    rope_base: float = 10000.0
    layer_norm_eps: float = 1e-12
    position: str = "rope"
    local_shortcut: bool = True
    gate: bool = True
    input_proj: bool = True
    gate_activation: str = "silu"

    def __post_init__(self):
        super().__post_init__()
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        activation(self.gate_activation)  # validates the name
        if self.d_model % 2:
            raise ValueError(f"RoPE pairs channels: d_model must be even, got {self.d_model}")

    @property
    def value_proj(self) -> bool:
        """The 'w/ Matrix' ablations keep a value projection once the gate or W_in is removed."""
        return not (self.gate and self.input_proj)


def rela(q: torch.Tensor, k: torch.Tensor, q_rot: torch.Tensor, k_rot: torch.Tensor,
         v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Rotary-enhanced linear attention, linear in L. All inputs [B, h, L, d_h]; returns [B, h, L, d_h]."""
    L = q.shape[-2]
    k_mean = k.mean(dim=-2, keepdim=True)  # [B, h, 1, d_h]
    z = 1.0 / (q @ k_mean.transpose(-2, -1) + eps)  # [B, h, L, 1]
    kv = (k_rot.transpose(-2, -1) @ v) * (1.0 / L)  # [B, h, d_h, d_h]
    return (q_rot @ kv) * z


def rela_ref(q, k, q_rot, k_rot, v, eps: float = 1e-6) -> torch.Tensor:
    """Oracle for `rela`: the same attention in its naive L x L form, A = (Q^r K^r^T / L) V * z."""
    L = q.shape[-2]
    weights = (q_rot @ k_rot.transpose(-2, -1)) / L  # [B, h, L, L]
    z = 1.0 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + eps)
    return (weights @ v) * z


class GRELABlock(nn.Module):
    def __init__(self, config: RecGRELAConfig, single_layer: bool, rope: RotaryEmbedding | None):
        super().__init__()
        c, d = config, config.d_model
        self.n_heads = c.n_heads
        self.single_layer = single_layer
        self.norm1 = nn.LayerNorm(d, eps=c.layer_norm_eps)
        self.gate = nn.Linear(d, d) if c.gate else None  # act_proj; its activation is applied in `gated`
        self.gate_activation = c.gate_activation
        self.in_proj = nn.Linear(d, d) if c.input_proj else None
        self.qk = nn.Linear(d, 2 * d)
        self.value = nn.Linear(d, d) if c.value_proj else None
        self.rope = rope  # one table shared by every block
        self.shortcut = CausalDepthwiseConv1d(d, c.conv_kernel) if c.local_shortcut else None
        self.out_proj = nn.Linear(d, d)
        self.drop_path = DropPath(c.drop_path)
        self.norm2 = nn.LayerNorm(d, eps=c.layer_norm_eps)
        self.mlp = FeedForward(d, c.mlp_ratio * d, c.dropout, "gelu")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm1(h)
        y = self.token_mixer(x)  # (A + S) * G: [B, L, d]
        if self.single_layer:  # official one-layer case: no residuals
            return self.mlp(self.norm2(self.drop_path(self.out_proj(y))))
        h = h + self.drop_path(self.out_proj(y))  # no name keeps O alive through the MLP
        return h + self.mlp(self.norm2(h))

    def token_mixer(self, x: torch.Tensor) -> torch.Tensor:
        """(A + S) * G from X = LN1(H). Written as methods so that the temporaries autograd does not
        keep (Q, K and their rotations: 4 [B, L, d] tensors) die on return, before the MLP runs."""
        u = self.in_proj(x) if self.in_proj is not None else x
        v = self.value(u) if self.value is not None else u  # [B, L, d]
        y = self.attention(u, v)  # A
        if self.shortcut is not None:
            y = y + F.silu(self.shortcut(v))  # + S, the local shortcut
        if self.gate is not None:
            y = gated(y, self.gate(x), self.gate_activation)  # * G; G is recomputed in backward
        return y

    def attention(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """A = RELA(Q, K, V) with Q, K = ELU(U W_qk + b_qk) + 1, rotated for the numerator."""
        B, L, d = u.shape
        qk = (F.elu(self.qk(u)) + 1.0).view(B, L, 2, d)  # [B, L, {q, k}, d], positive
        qk_rot = self.rope(qk, n_group_dims=1) if self.rope is not None else qk
        q, k = (attention_heads(t, self.n_heads) for t in qk.unbind(2))  # [B, h, L, d_h]
        q_rot, k_rot = (attention_heads(t, self.n_heads) for t in qk_rot.unbind(2))
        return merge_heads(rela(q, k, q_rot, k_rot, attention_heads(v, self.n_heads)))  # [B, L, d]


class RecGRELA(SequentialRecommender):
    causal = False  # global sums over all L slots (only the conv is causal)
    faithful_to = "TBI805/RecGRELA@608a39b model/RecGRELA.py (CUDA conv path)"
    config_class = RecGRELAConfig

    def __init__(self, config: RecGRELAConfig):
        super().__init__(config)
        d = config.d_model
        if config.position == "lpe":
            self.position_embedding = nn.Embedding(config.max_len, d)
        elif config.position == "ape":
            self.register_buffer("position_table", sinusoidal_positions(config.max_len, d), persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        rope = RotaryEmbedding(d, config.max_len, config.rope_base) if config.position == "rope" else None
        self.blocks = nn.ModuleList(
            GRELABlock(config, config.n_layers == 1, rope) for _ in range(config.n_layers))
        self.apply(recbole_init)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        x = self.item_embedding(item_seq)  # [B, L, d]
        L = item_seq.shape[1]
        if self.config.position == "lpe":
            x = x + self.position_embedding(torch.arange(L, device=item_seq.device))
        elif self.config.position == "ape":
            x = x + self.position_table[:L]
        x = self.norm(self.dropout(x))  # rebinding x frees E[S] (nothing saves it)
        for block in self.blocks:
            x = block(x)
        return x  # [B, L, d]

    def layer_flops(self, batch_size: int, seq_len: int) -> int:
        c = self.config
        tokens, d = batch_size * seq_len, c.d_model
        n_dd = 1 + c.gate + c.input_proj + c.value_proj  # out_proj, act_proj, in_proj, value
        flops = 2 * tokens * d * d * n_dd + 4 * tokens * d * d  # d x d projections + qk (d -> 2d)
        flops += self.blocks[0].mlp.flops(batch_size, seq_len)  # MLP
        flops += 4 * tokens * d * c.head_dim + 2 * tokens * d  # K^T V, Q (KV), Q . mean(K)
        if c.local_shortcut:
            flops += self.blocks[0].shortcut.flops(batch_size, seq_len)  # depthwise causal conv
        return flops
