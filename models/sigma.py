"""SIGMA: Selective Gated Mamba (Liu et al., AAAI 2025; ziwliu-cityu/SIMGA `model/gated_mamba.py`
at 018d73a, the first author's copy of the repository the paper names). Follows the official code,
not the paper, where they differ. The Mamba block is Mamba4Rec's (models/mamba4rec.py).

Embedding and wrapper (identical to Mamba4Rec):
  X0 = LN_1e-12(Dropout(E[S]))              no position embedding
  per layer: X' = LN(Dropout(G(X)) + X), except with ONE layer: X' = LN(Dropout(G(X)))
             X = LN(Dropout(W2 Dropout(GELU(W1 X'))) + X')         inner 4d
  u = X[n_b - 1]; scores u E^T; CE over all ids.
G(X), the gated Mamba block (GMambaBlock), X: [B, L, d]:
  X~_j = X_{P-1-j} for j < P, X_j for j >= P        partial flip, P = L - r (see below)
  [Y_f; Y_b] = Mamba([X; X~])               ONE shared Mamba; Y_b is NOT flipped back
  H1 = X + dense1(X)                        dense1, dense2, S_a, S_b, proj: Linear d -> d, bias
  G1 = Dropout_0.2(S_a(SiLU(H1)) + S_b(sigmoid(H1)))
  H2 = X~ + dense2(X~)
  G2 = Dropout_0.2(S_a(SiLU(H2)) + S_b(sigmoid(G1)))   sigmoid of the FIRST gate's output, as coded
  M_f = Y_f * (1 + G1),  M_b = Y_b * (1 + G2)
  U = Conv1d_{d->d, k=3, pad 1}(X)          full (not depthwise), NON-causal: slot t sees t-1..t+1
  Y_g = GRU(U)                              one layer, no bias, h_0 = 0
  G(X) = proj(w_2 M_f + w_1 M_b + w_0 Y_g)  w: raw learnable 3-vector, init (0.1, 0.1, 0.8)

Flip length (config `flip_keep` = r): the official code hard-codes P = 45 flipped slots for its
L = 50 (95 in commit 36d459c). Here the flip length SCALES with the input length: P = L - r, with
r = 5 by default, so the official L = 50 flips exactly the official 45 slots; r >= L flips nothing.
(At L = 200 this flips 195 slots, where the unmodified official code would still flip 45.)

Causality: NOT causal. The flipped branch at slot t has read X~_0..X~_t, i.e. slots up to P-1 of
X, and the k = 3 conv reads slot t+1. No target leaks under RecBole's last-slot protocol.

Initialisation: RecBole's `_init_weights` over the whole model (every Linear weight N(0, 0.02^2),
every Linear bias zero, Mamba's included; see models/mamba4rec.py). The k = 3 Conv1d and the GRU
keep PyTorch's default init; A_log, D and the combining weights keep their own.

Deviations from the official forward, declared (none changes an output or a gradient):
- Dead computation left out: dense2(X~) is evaluated twice there (the first result is
  discarded), a second conv1d over U is computed and never used, and softmax(w) is computed and
  never used (the raw w mixes the branches). The unused `initialize_weights` method (which would
  crash) is not ported. Parameters are unchanged: the second conv reuses the first one's weights.
- The two Mamba passes run as one call on the 2B batch [X; X~] (same weights, same math).
- `gru.flatten_parameters()` (a cuDNN memory-layout call) is not made.
A plain reference (`GatedMambaBlock.forward_ref`: two Mamba calls, a slot-by-slot flip, the
conv as three taps and `gru_ref`, the GRU step by step) sits beside the fast path as the oracle.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mamba4rec import Mamba4Rec, MambaBlock, MambaConfig

FEATURE_CONV_KERNEL = 3  # the GRU branch's Conv1d, hard-coded with padding 1 (a centred window)


@dataclass
class SIGMAConfig(MambaConfig):
    """SIGMA `model/config.yaml` defaults (Amazon Video Games: L = 50) + `gated_mamba.py` constants."""

    max_len: int = 50
    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 1  # SIGMA has no heads; kept so every model reads the same grid (ignored)
    dropout: float = 0.2
    d_state: int = 32
    d_conv: int = 4
    expand: int = 2
    flip_keep: int = 5  # r: trailing slots left in place; P = L - r flipped (official: 45 of L = 50)
    gate_dropout: float = 0.2  # hard-coded Dropout(0.2) on both selective gates, not `dropout`

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.flip_keep, bool) or not isinstance(self.flip_keep, int) or self.flip_keep < 0:
            raise ValueError(f"flip_keep must be a non-negative integer, got {self.flip_keep!r}")


def partial_flip_order(seq_len: int, flip_keep: int, device=None) -> torch.Tensor:
    """Slot order of X~: [P-1, ..., 1, 0, P, P+1, ..., L-1] with P = max(L - r, 0)."""
    n_flip = max(seq_len - flip_keep, 0)
    return torch.cat((torch.arange(n_flip - 1, -1, -1, device=device),
                      torch.arange(n_flip, seq_len, device=device)))


def gru_ref(u: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor) -> torch.Tensor:
    """Reference for a one-layer bias-free nn.GRU (batch first, h_0 = 0), step by step: [B, L, H].

    Gate rows in PyTorch's order (r, z, n):
      r_t = sigmoid(W_ir u_t + W_hr h_{t-1}),  z_t = sigmoid(W_iz u_t + W_hz h_{t-1})
      n_t = tanh(W_in u_t + r_t * (W_hn h_{t-1})),  h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    """
    w_ir, w_iz, w_in = weight_ih.chunk(3)
    w_hr, w_hz, w_hn = weight_hh.chunk(3)
    h = u.new_zeros(u.shape[0], weight_hh.shape[1])
    states = []
    for u_t in u.unbind(1):  # unbind once: no per-step indexing of the full tensor
        r = torch.sigmoid(u_t @ w_ir.t() + h @ w_hr.t())
        z = torch.sigmoid(u_t @ w_iz.t() + h @ w_hz.t())
        n = torch.tanh(u_t @ w_in.t() + r * (h @ w_hn.t()))
        h = (1 - z) * n + z * h
        states.append(h)
    return torch.stack(states, dim=1)


class GatedMambaBlock(nn.Module):
    """G(X): the shared Mamba on X and its partial flip, two selective gates, the conv + GRU branch."""

    def __init__(self, config: SIGMAConfig):
        super().__init__()
        d = config.d_model
        self.flip_keep = config.flip_keep
        self.mamba = MambaBlock(config)
        self.dense1 = nn.Linear(d, d)
        self.dense2 = nn.Linear(d, d)
        self.gate_silu = nn.Linear(d, d)  # S_a, applied after SiLU (official `selective_gate_si`)
        self.gate_sigmoid = nn.Linear(d, d)  # S_b, applied after sigmoid (`selective_gate_sig`)
        self.gate_dropout = nn.Dropout(config.gate_dropout)
        self.feature_conv = nn.Conv1d(d, d, FEATURE_CONV_KERNEL, padding=FEATURE_CONV_KERNEL // 2)
        self.gru = nn.GRU(d, d, num_layers=1, bias=False, batch_first=True)
        self.combining_weights = nn.Parameter(torch.tensor([0.1, 0.1, 0.8]))  # (w_0 GRU, w_1 M_b, w_2 M_f)
        self.proj = nn.Linear(d, d)

    def gates(self, x: torch.Tensor, x_flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G1, G2), wired as the official code wires them: G2's sigmoid branch reads G1."""
        h1 = x + self.dense1(x)
        gate_f = self.gate_dropout(self.gate_silu(F.silu(h1)) + self.gate_sigmoid(torch.sigmoid(h1)))
        h2 = x_flip + self.dense2(x_flip)
        gate_b = self.gate_dropout(self.gate_silu(F.silu(h2)) + self.gate_sigmoid(torch.sigmoid(gate_f)))
        return gate_f, gate_b

    def mix(self, y_f, y_b, gate_f, gate_b, y_gru) -> torch.Tensor:
        """proj(w_2 Y_f (1 + G1) + w_1 Y_b (1 + G2) + w_0 Y_g) with the raw (unnormalised) w."""
        w = self.combining_weights
        return self.proj(w[2] * (y_f + y_f * gate_f) + w[1] * (y_b + y_b * gate_b) + w[0] * y_gru)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        x_flip = x.index_select(1, partial_flip_order(L, self.flip_keep, x.device))  # X~: [B, L, d]
        y_f, y_b = self.mamba(torch.cat((x, x_flip), dim=0)).chunk(2, dim=0)  # one 2B batch
        gate_f, gate_b = self.gates(x, x_flip)
        u = self.feature_conv(x.transpose(1, 2)).transpose(1, 2)  # [B, d, L] -> [B, L, d]
        y_gru, _ = self.gru(u)  # [B, L, d]
        return self.mix(y_f, y_b, gate_f, gate_b, y_gru)

    def forward_ref(self, x: torch.Tensor) -> torch.Tensor:
        """The same block written plainly: the oracle for `forward` (tests only)."""
        L = x.shape[1]
        n_flip = max(L - self.flip_keep, 0)
        x_flip = torch.stack([x[:, n_flip - 1 - j] if j < n_flip else x[:, j] for j in range(L)], dim=1)
        y_f, y_b = self.mamba(x), self.mamba(x_flip)  # two calls of the shared Mamba
        gate_f, gate_b = self.gates(x, x_flip)
        w, b = self.feature_conv.weight, self.feature_conv.bias  # [d_out, d_in, 3], [d_out]
        x_pad = F.pad(x, (0, 0, 1, 1))  # one zero slot on each side
        u = b + sum(x_pad[:, j:j + L] @ w[:, :, j].t() for j in range(FEATURE_CONV_KERNEL))  # taps t-1, t, t+1
        y_gru = gru_ref(u, self.gru.weight_ih_l0, self.gru.weight_hh_l0)
        return self.mix(y_f, y_b, gate_f, gate_b, y_gru)

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Forward product FLOPs: the Mamba on 2B, seven d x d Linears, the k = 3 conv, the GRU."""
        d, tokens = self.proj.in_features, batch_size * seq_len
        mamba = self.mamba.flops(2 * batch_size, seq_len)
        linears = 7 * 2 * tokens * d * d  # dense1, dense2, S_a twice, S_b twice, proj
        conv = 2 * tokens * d * d * FEATURE_CONV_KERNEL  # L outputs (padding 1)
        gru = 2 * tokens * 3 * d * (d + d)  # input and hidden products of the three gates
        return mamba + linears + conv + gru

    def backward_shortfall(self, batch_size: int, seq_len: int) -> int:
        """Backward products below the generic 2 x forward rule: the Mamba scan's, and the GRU's
        first hidden product, whose input h_0 = 0 needs no gradient (only its weight's)."""
        d = self.proj.in_features
        return self.mamba.backward_shortfall(2 * batch_size, seq_len) + 2 * batch_size * 3 * d * d

    def scan_flops(self, batch_size: int, seq_len: int) -> int:
        """Element-wise recurrences no counter sees, forward: the Mamba scan on 2B and the GRU's
        state update h_t = n_t + z_t (h_{t-1} - n_t), 3 per channel (its gate activations, like
        every activation, are not counted)."""
        return self.mamba.scan_flops(2 * batch_size, seq_len) + 3 * batch_size * seq_len * self.proj.in_features


class SIGMA(Mamba4Rec):
    """Mamba4Rec's wrapper (embedding, layers, residual rule, FFN) around the gated Mamba block."""

    causal = False  # the partial flip and the centred k = 3 conv read later slots
    stream_mode = "recompute"  # not Mamba4Rec's "state": the last slot depends on every slot
    faithful_to = "ziwliu-cityu/SIMGA@018d73a model/gated_mamba.py + state-spaces/mamba v1.1.4 Mamba"
    config_class = SIGMAConfig
    mixer_class = GatedMambaBlock
