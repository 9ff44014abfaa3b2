"""Building blocks shared by every model family, each written once.

- `recbole_init`: RecBole's weight policy (N(0, 0.02^2) Linear/Embedding weights, zero Linear
  biases, unit LayerNorm). Runs after `nn.Embedding(padding_idx=0)` zeroed row 0, so the padding
  row ends up a random vector, exactly as in RecBole. padding_idx stops the lookup's gradient to
  it, but the row still learns through its score in the tied output product (row 0 is scored).
- `FeedForward`: the position-wise MLP, in RecBole's post-LN residual form or MLLA's bare form.
- `DropPath`: timm's per-sample stochastic depth.
- `RotaryEmbedding`: interleaved-pair RoPE over the full width, computed in fp32.
- `sinusoidal_positions`: the fixed absolute (APE) table of Vaswani et al.
- `CausalDepthwiseConv1d`: depthwise 1-D conv, left-padded by k-1 so slot t sees t-k+1..t.
- `gated`: y * act(a) saving y and a only (act recomputed in backward), as fused gate kernels do.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    """An activation module by name (exact-erf GELU, as RecBole and MLLA use)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


_GATE_FORWARD = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


def _act_value_and_slope(name: str, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """act(a) and act'(a), recomputed from a in backward."""
    if name == "silu":  # a s, s = sigmoid(a); slope s (1 + a (1 - s))
        s = torch.sigmoid(a)
        return a * s, s * (1 + a * (1 - s))
    if name == "gelu":  # exact erf form: a Phi(a); slope Phi(a) + a phi(a)
        cdf = 0.5 * (1 + torch.erf(a * (1 / math.sqrt(2))))
        return a * cdf, cdf + a * torch.exp(-0.5 * a * a) * (1 / math.sqrt(2 * math.pi))
    return a.clamp(min=0), (a > 0).to(a.dtype)  # relu


class _Gated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, a, name):
        ctx.save_for_backward(y, a)
        ctx.name = name
        return y * _GATE_FORWARD[name](a)

    @staticmethod
    def backward(ctx, grad):
        y, a = ctx.saved_tensors
        value, slope = _act_value_and_slope(ctx.name, a)
        grad_y = grad * value if ctx.needs_input_grad[0] else None
        grad_a = grad * y * slope if ctx.needs_input_grad[1] else None
        return grad_y, grad_a, None


def gated(y: torch.Tensor, a: torch.Tensor, act: str = "silu") -> torch.Tensor:
    """y * act(a) (same values as the plain expression), saving y and a only.

    Plain autograd keeps a (for act's derivative), act(a) and y (for the product's): three
    tensors of y's size. Here act(a) and act'(a) are recomputed from a in backward, as a fused
    gate kernel does (Mamba's z-gate inside its scan), so one tensor of y's size per gate is not
    kept; the gradients equal the plain ones to float rounding (tests/test_models_layers.py).
    """
    if act not in _GATE_FORWARD:
        raise ValueError(f"unknown gate activation {act!r}; expected one of {sorted(_GATE_FORWARD)}")
    return _Gated.apply(y, a, act)


def recbole_init(module: nn.Module, std: float = 0.02) -> None:
    """RecBole's `_init_weights`; use as `model.apply(recbole_init)`. Conv1d keeps PyTorch's init."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    if isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()


class FeedForward(nn.Module):
    """W2 · act(W1 x), d -> d_inner -> d.

    post_norm_eps=None: MLLA/RecGRELA form, Dropout(W2 Dropout(act(W1 x))); the caller adds the
    residual. post_norm_eps=eps: RecBole form, LN(x + Dropout(W2 [Dropout](act(W1 x)))), where the
    inner dropout exists only when `inner_dropout` (Mamba4Rec, RecBLR; not SASRec).
    """

    def __init__(self, d_model: int, d_inner: int, dropout: float, act: str = "gelu",
                 post_norm_eps: float | None = None, inner_dropout: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.act = activation(act)
        self.fc2 = nn.Linear(d_inner, d_model)
        self.inner_dropout = nn.Dropout(dropout) if inner_dropout else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=post_norm_eps) if post_norm_eps is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.fc2(self.inner_dropout(self.act(self.fc1(x)))))
        return y if self.norm is None else self.norm(x + y)

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Forward product FLOPs: W1 and W2 on every slot, 2 x 2 B L d d_inner."""
        return 4 * batch_size * seq_len * self.fc1.in_features * self.fc1.out_features


