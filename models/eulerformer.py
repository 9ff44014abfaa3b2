"""EulerFormer (Tian et al., SIGIR 2024; Ethan-TZ/EulerFormer `EulerFormer_models/layers.py`).

RecBole SASRec (post-LN, causal softmax attention, learnable absolute positions, GELU FFN, CE;
models/sasrec.py) with three additions. Pairs are interleaved: (x_2i, x_2i+1) is the complex
number lambda_i e^{j theta_i}, lambda = |pair|, theta = atan2(x_2i+1, x_2i).

Input (Sec. 3.2):    X = E[S] + P;  theta_i <- theta_i + R[t, i]        R: learnable per-slot phase,
                     H0 = Dropout(LN(X~))                               zero-initialised (identity at init)
Each layer (Eq. 8):  Q, K = H W_Q + b_Q, H W_K + b_K over the full d (before the head split)
                     theta' = delta * theta + alpha[t, i]  (+ b for queries only)
                     alpha[t, i] = t * 10000^(-2i/d): fixed RoPE angles over the full width
                     (a buffer, not a parameter), delta and b learnable scalars per layer
                     then SASRec's masked softmax attention on the transformed q, k
Phase contrastive loss (Sec. 3.3), every layer, training only, on Q~ and K~ (full d):
                     Phi = phases, Phi' = Dropout_0.5(Phi),  S[t, u] = sum_i w_i cos(Phi_t,i - Phi'_u,i)
                     l = lamb * mean_{b,t} -log(exp(S_tt / tau) / (sum_u exp(S_tu / tau) + 1e-5))
                     layer loss l(Q~) + l(K~), summed over layers into the CE loss.
With delta = 1 and b = 0 the transform is exactly interleaved RoPE on q and k.

The contrastive loss is computed by `forward_with_aux` (the base class's hook: `loss` calls it in
training, so the hidden states and the loss come from one forward and no module state carries the
term); `forward` alone, as every inference path, never computes it. Cost: `forward_flops` is the
inference forward; the contrastive products (2 x [B, L, d/2] x [B, d/2, L] per phase tensor, q and
k, 4 B L^2 d per layer) are `auxiliary_flops`, which the train step (`step_flops`) adds.

Streaming (`stream_mode = "cache"`, SASRec's key/value cache, models/sasrec.py): every part of the
transform is per slot, a function of that slot's own pair and its position t only (R[t] on the
input, alpha[t] and the layer's delta, b on q and k), so a step transforms its one new slot at t
exactly as the full forward does and caches the keys AFTER the transform (K~); nothing is kept
beyond SASRec's cache, and the transform adds no matrix product, so `stream_flops` is SASRec's.
Exact while the history fits max_len: past it the window slides and R, P and alpha all shift.
The contrastive loss is training-only and has no part in a step.

Deviations, declared: the contrastive loss is skipped at inference and when lamb = 0 (the official
code computes it in every forward, unused in eval); alpha is broadcast, not repeated per batch;
the phases Phi are taken from theta' directly instead of re-deriving them with atan2 from the
transformed pairs (identical modulo 2 pi, which cos and sin and the 0/2x dropout do not see;
exact while 1/(1 - cl_dropout) is a whole number, as at the official 0.5, not e.g. at 0.2).
Parameter count: the official printout (363,652 at L=200, d=64) includes angle tables held as
nn.Parameter that never train (alpha is used through .data); here they are buffers, so the count
is 25,600 lower at that shape with the same trainable set. `angle_params=True` holds them as the
official code does (one [L, d/2, 2] parameter per layer, read detached), for the official twin test.
Defaults are the RecGRELA repo's EulerFormer baseline (d 64, 2 layers, 2 heads, dropouts 0.2,
euler_bias, lamb 1e-5, tau 1, delta_0 1, L = 200), the setting of the paper being reproduced.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import rope_angles
from .sasrec import SASRec, SASRecConfig, TransformerLayer


@dataclass
class EulerFormerConfig(SASRecConfig):
    max_len: int = 200
    hidden_dropout: float = 0.2
    attn_dropout: float = 0.2
    euler_bias: bool = True  # learnable query phase bias b
    init_factor: float = 1.0  # delta_0
    lamb: float = 1e-5  # contrastive loss weight lambda_c (0 disables it)
    tep: float = 1.0  # temperature tau
    cl_dropout: float = 0.5  # dropout on the phases of the contrastive view
    angle_params: bool = False  # alpha as the official per-layer nn.Parameter (counted, never trained)

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % 2 or self.head_dim % 2:
            raise ValueError("the Euler transform pairs channels: d_model and d_model/n_heads must be even")
        if self.tep <= 0:
            raise ValueError(f"tep (temperature) must be positive, got {self.tep}")


def euler_transform(x: torch.Tensor, delta, offset) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda, theta) -> (lambda cos theta', lambda sin theta'), theta' = delta theta + offset.

    x: [B, L, d]; offset broadcasts against [B, L, d/2]. Returns (x~ [B, L, d], theta' [B, L, d/2]).
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # [B, L, d/2, 2]
    real, imag = pairs.unbind(-1)
    magnitude, phase = torch.hypot(real, imag), torch.atan2(imag, real)
    phase = delta * phase + offset
    return torch.stack((magnitude * phase.cos(), magnitude * phase.sin()), dim=-1).flatten(-2), phase


def phase_contrastive_loss(phase: torch.Tensor, weight: torch.Tensor, tau: float, dropout: float) -> torch.Tensor:
    """InfoNCE over slots with the diagonal as positives; phase [B, L, d/2], S is [B, L, L]."""
    view = F.dropout(phase, p=dropout, training=True)  # Phi' (inverted dropout on the angles)
    cos_q, sin_q = weight * phase.cos(), weight * phase.sin()
    sim = cos_q @ view.cos().transpose(1, 2) + sin_q @ view.sin().transpose(1, 2)  # [B, L, L]
    logits = sim / tau  # no max-subtraction and no padding mask, as official
    positive = logits.diagonal(dim1=1, dim2=2).exp()
    return -(positive / (logits.exp().sum(dim=-1) + 1e-5)).log().mean()


class PositionAngles(nn.Module):
    """alpha[t, i] = t * 10000^(-2i/d): one fixed buffer [L, d/2], shared by every layer's module."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.register_buffer("alpha", rope_angles(max_len, d_model), persistent=False)


