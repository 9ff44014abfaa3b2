"""EchoMamba4Rec (Wang, He, Zhu, 2024; wyd0042/EchoMamba4Rec `EchoMamba4Rec_submitted/model.py`,
re-written from the project spec, not copied): a spectral filter, forward and backward Mambas and a
GLU per layer. The Mamba-1 block is the shared one from models/mamba4rec.py.

Embedding:  X = LN_1e-12(Dropout(E[S]))               as Mamba4Rec; no position embedding
Per outer layer (n = n_layers of them, no weight sharing):
  spectral filter (FMLP-Rec):
    F = rFFT_ortho(X) over time                       [B, L//2+1, d] complex
    X = LN_1e-12(Dropout(irFFT_ortho(F * W, n=L)) + X)  W in C^{(L//2+1) x d}: tied to max_len
  n (forward, backward) Mamba pairs, i = 1..n, each with its own weights (n^2 pairs in all):
    F_i = LN_1e-5(Dropout(Mamba_i^f(X)) + X)
    K_i = LN_1e-5(Dropout(Rev(Mamba_i^b(Rev(X)))) + X)          Rev: flip along time
    X = F_i + K_i
  GLU, no FFN:
    [P; Q] = X W_1^T + b_1                            d -> 2d
    X = LN_1e-12(Dropout(W_2 (P * sigmoid(Q)) + b_2 + X))   the dropout covers the residual too
u = X[n_b - 1]; scores u E^T over all ids; CE.

Kept as in the official code (quirks):
- n x n nesting: every outer layer holds n_layers Mamba pairs, so depth n costs n^2 pairs (one at
  the default n = 1). `nested_pairs=False` is an ablation with one pair per outer layer.
- Padding, the flip and the FFT: the whole padded width L is flipped and transformed, exactly as
  the official code does. So the backward Mamba reaches slot n_b - 1 after running over the
  padding slots L-1..n_b, and the filter mixes every slot, padding included. The padding row of
  the item table is RecBole's random vector (redrawn by `recbole_init` after padding_idx zeroed
  it; padding_idx only blocks its lookup gradient), so the user vector depends on it and on L. The model is therefore
  non-causal (`causal = False`). No target leaks under the suite's last-slot protocol, but an all-positions protocol would leak
  future items.
- The pair LayerNorms use PyTorch's default eps 1e-5; the filter, GLU and embedding ones use
  1e-12.
- The GLU's dropout acts on the residual sum (`LN(Dropout(W_2(...) + X))`), as the official GLU
  is written, not on the branch alone. The two readings agree in eval mode.
- W is a plain parameter, real and imaginary parts ~ N(0, 0.02^2), which RecBole's init leaves
  alone. irFFT ignores the imaginary part of the DC bin (and of the Nyquist bin when L is even).
  So Im W[0] (and Im W[L/2]) have no effect and get a zero gradient. They are still counted as
  parameters, as in the official code.
- Init: RecBole's init covers every Linear, Mamba's too (dt_proj bias zeroed). Conv1d, A_log, D
  and W keep their own init.
Deviations, declared:
- The official BiMambaLayer also builds a `MultiQueryTransformerBlock` (4-head attention, a GLU,
  two Linears, two LayerNorms: 62,592 parameters at d = 64) that `forward` never calls. It is left
  out: it carries no compute and no gradient. `unused_attention_block=True` builds its parameters
  (`UnusedAttentionBlock`, never called) so that the parameter count is the official one; the
  official twin's equivalence test uses it. The unused config keys (`num_experts`, `num_heads`,
  `hidden_dim`, `initializer_range`) and the BPR loss path (every config uses CE) are left out too.
- An input whose length differs from max_len raises ValueError. The official code fails with a
  broadcast error for most such lengths, but runs silently when L//2+1 happens to match.
- W is stored as [L//2+1, d, 2] reals, without the official leading broadcast axis of size 1.
- The scans run on the shared CPU selective-scan paths (config `scan`, as in Mamba4Rec), not on
  the CUDA kernel. The math is the same.

Cost (suite convention: 2 x MACs of matrix products only, models/base.py; each outer layer's
`BiMambaLayer.flops`, `backward_shortfall` and `scan_flops`, summed by RecBoleStack):
- forward_flops: per outer layer, pairs x 2 Mamba blocks (MambaBlock.flops) + GLU 6 B L d^2.
  The FFTs and the complex filter multiply are not matrix products, so neither counter sees them.
- scan_flops (element-wise work no counter sees, forward): the Mambas' scans
  (MambaBlock.scan_flops) plus, per outer layer, the filter:
  rFFT and irFFT at 5 L log2(L) real FLOPs per channel each (the radix-2 complex-FFT figure used
  in docs/models-recurrent.md section 3.3; an upper estimate, since a real-input FFT needs about
  half), plus 6 FLOPs per complex multiply over the (L//2+1) x d bins:
  B d (10 L log2 L + 6 (L//2+1)) per outer layer, rounded to an integer per filter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .base import RecBoleStack
from .mamba4rec import MambaBlock, MambaConfig


@dataclass
class EchoMamba4RecConfig(MambaConfig):
    """Official `EchoMamba4Rec_submitted/config.yaml` defaults (amazon-video-games: L = 50; the
    ML-1M line with L = 200 is commented out there)."""

    max_len: int = 50  # MAX_ITEM_LIST_LENGTH; the filter W has L//2+1 bins, so L must equal it
    d_model: int = 64  # hidden_size
    n_layers: int = 1  # num_layers: outer layers, each with n_layers Mamba pairs when nested
    n_heads: int = 1  # no heads (the config's num_heads is unused); kept so every model reads the same grid
    dropout: float = 0.2  # dropout_prob
    d_state: int = 32
    d_conv: int = 4
    expand: int = 2
    nested_pairs: bool = True  # official: n_layers pairs inside each outer layer (n^2 in all)
    unused_attention_block: bool = False  # True: hold the official never-called block's parameters

    def __post_init__(self):
        super().__post_init__()
        for name in ("nested_pairs", "unused_attention_block"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def pairs_per_layer(self) -> int:
        return self.n_layers if self.nested_pairs else 1


def spectral_filter(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """irFFT_ortho(rFFT_ortho(x) * W, n=L) over time. x: [B, L, d] real; weight: [L//2+1, d, 2]
    (real, imaginary). Returns [B, L, d]."""
    L = x.shape[1]
    spectrum = torch.fft.rfft(x, dim=1, norm="ortho")  # [B, L//2+1, d] complex
    return torch.fft.irfft(spectrum * torch.view_as_complex(weight), n=L, dim=1, norm="ortho")


def spectral_filter_ref(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Oracle for `spectral_filter` with the same signature and shapes. It writes out the DFT sums
    in a loop over frequency bins f = 0..L//2 and does not call torch.fft:
        X_f = L^-1/2 sum_t x_t e^{-2 pi i f t / L},   Z_f = W_f X_f
        y_t = L^-1/2 [Re Z_0 + 2 sum_{0<f<L/2} Re(Z_f e^{2 pi i f t / L}) + Re Z_{L/2} (-1)^t]
    The last term is present only for even L. The imaginary parts of Z_0 and Z_{L/2} are dropped,
    as a real inverse FFT drops them."""
    B, L, d = x.shape
    t = torch.arange(L, dtype=x.dtype, device=x.device)
    y = torch.zeros_like(x)
    for f in range(L // 2 + 1):
        angle = 2 * math.pi * f * t / L
        cos, sin = angle.cos()[:, None], angle.sin()[:, None]  # [L, 1]
        x_re, x_im = (x * cos).sum(1) / math.sqrt(L), -(x * sin).sum(1) / math.sqrt(L)  # X_f: [B, d]
        w_re, w_im = weight[f, :, 0], weight[f, :, 1]  # [d]
        z_re, z_im = x_re * w_re - x_im * w_im, x_re * w_im + x_im * w_re  # Z_f = W_f X_f
        if f == 0 or 2 * f == L:  # self-conjugate bins: the real part only, counted once
            y = y + z_re[:, None, :] * cos / math.sqrt(L)
        else:  # bin f and its mirror L - f: 2 Re(Z_f e^{i angle})
            y = y + 2 * (z_re[:, None, :] * cos - z_im[:, None, :] * sin) / math.sqrt(L)
    return y


class SpectralFilter(nn.Module):
    """FMLP-Rec's filter layer as EchoMamba4Rec uses it: X = LN_1e-12(Dropout(filter(X)) + X)."""

    def __init__(self, config: EchoMamba4RecConfig):
        super().__init__()
        self.seq_len = config.max_len
        # W: real and imaginary parts ~ N(0, 0.02^2); a plain parameter, so RecBole's init skips it
        self.weight = nn.Parameter(0.02 * torch.randn(config.max_len // 2 + 1, config.d_model, 2))
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.d_model, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.seq_len:
            raise ValueError(f"the spectral filter is tied to max_len={self.seq_len} slots but the input has "
                             f"{x.shape[1]}; pad every sequence to exactly max_len")
        return self.norm(self.dropout(spectral_filter(x, self.weight)) + x)

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Element-wise forward FLOPs (no counter sees them): rFFT + irFFT at 5 L log2 L per channel
        each, and 6 per complex multiply of the (L//2+1) x d bins; rounded (log2 L is irrational
        unless L is a power of two)."""
        d = self.weight.shape[1]
        return round(batch_size * d * (2 * 5 * seq_len * math.log2(seq_len) + 6 * (seq_len // 2 + 1)))


class GatedLinearUnit(nn.Module):
    """X = LN_1e-12(Dropout(W_2 (P * sigmoid(Q)) + b_2 + X)), [P; Q] = W_1 X + b_1 (d -> 2d -> d)."""

    def __init__(self, config: EchoMamba4RecConfig):
        super().__init__()
        d = config.d_model
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(d, d)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.fc1(x).chunk(2, dim=-1)  # P, Q: [B, L, d] each
        return self.norm(self.dropout(self.fc2(value * torch.sigmoid(gate)) + x))  # dropout over the sum

    def flops(self, batch_size: int, seq_len: int) -> int:
        """fc1 (d -> 2d) and fc2 (d -> d) on every slot."""
        d = self.fc2.out_features
        return 2 * batch_size * seq_len * (d * 2 * d + d * d)


class BidirectionalMambaPair(nn.Module):
    """X = LN_f(Dropout(Mamba_f(X)) + X) + LN_b(Dropout(Rev(Mamba_b(Rev(X)))) + X), separate weights."""

    def __init__(self, config: EchoMamba4RecConfig):
        super().__init__()
        self.mamba_forward = MambaBlock(config)
        self.mamba_backward = MambaBlock(config)
        self.norm_forward = nn.LayerNorm(config.d_model)  # PyTorch's default eps 1e-5, as official
        self.norm_backward = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward = self.norm_forward(self.dropout(self.mamba_forward(x)) + x)
        backward = self.mamba_backward(x.flip(1)).flip(1)  # the whole padded width is reversed
        return forward + self.norm_backward(self.dropout(backward) + x)


class UnusedAttentionBlock(nn.Module):
    """The parameters of the official `MultiQueryTransformerBlock` (4-head nn.MultiheadAttention, a
    GLU, Linear d -> 4d, Linear 4d -> d, two LayerNorms), which the official layer builds and never
    calls. It has no forward: it only makes the parameter count the official one
    (`unused_attention_block=True`); its parameters never get a gradient."""

    HEADS = 4  # hard-coded in the official BiMambaLayer (the config's num_heads is not read)

    def __init__(self, config: EchoMamba4RecConfig):
        super().__init__()
        d = config.d_model
        self.attention = nn.MultiheadAttention(d, self.HEADS)
        self.glu = GatedLinearUnit(config)
        self.linear1 = nn.Linear(d, 4 * d)
        self.linear2 = nn.Linear(4 * d, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)


class BiMambaLayer(nn.Module):
    """One outer layer: spectral filter, `pairs_per_layer` Mamba pairs, GLU (no FFN)."""

    def __init__(self, config: EchoMamba4RecConfig):
        super().__init__()
        self.filter = SpectralFilter(config)
        self.pairs = nn.ModuleList(BidirectionalMambaPair(config) for _ in range(config.pairs_per_layer))
        self.glu = GatedLinearUnit(config)
        if config.unused_attention_block:
            self.unused_attention = UnusedAttentionBlock(config)  # never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.filter(x)  # [B, L, d]
        for pair in self.pairs:
            x = pair(x)
        return self.glu(x)

    def mamba_blocks(self) -> list[MambaBlock]:
        return [block for pair in self.pairs for block in (pair.mamba_forward, pair.mamba_backward)]

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Forward product FLOPs: its Mamba blocks and the GLU (the FFT filter is element-wise)."""
        mamba = sum(block.flops(batch_size, seq_len) for block in self.mamba_blocks())
        return mamba + self.glu.flops(batch_size, seq_len)

    def backward_shortfall(self, batch_size: int, seq_len: int) -> int:
        return sum(block.backward_shortfall(batch_size, seq_len) for block in self.mamba_blocks())

    def scan_flops(self, batch_size: int, seq_len: int) -> int:
        """Mamba scans (every block) plus the spectral filter's FFTs and complex multiply."""
        scans = sum(block.scan_flops(batch_size, seq_len) for block in self.mamba_blocks())
        return scans + self.filter.flops(batch_size, seq_len)


class EchoMamba4Rec(RecBoleStack):
    causal = False  # the backward Mamba and the FFT filter see later slots and the padding
    faithful_to = ("wyd0042/EchoMamba4Rec@6916872 EchoMamba4Rec_submitted/model.py "
                   "+ state-spaces/mamba v1.1.4 Mamba")
    config_class = EchoMamba4RecConfig

    def __init__(self, config: EchoMamba4RecConfig):
        super().__init__(config, (BiMambaLayer(config) for _ in range(config.n_layers)))
