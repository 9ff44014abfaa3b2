"""RecBLR: behavior-dependent linear recurrent units for sequential recommendation (Liu et al.,
CIKM 2024; chengkai-liu/RecBLR `RecBLR.py`, re-written from docs/models-recurrent.md section 6,
not copied).

Embedding:  X0 = LN_1e-12(Dropout(E[S]))            no position embedding; RecBole init
Per layer (n_layers RecurrentLayers, own weights, a residual in EVERY layer, unlike Mamba4Rec):
  X' = LN_1e-12(Dropout(GRL(X)) + X)
  X  = LN_1e-12(Dropout(W2 Dropout(SiLU(W1 X' + b1)) + b2) + X')       SiLU FFN, inner 4d
GRL, the gated recurrent layer (H = expand * d channels, real, diagonal, no state axis N):
  [x; z] = X W_in^T                         no bias; two halves of width H, on the L slots
  x <- [0]*(L'-L) ++ x                      ZERO left padding to L' = 2^ceil(log2 L) (see below)
  x <- SiLU(CausalDWConv_k(x))              depthwise, kernel d_conv = 4, with bias
  [r; iota] = x W_g^T + b_g                 W_g: H -> 2H, with bias
  a_t    = exp(-softplus(Lambda) * sigmoid(r_t))                 BD-LRU recurrence gate
  beta_t = sqrt(1 - a_t^2 + 1e-8) * sigmoid(iota_t)              BD-LRU input gate
  h_t = a_t * h_{t-1} + beta_t * x_t,   h = 0 before the first PADDED slot
  h <- h[L'-L:]                             drop the pad slots
  GRL(X) = (SiLU(z) * h) W_out^T            no bias
User vector u = X[n_b - 1]; scores u E^T over all ids; CE (suite protocol = RecBole's).

Init: Lambda = linspace(softplus^-1(-ln r_min), softplus^-1(-ln r_max), H) with the official
(r_min, r_max) = (0.9, 0.999), so exp(-softplus(Lambda)) runs 0.9 -> 0.999 over the channels.
Then RecBole's `_init_weights` over the whole model: Linear/Embedding weights N(0, 0.02^2), Linear
biases (b_g included) zero, LayerNorms unit; the conv keeps PyTorch's default and Lambda its
linspace; the padding row of E ends a random vector (padding_idx stops only its lookups'
gradient: it still learns through the tied output scores).

Power-of-two padding (config `pow2_pad`). The official Triton scan needs a power-of-two length,
so the GRL left-pads x with zeros after the in-projection. Those slots are not inert: the conv
bias makes them x = SiLU(b_conv) != 0, their gates are non-trivial, and they feed a small,
user-independent state into h before the first real item, so the outputs depend on L' - L (that
is, on the padded width L, not on n_b). The suite's input is right-padded to exactly L, as
RecBole's is, so the arrangement [L'-L pad slots][n_b real items][L-n_b zero ids] is the official
one and the user-vector slot gets the official value.
- "full" (default, official): every row is padded; conv, gates, their element-wise work and the
  scan run on B x L' slots. Cost: at L = 200 (L' = 256) those parts run on 28% more slots, which
  is +10% of a layer's product FLOPs at the defaults (36.3 -> 40.0 MFLOP per sequence per layer)
  and +28% of the scan and gate activations; at L = 2^k + 1 it is nearly 2x.
- "state" (same outputs, less work): the pad slots are identical for every row, so they run once
  at batch 1 and their last state is the scan's initial state h_{-1}; the real slots' conv sees
  zeros before slot 0 either way. B x L slots plus 1 x (L' - L).
- "none" (a deviation, for ablation): no padding, h starts at 0 at slot 0; outputs change.

Streaming (`stream_mode = "state"`, models/base.py). Slot t depends on the past through the scan
state h_{t-1} and the conv's inputs at t-k+1..t-1 (zeros before slot 0, pad slots included: the
pad is applied after the in-projection, so pad inputs are zeros), so a stream keeps per layer
h [H] and the conv window [H, k-1]: n_layers * H * d_conv numbers per user, whatever the length.
The pow2 pad makes h_{-1} the pad state of the window L (not 0): `stream_init(B, capacity)` starts
h at the state after pow2_pad_len(capacity) zero pad slots ("full" and "state"; 0 for "none"), so
the stream equals the forward over the history right-padded to `capacity` slots. A step
(`GatedRecurrentLayer.step`) runs the GRL on the one new slot (in_proj, `causal_conv1d_update`,
SiLU, gates, h' = a h + beta x, the SiLU(z) gate and out_proj), then the layer's residual, LN and
FFN as `RecBoleLayer.forward` applies them to that slot: O(1) in L.

Deviations from the official code, declared:
- The scan is `models.ops.linear_scan` (a work-efficient odd-even log-depth scan, custom autograd
  Function whose forward and backward are both linear scans and which saves only the gates and
  the states) instead of the Triton `tl.associative_scan` kernel (the same saved tensors and
  recurrence; a different summation order). `scan="ref"` runs the step-by-step oracle
  `linear_scan_ref` instead (`scan="sequential"`, its former name, is an accepted alias).
- The official code copies a and beta*x to a contiguous [B, H, L'] layout for the kernel and the
  states back; here the scan runs on the [B, L', H] layout directly (no layout copies).
- The conv is the nn.Conv1d form (the official fallback when causal-conv1d is absent; the CUDA
  kernel computes the same values). Only the CE loss exists (every official config uses CE).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import RecBoleLayer, RecBoleStack, SeqRecConfig
from .layers import CausalDepthwiseConv1d
from .ops import LINEAR_SCAN_ALIASES, LINEAR_SCANS, causal_conv1d_update, causal_conv1d_update_flops, scan_choice

POW2_PADS = ("full", "state", "none")


def pow2_pad_len(seq_len: int) -> int:
    """L' - L: zero slots the official GRL prepends so the scan length is a power of two."""
    seq_len = int(seq_len)  # a traced size is a 0-dim tensor under torch.jit.trace
    return 2 ** (seq_len - 1).bit_length() - seq_len


