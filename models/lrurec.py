"""LRURec: linear recurrent units for sequential recommendation (Yue et al., WSDM 2024;
yueqirex/LRURec `model/lru.py`).

Embedding:   X0 = LN_1e-5(Dropout(E[S]))        no position embedding; padding row learnable
LRU layer (state of P = 2d complex numbers per slot):
  lambda = exp(-exp(nu_log) + i exp(theta_log)),  gamma = exp(gamma_log)         ring init
  b_t = gamma * (W_in x_t + b_in)                 complex Linear on the real input
  h_t = lambda * h_{t-1} + b_t                    diagonal linear recurrence (parallel scan)
  x  <- LN_1e-5(Dropout(Re(W_out h_t + b_out)) + x)
FFN:         x <- LN_1e-5(Dropout(W2 Dropout(GELU(W1 x))) + x),  inner size 4d
Output:      scores = u E^T + b_item over all ids (tied table plus a learnable item bias).

Protocol: run under the suite's common protocol (RecBole's): right padding with id 0, the user
vector at the last real slot, CE over the catalogue at that slot only. Deviations, declared:
- LRURec natively left-pads to a power of two and gates the carry with the padding mask
  (h_t = lambda h_{t-1} m_{t-1} + b_t) so the state restarts at the first real item. Under right
  padding the real items start at slot 0, every earlier slot is real and the gate is 1, so both
  the mask and the power-of-two padding are output-neutral for the real slots and are left out
  (the official code pays ~28% more slots at L=200).
- LRURec natively supervises every position (B x L x N logits); here only the last real slot is
  scored, like every other model in the suite. The official twin (official/lrurec: the RecBole
  port in the RecGRELA paper's code) also scores only that slot, so against it this is no
  departure (tests/test_official_lrurec.py).
- The scan is `models.ops.linear_scan` (work-efficient log-depth pairing scan with a two-tensor
  backward) rather than the official block-doubling with autograd through every level: same
  recurrence. `scan=ref` runs the step-by-step oracle `linear_scan_ref` instead (for comparison;
  `scan=sequential`, its former name, is an accepted alias).
Streaming (`stream_mode = "state"`, models/base.py): the scan is causal and, under right padding,
unpadded (no power-of-two pad, no mask), so slot t sees only h_{t-1}: a stream keeps per layer the
complex state h [P = 2d], n_layers * 2P = 4 d n_layers real numbers per user (complex64, complex128
for a float64 model), whatever the length. A step (`LRULayer.step`) embeds the new item
(LN(Dropout(E[i]))), then per layer b = gamma (W_in x + b_in), h' = lambda h + b, the out
projection, residual and LN, and the FFN, exactly as the forward at that slot: O(1) in L. Its
products are the forward's at L = 1, so `stream_flops` is the base's forward_flops(B, 1).
Kept as official: the complex64 in/out projections (complex128 once the model is cast to
float64; their real-input and real-output halves are wasted work, as in the official code), the
truncated-normal init (std 0.02, cut at +-0.04) of every weight and bias except the LayerNorms
and the LRU's logs, no padding_idx (the RecBole port sets padding_idx=0, inert there: its init
overwrites row 0 and its pad slots never reach the user vector).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .base import SeqRecConfig, SequentialRecommender
from .layers import FeedForward
from .ops import LINEAR_SCAN_ALIASES, LINEAR_SCANS, scan_choice


@dataclass
class LRURecConfig(SeqRecConfig):
    """Official `config.py::set_template` defaults (ML-1M: L = 200)."""

    max_len: int = 200
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1  # LRURec has no heads; kept so every model reads the same grid
    dropout: float = 0.2  # p_e: embedding and FFN
    lru_dropout: float = 0.2  # p_a
    r_min: float = 0.8
    r_max: float = 0.99
    max_phase: float = 2 * math.pi
    scan: str = "parallel"  # "parallel" (log-depth, default) | "ref" (the step-by-step oracle)

    def __post_init__(self):
        super().__post_init__()
        self.scan = scan_choice(self.scan, LINEAR_SCANS, LINEAR_SCAN_ALIASES)
        if not 0 < self.r_min < self.r_max < 1:
            raise ValueError(f"ring init needs 0 < r_min < r_max < 1, got {self.r_min}, {self.r_max}")


class LRULayer(nn.Module):
    def __init__(self, config: LRURecConfig):
        super().__init__()
        d, P = config.d_model, 2 * config.d_model
        # ring init: |lambda|^2 ~ U[r_min^2, r_max^2], phase ~ U[0, max_phase], gamma = sqrt(1 - |lambda|^2)
        u1, u2 = torch.rand(P), torch.rand(P)
        nu = -0.5 * torch.log(u1 * (config.r_max ** 2 - config.r_min ** 2) + config.r_min ** 2)
        theta = config.max_phase * u2
        gamma = torch.sqrt(1 - torch.exp(-2 * nu))
        self.params_log = nn.Parameter(torch.stack([nu.log(), theta.log(), gamma.log()]))  # [3, P]
        self.in_proj = nn.Linear(d, P, dtype=torch.complex64)
        self.out_proj = nn.Linear(P, d, dtype=torch.complex64)
        self.dropout = nn.Dropout(config.lru_dropout)
        self.norm = nn.LayerNorm(d, eps=1e-5)
        self.scan = LINEAR_SCANS[config.scan]

    def recurrence(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lambda [P] complex, gamma [P] real) from their logs."""
        nu_log, theta_log, gamma_log = self.params_log
        return torch.exp(torch.complex(-nu_log.exp(), theta_log.exp())), gamma_log.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam, gamma = self.recurrence()
        b = gamma * self.in_proj(x.to(self.in_proj.weight.dtype))  # [B, L, P]
        del gamma  # a temporary: freed before the scan, as when it was computed inline (the peak is exact)
        h = self.scan(lam, b)  # [B, L, P], h_t = lambda h_{t-1} + b_t
        y = self.out_proj(h).real  # [B, L, d]
        return self.norm(self.dropout(y) + x)

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` at one new slot from the state h_{t-1} [B, P] (complex): x [B, d] -> (out [B, d], h_t)."""
        lam, gamma = self.recurrence()
        b = gamma * self.in_proj(x.to(self.in_proj.weight.dtype))  # [B, P]
        h = lam * h + b  # h_t = lambda h_{t-1} + b_t (a new tensor: the old state stays valid)
        y = self.out_proj(h).real  # [B, d]
        return self.norm(self.dropout(y) + x), h


class LRUBlock(nn.Module):
    def __init__(self, config: LRURecConfig):
        super().__init__()
        self.lru = LRULayer(config)
        self.ffn = FeedForward(config.d_model, 4 * config.d_model, config.dropout, "gelu",
                               post_norm_eps=1e-5, inner_dropout=True)

    def forward(self, x):
        return self.ffn(self.lru(x))


def complex_follows_real(module: nn.Module) -> nn.Module:
    """Cast the complex parameters to complex128 when the real ones are float64, else complex64.
    `Module.double()` casts floating tensors only, so without this a float64 model would keep
    complex64 projections (the equivalence tests run in float64); at float32 nothing changes."""
    real = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    target = torch.complex128 if real == torch.float64 else torch.complex64
    return nn.Module._apply(module, lambda t: t.to(target) if t.is_complex() else t)


def truncated_normal_init(model: nn.Module, std: float = 0.02) -> None:
    """Every parameter except LayerNorms and the LRU logs ~ N(0, std^2) cut at +-2 std
    (real and imaginary parts drawn separately)."""
    for name, param in model.named_parameters():
        if "norm" in name or "params_log" in name:
            continue
        with torch.no_grad():
            target = torch.view_as_real(param) if param.is_complex() else param
            nn.init.trunc_normal_(target, std=std, a=-2 * std, b=2 * std)


class LRURec(SequentialRecommender):
    causal = True
    stream_mode = "state"  # the complex h of every layer (the module docstring)
    faithful_to = "yueqirex/LRURec@e02a559 model/lru.py (under the suite's right-padding protocol)"
    config_class = LRURecConfig

    def __init__(self, config: LRURecConfig):
        super().__init__(config)
        self.item_embedding = nn.Embedding(config.n_items, config.d_model)  # no padding_idx, as official
        self.item_bias = nn.Parameter(torch.zeros(config.n_items))
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.d_model, eps=1e-5)
        self.blocks = nn.ModuleList(LRUBlock(config) for _ in range(config.n_layers))
        truncated_normal_init(self)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        return complex_follows_real(self)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.dropout(self.item_embedding(item_seq)))  # [B, L, d]
        for block in self.blocks:
            x = block(x)
        return x

    # --- streaming: the complex state of every layer (the module docstring) ---
    def stream_init(self, batch_size: int, capacity: int) -> dict:
        """`batch_size` users with no events: h = 0 per layer, [B, P] complex (capacity unused)."""
        weight = self.blocks[0].lru.in_proj.weight  # [P, d] complex: the state's dtype
        return {"length": 0, "h": [weight.new_zeros((batch_size, weight.shape[0])) for _ in self.blocks]}

    def stream_step(self, state: dict, item: torch.Tensor) -> tuple[torch.Tensor, dict]:
        x = self.norm(self.dropout(self.item_embedding(item)))  # X0 at the new slot: [B, d]
        hs = []
        for block, h in zip(self.blocks, state["h"]):
            x, h = block.lru.step(x, h)
            x = block.ffn(x)  # LRUBlock.forward at one slot
            hs.append(h)
        return x, {"length": state["length"] + 1, "h": hs}

    def score_bias(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """b_i, the official item bias the scores add: every id's [N], or `items`'."""
        return self.item_bias if items is None else self.item_bias[items]

    def layer_flops(self, batch_size: int, seq_len: int) -> int:
        tokens, d = batch_size * seq_len, self.config.d_model
        P = 2 * d
        complex_projections = 2 * (8 * tokens * d * P)  # a complex MAC is 4 real MACs
        return complex_projections + self.blocks[0].ffn.flops(batch_size, seq_len)

    def scan_flops(self, batch_size: int, seq_len: int) -> int:
        """The recurrence's element-wise work, forward: one complex MAC (8 real FLOPs) per state."""
        return self.config.n_layers * 8 * batch_size * seq_len * 2 * self.config.d_model
