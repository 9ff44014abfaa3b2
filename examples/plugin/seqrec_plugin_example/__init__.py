"""ConvRec: an example of a model from outside the suite (not from any paper).

A stack of causal convolutions over the item sequence, post-norm residual layers:

    X_0 = E[S] + P                                   item table E, learned positions P, [B, L, d]
    X_l = LN(X_{l-1} + Dropout(GELU(conv_k(X_{l-1}))))   conv_k: dense, causal (k - 1 zeros on the left)

It meets the contract of models/base.py: it derives from SequentialRecommender, implements
`forward(item_seq [B, L]) -> [B, L, d]`, declares `causal` and its `config_class`; the analytic
cost method `layer_flops` is optional (without it the analytic cells stay empty, with the reason).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.base import SeqRecConfig, SequentialRecommender


@dataclass
class ConvRecConfig(SeqRecConfig):
    kernel_size: int = 4  # k: slots each layer looks back over, itself included
    dropout: float = 0.2


class ConvRec(SequentialRecommender):
    causal = True  # slot t reads slots t - k + 1 .. t only
    faithful_to = "example plugin of seqrec-bench (no paper)"
    config_class = ConvRecConfig

    def __init__(self, config: ConvRecConfig):
        super().__init__(config)
        d, k = config.d_model, config.kernel_size
        self.position = nn.Embedding(config.max_len, d)
        self.convs = nn.ModuleList(nn.Conv1d(d, d, k) for _ in range(config.n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(config.n_layers))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        x = self.item_embedding(item_seq) + self.position(positions)  # [B, L, d]
        for conv, norm in zip(self.convs, self.norms):
            y = conv(F.pad(x.transpose(1, 2), (conv.kernel_size[0] - 1, 0)))  # [B, d, L], causal
            x = norm(x + self.dropout(F.gelu(y.transpose(1, 2))))
        return x

    def layer_flops(self, batch_size: int, seq_len: int) -> int:
        """One layer's matrix-product FLOPs (2 per multiply-add): the dense k-tap convolution."""
        c = self.config
        return 2 * batch_size * seq_len * c.d_model * c.d_model * c.kernel_size
