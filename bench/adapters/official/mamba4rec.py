"""official/mamba4rec: `model/Mamba4Rec.py` of the RecGRELA authors' models (TBI805/RecGRELA@608a39b)
with its `config/Mamba4Rec.yaml`; `from mamba_ssm import Mamba` is the pinned peer block
(state-spaces/mamba@e9594ce) with `selective_scan_ref` as its scan (shims.install_mamba)."""
from __future__ import annotations

from . import Twin, keep_float64, rename

TWIN = Twin(name="mamba4rec", class_name="Mamba4Rec", source="model/Mamba4Rec.py",
            yaml="config/Mamba4Rec.yaml", layers_key="num_layers", heads_key=None, causal=True)


def mamba_config(official: dict) -> dict:
    """The grid and the Mamba block's keys, shared by the three Mamba twins. The scan is our
    default chunked path (the one the benchmark measures)."""
    return dict(n_items=official.n_items, max_len=official["MAX_ITEM_LIST_LENGTH"],
                d_model=official["hidden_size"], n_layers=official["num_layers"],
                dropout=official["dropout_prob"], d_state=official["d_state"],
                d_conv=official["d_conv"], expand=official["expand"], scan="chunked")


def ours_config(official: dict) -> dict:
    """`mamba4rec` computing what the official Mamba4Rec computes (no option departs)."""
    return mamba_config(official)


_LAYER = r"^mamba_layers\.(\d+)\."
RENAMES = ((r"^LayerNorm\.", "norm."),
           (_LAYER + r"mamba\.conv1d\.", r"layers.\1.mixer.conv.conv."),
           (_LAYER + r"mamba\.", r"layers.\1.mixer."),
           (_LAYER + r"LayerNorm\.", r"layers.\1.norm."),
           (_LAYER + r"ffn\.w_1\.", r"layers.\1.ffn.fc1."),
           (_LAYER + r"ffn\.w_2\.", r"layers.\1.ffn.fc2."),
           (_LAYER + r"ffn\.LayerNorm\.", r"layers.\1.ffn.norm."))


def to_ours(state: dict) -> dict:
    """Official state dict (or gradients) -> ours: names only."""
    return rename(state, RENAMES)


# keep_float64: the official Mamba casts to fp32 on purpose (`A_log.float()`, `D.float()`,
# `dt_proj.bias.float()`, and `selective_scan_ref` casts u, delta, B, C with `.float()` then casts
# back with `.to(dtype=dtype_in)`, a no-op in float64); the test runs both codes in float64 with
# those casts made no-ops, so that 1e-9 can be asked (bench.adapters.official.keep_float64).
EQUIVALENCE = {"no_dropout": {"dropout_prob": 0.0}, "context": keep_float64}