class DropPath(nn.Module):
    """Stochastic depth per sample (timm): zero a sample's branch with probability p, scale the rest."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


def rope_angles(max_len: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """angle[t, i] = t * base^(-2i/dim) for slots t < max_len and pairs i < dim/2 (fp32)."""
    if dim % 2:
        raise ValueError(f"rotary width must be even, got {dim}")
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # [dim/2]
    return torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq[None, :]  # [L, dim/2]


class RotaryEmbedding(nn.Module):
    """RoPE on interleaved pairs (x_2i, x_2i+1) over the full width (not per head), in fp32.

    Each pair is read as the complex number x_2i + j x_2i+1 and multiplied by e^{j angle[t, i]}
    (one complex multiply by a fixed table, as MLLA's RoPE does: one temporary forward and back).
    The table has exactly `max_len` slots (RecGRELA's rule: the input length must equal it).
    Applied to x[..., L, (G,) dim]: slots on dimension -2 - n_group_dims; the `n_group_dims` group
    dimensions between L and the width (e.g. q and k stacked) broadcast.
    """

    def __init__(self, dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary width must be even, got {dim}")
        # MLLA's / RecGRELA's table, rounded as they round it: theta_i = 1 / base^(i / (dim/2)) in
        # fp32 (rope_angles' base^(-2i/dim) differs by an ulp, which the official twin test sees)
        half = dim // 2
        theta = 1.0 / (base ** (torch.arange(half) / half))  # [dim/2] fp32
        angles = torch.outer(torch.arange(max_len), theta)  # [L, dim/2]
        self.register_buffer("rotation", torch.complex(angles.cos(), angles.sin()), persistent=False)  # [L, dim/2]

    def forward(self, x: torch.Tensor, n_group_dims: int = 0) -> torch.Tensor:
        L = x.shape[-2 - n_group_dims]
        if L != self.rotation.shape[0]:
            raise ValueError(f"RoPE table has {self.rotation.shape[0]} slots but the input has {L}")
        rotation = self.rotation.view((L,) + (1,) * n_group_dims + (-1,))
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())  # [..., dim/2]
        return torch.view_as_real(pairs * rotation).flatten(-2)


def sinusoidal_positions(max_len: int, dim: int) -> torch.Tensor:
    """Absolute sinusoidal table [L, dim]: sin on even, cos on odd channels (Vaswani et al.)."""
    angles = rope_angles(max_len, dim)  # [L, dim/2]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


class CausalDepthwiseConv1d(nn.Module):
    """y[:, t, c] = b_c + sum_j w_{c,j} x[:, t-k+1+j, c] (zeros before slot 0); x is [B, L, C].

    Mamba's layout: a depthwise `Conv1d(groups=C)` padded by k-1 on both sides, keeping the first
    L outputs (the last k-1 are computed and dropped, as in the official code); no padded copy of
    the input is made or saved. Weights keep PyTorch's default init (RecBole's init skips Conv1d).
    """

    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias,
                              padding=kernel_size - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        return self.conv(x.transpose(1, 2))[..., :L].transpose(1, 2)  # [B, C, L+k-1] -> [B, L, C]

    def flops(self, batch_size: int, seq_len: int) -> int:
        """2 x MACs over the L + k - 1 computed output positions."""
        return 2 * batch_size * (seq_len + self.kernel_size - 1) * self.conv.out_channels * self.kernel_size


def attention_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, L, d] -> [B, h, L, d/h]: heads are contiguous chunks of the width."""
    B, L, d = x.shape
    return x.view(B, L, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, h, L, d_h] -> [B, L, h*d_h]."""
    B, h, L, dh = x.shape
    return x.transpose(1, 2).reshape(B, L, h * dh)