class EulerQK(nn.Module):
    """Per-layer Euler transform of q and k; with a list to append to, also that layer's contrastive loss."""

    def __init__(self, config: EulerFormerConfig, angles: PositionAngles):
        super().__init__()
        self.config = config
        self.angles = angles  # shared submodule: .to(device) moves its buffer once for all layers
        self.delta = nn.Parameter(torch.tensor(float(config.init_factor)))
        self.bias = nn.Parameter(torch.zeros(())) if config.euler_bias else None
        self.cl_weight = nn.Parameter(torch.ones(config.d_model // 2))
        if config.angle_params:  # the official layout [L, d/2, 2] (each angle twice), read through .data
            self.alpha = nn.Parameter(angles.alpha[:, :, None].repeat(1, 1, 2))

    def forward(self, q: torch.Tensor, k: torch.Tensor, aux_losses: list | None = None, start: int = 0):
        """(q~, k~) of slots start..start+L-1 (a stream step transforms its one slot t); appends
        lamb (l(Q~) + l(K~)) to `aux_losses` when it is a list."""
        slots = slice(start, start + q.shape[1])
        # [L, d/2]
        alpha = self.alpha[slots, :, 0].detach() if self.config.angle_params else self.angles.alpha[slots]
        q, q_phase = euler_transform(q, self.delta, alpha if self.bias is None else alpha + self.bias)
        k, k_phase = euler_transform(k, self.delta, alpha)
        if aux_losses is not None:
            c = self.config
            aux_losses.append(c.lamb * sum(phase_contrastive_loss(p, self.cl_weight, c.tep, c.cl_dropout)
                                           for p in (q_phase, k_phase)))
        return q, k


class EulerFormer(SASRec):
    causal = True  # the attention is masked; the contrastive loss never feeds the hidden states
    faithful_to = "Ethan-TZ/EulerFormer@0c50ff1 layers.py (EulerFormer on RecBole SASRec)"
    config_class = EulerFormerConfig

    def __init__(self, config: EulerFormerConfig):
        super().__init__(config)
        self.input_phase = nn.Embedding(config.max_len, config.d_model // 2)
        nn.init.zeros_(self.input_phase.weight)  # explicit zero init, after RecBole's init

    def make_layer(self, config) -> TransformerLayer:
        if not hasattr(self, "angles"):  # one fixed angle table [L, d/2] for every layer
            self.angles = PositionAngles(config.max_len, config.d_model)
        return TransformerLayer(config, self.make_kernel(config), EulerQK(config, self.angles))

    def embed(self, item_seq: torch.Tensor, start: int = 0) -> torch.Tensor:
        x = super().embed(item_seq, start)  # E[S] + P
        positions = torch.arange(start, start + item_seq.shape[1], device=item_seq.device)
        return euler_transform(x, 1.0, self.input_phase(positions))[0]

    def forward_with_aux(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states and the phase contrastive loss summed over layers, from one forward."""
        if self.config.lamb <= 0:
            return self(item_seq), None
        losses = []
        hidden = self.encode(item_seq, losses)
        return hidden, sum(losses)

    def auxiliary_flops(self, batch_size: int, seq_len: int) -> int:
        """The contrastive products of every layer: two [L, d/2] x [d/2, L] for q and two for k."""
        if self.config.lamb <= 0:
            return 0
        return self.config.n_layers * 4 * batch_size * seq_len ** 2 * self.config.d_model
