"""The interface every model obeys (the RecBole sequential-recommender protocol).

- Input: item ids S [B, L], left-aligned and right-padded with id 0 (slots n_b..L-1 are 0).
- `forward(S) -> H [B, L, d]`: the last layer's hidden states (the "feature matrix" of Fig. 9).
- The user vector is H at the last real slot n_b - 1 (`user_vector`); no final norm.
- Scores are u · E^T over all N rows of the tied item table, row 0 included (`full_scores`).
- `loss(S, target)`: softmax cross-entropy over the catalogue plus any auxiliary loss the model
  defines (`auxiliary_loss`, skipped at inference).
- Declared properties read by the harness and the tests: `causal` (slot t never sees slots > t),
  `faithful_to` (the official code or paper followed) and `reconstruction` (True where no code
  exists).
- `forward_flops(batch_size, seq_len)`: the analytic FLOP count (2 x multiply-adds, matrix-product
  ops only; the suite's FLOP convention, see bench/measure/flops.py) of `full_scores`.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import FeedForward, recbole_init


@dataclass
class SeqRecConfig:
    """Keys shared by every model; subclasses add their extras and official defaults."""

    n_items: int = 3417  # item ids including padding id 0 (ML-1M: 3,416 items + 1)
    max_len: int = 50  # padded sequence length L (RecGRELA and RoPE tables need exactly L)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2

    def __post_init__(self):
        for name in ("n_items", "max_len", "d_model", "n_layers", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_items < 2:
            raise ValueError(f"n_items counts padding id 0 and must be >= 2, got {self.n_items}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} does not divide d_model={self.d_model}")
        self._check_types()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith(("dropout", "drop_path")) and not 0.0 <= value < 1.0:
                raise ValueError(f"{field.name} must be in [0, 1), got {value!r}")

    def _check_types(self) -> None:
        """Every bool, int, float and str field holds a value of its type (a spec's `gate=maybe`
        or `local_shortcut=no` would otherwise be truthy text, `d_state=2.5` a float size), numbers
        finite and non-negative (no config of the suite has a negative one); an int given to a float
        field becomes a float. Raises ValueError naming the field."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            kind, value = hints.get(field.name), getattr(self, field.name)
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"{field.name} must be true or false, got {value!r}")
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{field.name} must be an integer, got {value!r}")
            if kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{field.name} must be a number, got {value!r}")
                object.__setattr__(self, field.name, float(value))
            if kind in (int, float) and not (math.isfinite(getattr(self, field.name)) and value >= 0):
                raise ValueError(f"{field.name} must be a finite number >= 0, got {value!r}")
            if kind is str and not isinstance(value, str):
                raise ValueError(f"{field.name} must be text, got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class SequentialRecommender(nn.Module):
    """Base class: item table, user vector, scores, CE loss and the declared properties."""

    causal: bool = False
    faithful_to: str = ""
    reconstruction: bool = False

    def __init__(self, config: SeqRecConfig):
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items, config.d_model, padding_idx=0)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, d]
        raise NotImplementedError

    @staticmethod
    def last_positions(item_seq: torch.Tensor) -> torch.Tensor:
        """n_b - 1 for right-padded sequences (an all-padding row gathers slot 0)."""
        return (item_seq != 0).sum(dim=1).clamp(min=1) - 1

    def user_vector(self, item_seq: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """u_b = H[b, n_b - 1] (RecBole's gather_indexes): [B, d]."""
        hidden = self.forward(item_seq) if hidden is None else hidden
        index = self.last_positions(item_seq).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        return hidden.gather(1, index).squeeze(1)

    def full_scores(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Logits over the whole catalogue, tied to the item table: [B, N]."""
        return self.user_vector(item_seq) @ self.item_embedding.weight.t()

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Extra training loss collected during the last forward (None for most models)."""
        return None

    def loss(self, item_seq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Softmax CE of the next item over all N ids (+ the model's auxiliary loss in training)."""
        loss = F.cross_entropy(self.full_scores(item_seq), target)
        auxiliary = self.auxiliary_loss() if self.training else None
        return loss if auxiliary is None else loss + auxiliary

    def num_params(self) -> tuple[int, int]:
        """(total, trainable) counts of real parameters (a complex one counts 2); buffers excluded."""
        params = list(self.parameters())
        size = lambda p: p.numel() * (2 if p.is_complex() else 1)  # noqa: E731
        return sum(map(size, params)), sum(size(p) for p in params if p.requires_grad)

    # --- analytic cost -------------------------------------------------------------------------
    def layer_flops(self, batch_size: int, seq_len: int) -> int:
        """Forward FLOPs of one layer for the whole batch (matrix-product ops, 2 per MAC)."""
        raise NotImplementedError

    def forward_flops(self, batch_size: int, seq_len: int) -> int:
        """Analytic FLOPs of `full_scores` for a batch: layers + the tied output product."""
        c = self.config
        output = 2 * batch_size * c.d_model * c.n_items
        return c.n_layers * self.layer_flops(batch_size, seq_len) + self.extra_flops(batch_size, seq_len) + output

    def step_flops(self, batch_size: int, seq_len: int) -> int:
        """Analytic FLOPs of a train step (forward + backward): the backward of a product costs two
        products of its size, so 3 x forward unless a model's custom backward does otherwise."""
        return 3 * self.forward_flops(batch_size, seq_len)

    def extra_flops(self, batch_size: int, seq_len: int) -> int:
        """FLOPs outside the layers and the output product (0 unless a model overrides it)."""
        return 0

    def scan_flops(self, batch_size: int, seq_len: int) -> int:
        """Forward FLOPs of element-wise recurrences (scans) that no counter sees; 0 if none."""
        return 0


class RecBoleStack(SequentialRecommender):
    """RecBole's wrapper of the recurrent models (Mamba4Rec, EchoMamba4Rec, SIGMA, RecBLR):
    X0 = LN_1e-12(Dropout(E[S])), no position embedding, then the layers in turn; RecBole's init
    over the whole model. Subclasses pass their layers and add only what differs."""

    def __init__(self, config: SeqRecConfig, layers):
        super().__init__(config)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.d_model, eps=1e-12)
        self.layers = nn.ModuleList(layers)
        self.apply(recbole_init)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.dropout(self.item_embedding(item_seq)))  # [B, L, d]
        for layer in self.layers:
            x = layer(x)
        return x


class RecBoleLayer(nn.Module):
    """One layer of those wrappers (Mamba4Rec's MambaLayer, SIGMA's SIGMALayers, RecBLR's
    RecurrentLayer), written once around the model's own token mixer:
        X' = LN_1e-12(Dropout(mixer(X)) + X)    (no "+ X" when residual=False)
        X  = LN_1e-12(X' + Dropout(W2 Dropout(act(W1 X'))))    inner 4d
    """

    def __init__(self, mixer: nn.Module, d_model: int, dropout: float, residual: bool = True,
                 ffn_activation: str = "gelu"):
        super().__init__()
        self.mixer = mixer
        self.residual = residual
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = FeedForward(d_model, 4 * d_model, dropout, ffn_activation, post_norm_eps=1e-12,
                               inner_dropout=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.mixer(x))
        return self.ffn(self.norm(y + x if self.residual else y))
