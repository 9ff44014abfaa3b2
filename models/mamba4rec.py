"""Mamba4Rec (Liu et al., 2024; chengkai-liu/Mamba4Rec `mamba4rec.py`) and the Mamba-1 block it
shares with EchoMamba4Rec and SIGMA (state-spaces/mamba v1.1.4 `Mamba`, re-written, not copied).

Mamba block, x: [B, L, d] -> [B, L, d], D_in = expand * d, N = d_state, R = ceil(d / 16):
  [u0; z] = x W_in^T                        no bias; two halves of width D_in
  u = SiLU(CausalDWConv_k(u0))              depthwise, kernel d_conv = 4, with bias
  [dt; B; C] = u W_x^T                      widths R, N, N; B and C shared by every channel
  delta = softplus(dt W_dt^T + b_dt)        [B, L, D_in]
  A = -exp(A_log)                           A_log[c, n] = log(n + 1): S4D-real init
  y = SelectiveScan(u, delta, A, B, C) + D u       h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t,
                                                   y_t = C_t . h_t   (models/ops/selective_scan.py)
  out = (y * SiLU(z)) W_out^T               no bias
Mamba4Rec wrapper:
  X0 = LN_1e-12(Dropout(E[S]))              dropout before LN; no position embedding
  per layer: X' = LN(Dropout(Mamba(X)) + X), except with ONE layer: X' = LN(Dropout(Mamba(X)))
             X = LN(Dropout(W2 Dropout(GELU(W1 X'))) + X')         inner 4d
  u = X[n_b - 1]; scores u E^T; CE over all ids.

Initialisation: RecBole's `_init_weights` runs over the whole model, Mamba's Linears included: every
Linear weight ~ N(0, 0.02^2) and every Linear bias zeroed, so the delta bias starts at 0 (delta
about softplus(0) = 0.69) and Mamba's own dt init never survives; it is therefore not computed.
Conv1d keeps PyTorch's default init; A_log and D keep Mamba's.
Memory, as the official fused kernel does it: the z-gate recomputes SiLU(z) in backward and the
step size keeps softplus's output rather than its input (`layers.gated`, `SoftplusSavingOutput`;
exact, each saves one [B, L, D_in] tensor per block).
Scan paths (config `scan`, the suite's vocabulary: models/base.py, models/ops/__init__.py):
"chunked" (default, `selective_scan`; custom autograd Function keeping chunk-boundary states and
recomputing chunks in backward, the memory class of the official CUDA kernel), "loop"
(`selective_scan_loop`, per-step loop with plain autograd) and "ref" (`selective_scan_ref`,
written the way mamba_ssm's `selective_scan_ref` indexes time; an oracle and the slow baseline,
never a default).
Streaming (`stream_mode = "state"`, models/base.py): the block is causal (a causal conv and a forward
scan), so a stream keeps per layer the SSM state h [D_in, N] and the conv window, the last k - 1
conv inputs [D_in, k-1] (zeros at the start): n_layers * D_in * (N + d_conv - 1) numbers per user
(h in float32, float64 for a float64 model, as the scans compute; the window in the model's
dtype), whatever the length. A step (`MambaBlock.step`) runs the block on the one new slot:
in_proj, `causal_conv1d_update`, SiLU, x_proj, delta, then `selective_state_update`
(h' = exp(delta A) h + delta u B, y = C h' + D u), the z-gate and out_proj, then the layer's
residual, LN and FFN as `RecBoleLayer.forward` applies them to that slot: O(1) in L.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import RecBoleLayer, RecBoleStack, SeqRecConfig
from .layers import CausalDepthwiseConv1d, gated
from .ops import SELECTIVE_SCANS, causal_conv1d_update, causal_conv1d_update_flops, scan_choice, selective_state_update

# Product-class FLOPs (2 per multiply-add) each scan path runs per (batch, step, channel, state):
# (forward, backward). The forward readout <C_t, h_t> is a product in every path; in backward the
# chunked path contracts one product (dC) and does the rest element-wise, while plain autograd
# differentiates the readout product twice. Pinned against FlopCounterMode in tests/test_models_recurrent.py.
SCAN_PRODUCT_FLOPS = {"chunked": (2, 2), "loop": (2, 4), "ref": (2, 4)}


@dataclass
class MambaConfig(SeqRecConfig):
    """Mamba4Rec `config.yaml` defaults (ML-1M: L = 200)."""

    max_len: int = 200
    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 1  # Mamba has no heads; kept so every model reads the same grid
    dropout: float = 0.2
    d_state: int = 32
    d_conv: int = 4
    expand: int = 2
    scan: str = "chunked"  # "chunked" (default) | "loop" | "ref" (models/ops/__init__.py)
    scan_chunk: int = 32

    def __post_init__(self):
        super().__post_init__()
        self.scan = scan_choice(self.scan, SELECTIVE_SCANS)
        for name in ("d_state", "d_conv", "expand", "scan_chunk"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.d_model / 16)


class SoftplusSavingOutput(torch.autograd.Function):
    """delta = softplus(x), saving delta (which the scan keeps anyway) instead of x: the derivative
    sigmoid(x) = 1 - exp(-softplus(x)) is read off the output, as the official kernel applies
    softplus inside the scan. Values and gradients are those of F.softplus (threshold 20)."""

    @staticmethod
    def forward(ctx, x):
        delta = F.softplus(x)
        ctx.save_for_backward(delta)
        return delta

    @staticmethod
    def backward(ctx, grad):
        (delta,) = ctx.saved_tensors
        return grad * -torch.expm1(-delta)


class MambaBlock(nn.Module):
    def __init__(self, config: MambaConfig):
        super().__init__()
        d, D, N, R = config.d_model, config.d_inner, config.d_state, config.dt_rank
        self.d_state, self.dt_rank = N, R
        self.in_proj = nn.Linear(d, 2 * D, bias=False)
        self.conv = CausalDepthwiseConv1d(D, config.d_conv)
        self.x_proj = nn.Linear(D, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, D, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(D, 1))  # [D, N]
        self.D = nn.Parameter(torch.ones(D))
        self.out_proj = nn.Linear(D, d, bias=False)
        self.scan = SELECTIVE_SCANS[config.scan]
        self.scan_product_flops = SCAN_PRODUCT_FLOPS[config.scan]
        self.scan_kwargs = {"chunk_size": config.scan_chunk} if config.scan == "chunked" else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, z = self.in_proj(x).chunk(2, dim=-1)  # [B, L, D_in] each
        u = F.silu(self.conv(u))
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = SoftplusSavingOutput.apply(self.dt_proj(dt))  # softplus: [B, L, D_in]
        A = -torch.exp(self.A_log)  # [D_in, N]
        y = self.scan(u, delta, A, B, C, self.D, **self.scan_kwargs)  # [B, L, D_in]
        return self.out_proj(gated(y, z, "silu"))  # y * SiLU(z), SiLU(z) recomputed in backward

    def step_init(self, batch_size: int, capacity: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The stream state before slot 0: (h [B, D_in, N] = 0 in the scans' compute dtype, conv
        window [B, D_in, k-1] = 0 in the model's dtype); `capacity` (the window) is unused."""
        weight = self.in_proj.weight
        h = weight.new_zeros((batch_size, *self.A_log.shape), dtype=torch.promote_types(weight.dtype, torch.float32))
        window = weight.new_zeros((batch_size, self.D.numel(), self.conv.kernel_size - 1))
        return h, window

    def step(self, x: torch.Tensor, h: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` at one new slot from the kept state: x [B, d], h [B, D_in, N], window
        [B, D_in, k-1] -> (out [B, d], h', window'); h and window are not modified."""
        u, z = self.in_proj(x).chunk(2, dim=-1)  # [B, D_in] each
        u, window = causal_conv1d_update(u, window, self.conv.conv.weight, self.conv.conv.bias)
        u = F.silu(u)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # [B, D_in]
        A = -torch.exp(self.A_log)  # [D_in, N]
        y, h = selective_state_update(h, u, delta, A, B, C, self.D)  # h' = exp(delta A) h + delta u B; y = C h' + D u
        return self.out_proj(y * F.silu(z)), h, window

    def stream_flops(self, batch_size: int, seq_len: int) -> int:
        """Product FLOPs of `step` (any slot: `seq_len`, the events so far, is unused): `flops` at one
        slot, but the conv computes its one output (`causal_conv1d_update`) where the sequence conv
        at L = 1 computes k."""
        conv = causal_conv1d_update_flops(batch_size, self.D.numel(), self.conv.kernel_size)
        return self.flops(batch_size, 1) - self.conv.flops(batch_size, 1) + conv

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Forward product FLOPs: projections, the causal conv and the scan readout."""
        D, d, tokens = self.D.numel(), self.out_proj.out_features, batch_size * seq_len
        N, R = self.d_state, self.dt_rank
        projections = 2 * tokens * (d * 2 * D + D * (R + 2 * N) + R * D + D * d)
        conv = self.conv.flops(batch_size, seq_len)
        return projections + conv + self.scan_product_flops[0] * tokens * D * N

    def backward_shortfall(self, batch_size: int, seq_len: int) -> int:
        """How far the scan's backward products fall below the generic 2 x forward rule."""
        forward, backward = self.scan_product_flops
        return (2 * forward - backward) * batch_size * seq_len * self.D.numel() * self.d_state

    def scan_flops(self, batch_size: int, seq_len: int) -> int:
        """Element-wise scan work no counter sees, forward: per state delta*u*B (1) and the update (2)."""
        return 3 * batch_size * seq_len * self.D.numel() * self.d_state


class Mamba4Rec(RecBoleStack):
    """Mamba4Rec's wrapper around `mixer_class` (the Mamba block; SIGMA swaps in its gated block):
    RecBoleLayers with the mixer's residual only from two layers on, as the official code."""

    causal = True
    stream_mode = "state"  # h and the conv window per layer (the module docstring)
    faithful_to = "chengkai-liu/Mamba4Rec@44a0c84 mamba4rec.py + state-spaces/mamba v1.1.4 Mamba"
    config_class = MambaConfig
    mixer_class: type[nn.Module] = MambaBlock

    def __init__(self, config: MambaConfig):
        super().__init__(config, (RecBoleLayer(self.mixer_class(config), config.d_model, config.dropout,
                                               residual=config.n_layers > 1)
                                  for _ in range(config.n_layers)))

    # streaming: RecBoleStack's stream_init / stream_step / stream_flops over this mixer's
    # step_init / step / stream_flops (per layer the state and the conv window; the module docstring)