@dataclass
class RecBLRConfig(SeqRecConfig):
    """chengkai-liu/RecBLR `config.yaml` defaults (ML-1M: MAX_ITEM_LIST_LENGTH 200, so L' = 256);
    r_min, r_max are the constants hard-coded in the official GatedRecurrentLayer."""

    max_len: int = 200
    d_model: int = 64  # hidden_size
    n_layers: int = 2  # num_layers
    n_heads: int = 1  # RecBLR has no heads; the key is accepted and ignored so every model reads the same grid
    dropout: float = 0.2  # dropout_prob: embedding, GRL output, FFN (inner and outer)
    expand: int = 2  # H = expand * d_model recurrent channels
    d_conv: int = 4  # causal depthwise conv width
    r_min: float = 0.9  # exp(-softplus(Lambda)) of the first channel at init
    r_max: float = 0.999  # ... of the last channel
    pow2_pad: str = "full"  # "full" (official) | "state" (same outputs, pads run once) | "none" (deviation)
    scan: str = "parallel"  # "parallel" (linear_scan) | "ref" (linear_scan_ref, the step-by-step oracle)

    def __post_init__(self):
        super().__post_init__()
        for name in ("expand", "d_conv"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.r_min < self.r_max < 1:
            raise ValueError(f"r_min, r_max need 0 < r_min < r_max < 1, got {self.r_min}, {self.r_max}")
        if self.pow2_pad not in POW2_PADS:
            raise ValueError(f"pow2_pad must be one of {list(POW2_PADS)}, got {self.pow2_pad!r}")
        self.scan = scan_choice(self.scan, LINEAR_SCANS, LINEAR_SCAN_ALIASES)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


def softplus_inverse(value: float) -> float:
    """log(exp(v) - 1), evaluated in float32 as the official init does."""
    return torch.log(torch.exp(torch.tensor(value)) - 1).item()


class GatedRecurrentLayer(nn.Module):
    """GRL: in-projection, (power-of-two pad,) causal conv, BD-LRU gates, linear scan, gated output."""

    def __init__(self, config: RecBLRConfig):
        super().__init__()
        d, H = config.d_model, config.d_inner
        self.in_proj = nn.Linear(d, 2 * H, bias=False)
        self.conv = CausalDepthwiseConv1d(H, config.d_conv)
        self.gates = nn.Linear(H, 2 * H, bias=True)
        lam_first = softplus_inverse(-math.log(config.r_min))  # exp(-softplus) = r_min
        lam_last = softplus_inverse(-math.log(config.r_max))  # exp(-softplus) = r_max
        self.Lambda = nn.Parameter(torch.linspace(lam_first, lam_last, H))  # [H]
        self.out_proj = nn.Linear(H, d, bias=False)
        self.pow2_pad = config.pow2_pad
        self.scan = LINEAR_SCANS[config.scan]

    def gated_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv branch x [B, T, H] -> (a, beta * x'), the scan's gates and inputs, each [B, T, H]."""
        return self.bd_lru_gates(F.silu(self.conv(x)))

    def bd_lru_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The BD-LRU gates of the conv's output x [..., H]: (a, beta * x), each [..., H]."""
        r, iota = self.gates(x).chunk(2, dim=-1)
        a = torch.exp(-F.softplus(self.Lambda) * torch.sigmoid(r))  # a_t in (0, 1)
        beta = torch.sqrt(1 - a.pow(2) + 1e-8) * torch.sigmoid(iota)
        return a, beta * x

    def pad_state(self, n_pad: int, like: torch.Tensor) -> torch.Tensor:
        """The state after the n_pad zero pad slots, [1, H]: the same for every row."""
        a, b = self.gated_input(like.new_zeros(1, n_pad, like.shape[-1]))
        return self.scan(a, b)[:, -1]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        L = X.shape[1]
        n_pad = pow2_pad_len(L) if self.pow2_pad != "none" else 0
        x, z = self.in_proj(X).chunk(2, dim=-1)  # [B, L, H] each
        h0 = None
        if n_pad and self.pow2_pad == "full":
            x = F.pad(x, (0, 0, n_pad, 0))  # [B, L', H]: zeros before slot 0
        elif n_pad:  # "state"
            h0 = self.pad_state(n_pad, x)  # [1, H]
        a, b = self.gated_input(x)
        h = self.scan(a, b, h0)  # h_t = a_t h_{t-1} + b_t: [B, L' or L, H]
        if n_pad and self.pow2_pad == "full":
            h = h[:, n_pad:]  # [B, L, H]
        return self.out_proj(F.silu(z) * h)

    # --- streaming ---------------------------------------------------------------------------------
    def step_init(self, batch_size: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The stream state before slot 0 of a `capacity`-slot window: (h_{-1} [B, H], the conv window
        [B, H, k-1]). The conv window is zeros (the pad slots' and pre-slot-0 inputs are zeros);
        h_{-1} is the state after the pow2 pad slots of `window` (`pad_state`; 0 for "none" or a
        power of two), which "full" and "state" both feed to slot 0."""
        weight = self.in_proj.weight
        H = self.Lambda.numel()
        n_pad = pow2_pad_len(capacity) if self.pow2_pad != "none" else 0
        h = weight.new_zeros((batch_size, H))
        if n_pad:
            h = self.pad_state(n_pad, h).repeat(batch_size, 1)  # [1, H], the same for every row
        return h, weight.new_zeros((batch_size, H, self.conv.kernel_size - 1))

    def step(self, X: torch.Tensor, h: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` at one new slot from the kept state: X [B, d], h [B, H], window [B, H, k-1]
        -> (out [B, d], h', window'); h and window are not modified."""
        x, z = self.in_proj(X).chunk(2, dim=-1)  # [B, H] each
        x, window = causal_conv1d_update(x, window, self.conv.conv.weight, self.conv.conv.bias)
        a, bx = self.bd_lru_gates(F.silu(x))
        h = a * h + bx  # h_t = a_t h_{t-1} + beta_t x_t
        return self.out_proj(F.silu(z) * h), h, window

    def stream_flops(self, batch_size: int, seq_len: int) -> int:
        """Product FLOPs of `step` (any slot: `seq_len`, the events so far, is unused): `flops` at one
        slot (no pad slot at L = 1), but the conv computes its one output (`causal_conv1d_update`)
        where the sequence conv at L = 1 computes k."""
        conv = causal_conv1d_update_flops(batch_size, self.Lambda.numel(), self.conv.kernel_size)
        return self.flops(batch_size, 1) - self.conv.flops(batch_size, 1) + conv

    # --- analytic cost ---------------------------------------------------------------------------
    def mixed_slots(self, batch_size: int, seq_len: int) -> list[tuple[int, int]]:
        """(rows, slots) of every pass through conv, gates and scan for a [batch_size, seq_len] input."""
        n_pad = pow2_pad_len(seq_len) if self.pow2_pad != "none" else 0
        if self.pow2_pad == "full":
            return [(batch_size, seq_len + n_pad)]
        return [(batch_size, seq_len)] + ([(1, n_pad)] if n_pad else [])

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Forward product FLOPs: in/out projections on L slots; conv and gate projection on the
        slots of `mixed_slots` (the conv computes k - 1 extra outputs, see CausalDepthwiseConv1d)."""
        H, d = self.Lambda.numel(), self.out_proj.out_features
        tokens = batch_size * seq_len
        total = 2 * tokens * (d * 2 * H + H * d)
        for rows, slots in self.mixed_slots(batch_size, seq_len):
            total += self.conv.flops(rows, slots) + 2 * rows * slots * H * 2 * H
        return total

    def backward_shortfall(self, batch_size: int, seq_len: int) -> int:
        """How far backward falls below 2 x forward: the conv over the shared pad slots ("state")
        reads a constant zero input, so it takes no input gradient, only the weight gradient."""
        return sum(self.conv.flops(rows, slots) for rows, slots in self.mixed_slots(batch_size, seq_len)[1:])

    def scan_flops(self, batch_size: int, seq_len: int) -> int:
        """The recurrence's element-wise work, forward: one multiply-add per channel and slot."""
        return sum(2 * rows * slots * self.Lambda.numel() for rows, slots in self.mixed_slots(batch_size, seq_len))


class RecBLR(RecBoleStack):
    causal = True  # causal conv + forward scan; the pad slots precede slot 0 and hold no item
    stream_mode = "state"  # h and the conv window per layer (the module docstring)
    faithful_to = "chengkai-liu/RecBLR@d01e5c9 RecBLR.py (RecBLR, RecurrentLayer, GatedRecurrentLayer)"
    config_class = RecBLRConfig

    def __init__(self, config: RecBLRConfig):
        super().__init__(config, (RecBoleLayer(GatedRecurrentLayer(config), config.d_model, config.dropout,
                                               ffn_activation="silu")
                                  for _ in range(config.n_layers)))

    # streaming: RecBoleStack's stream_init / stream_step / stream_flops over this mixer's
    # step_init / step / stream_flops (per layer the state and the conv window; the module docstring)
