"""official/echomamba4rec: `model/EchoMamba4Rec.py` of the RecGRELA authors' models
(TBI805/RecGRELA@608a39b) with its `config/EchoMamba4Rec.yaml`; Mamba is the peer block with
`selective_scan_ref` (shims.install_mamba). The YAML's `num_heads` (8), `num_experts` and
`initializer_range` are never read by the code: the never-called attention block has 4 heads, hard-coded."""
from __future__ import annotations

from . import Twin, keep_float64, rename
from .mamba4rec import mamba_config

TWIN = Twin(name="echomamba4rec", class_name="EchoMamba4Rec", source="model/EchoMamba4Rec.py",
            yaml="config/EchoMamba4Rec.yaml", layers_key="num_layers", heads_key=None, causal=False)


def ours_config(official: dict) -> dict:
    """`echomamba4rec` at the official behaviour: nested pairs (the default) and the parameters of
    the official never-called attention block (`unused_attention_block`), so the counts agree."""
    return mamba_config(official) | {"nested_pairs": True, "unused_attention_block": True}


_LAYER = r"^mamba_layers\.(\d+)\."
_UNUSED = _LAYER + r"multi_query_transformer_block\."
RENAMES = ((r"^LayerNorm\.", "norm."),
           (_LAYER + r"filter_layer\.complex_weight$", r"layers.\1.filter.weight"),
           (_LAYER + r"filter_layer\.LayerNorm\.", r"layers.\1.filter.norm."),
           (_LAYER + r"norms_(forward|backward)\.(\d+)\.", r"layers.\1.pairs.\3.norm_\2."),
           (_LAYER + r"mamba_(forward|backward)s\.(\d+)\.conv1d\.",
            r"layers.\1.pairs.\3.mamba_\2.conv.conv."),
           (_LAYER + r"mamba_(forward|backward)s\.(\d+)\.", r"layers.\1.pairs.\3.mamba_\2."),
           (_LAYER + r"glu\.LayerNorm\.", r"layers.\1.glu.norm."),
           (_LAYER + r"glu\.", r"layers.\1.glu."),
           (_UNUSED + r"multihead_attn\.", r"layers.\1.unused_attention.attention."),
           (_UNUSED + r"glu\.LayerNorm\.", r"layers.\1.unused_attention.glu.norm."),
           (_UNUSED, r"layers.\1.unused_attention."))


def to_ours(state: dict) -> dict:
    """Official state dict (or gradients) -> ours: names, and the filter W [1, L//2+1, d, 2] loses
    its leading broadcast axis (-> [L//2+1, d, 2])."""
    out = rename(state, RENAMES)
    return {k: v.squeeze(0) if k.endswith(".filter.weight") else v for k, v in out.items()}


# keep_float64: the Mamba blocks' fp32 casts made no-ops in float64 (see official/mamba4rec)
EQUIVALENCE = {"no_dropout": {"dropout_prob": 0.0}, "context": keep_float64}
