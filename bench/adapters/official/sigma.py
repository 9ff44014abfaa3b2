"""official/sigma: `model/SIGMA.py` of the RecGRELA authors' models (TBI805/RecGRELA@608a39b) with its
`config/SIGMA.yaml`; Mamba is the peer block with `selective_scan_ref` (shims.install_mamba)."""
from __future__ import annotations

from . import Twin, float64_without_dropout, rename
from .mamba4rec import mamba_config

TWIN = Twin(name="sigma", class_name="SIGMA", source="model/SIGMA.py",
            yaml="config/SIGMA.yaml", layers_key="num_layers", heads_key=None, causal=False)

OFFICIAL_FLIPPED = 45  # `flipped_input[:, :45, :]`: the official code flips the first 45 slots, any L
OFFICIAL_GATE_DROPOUT = 0.2  # `selective_gate = nn.Sequential(nn.Dropout(0.2))`: no config key


def ours_config(official: dict) -> dict:
    """`sigma` computing what the official SIGMA computes at L = MAX_ITEM_LIST_LENGTH: the official
    flip of min(45, L) slots is our flip_keep = L - 45 (0 below L = 45). The selective gates'
    Dropout(0.2) is hard-coded there, whatever `dropout_prob` says: so is ours (gate_dropout)."""
    L = official["MAX_ITEM_LIST_LENGTH"]
    return mamba_config(official) | {"flip_keep": max(L - OFFICIAL_FLIPPED, 0),
                                     "gate_dropout": OFFICIAL_GATE_DROPOUT}


_BLOCK = r"^mamba_layers\.(\d+)\.gmamba\."
RENAMES = ((r"^LayerNorm\.", "norm."),
           (_BLOCK + r"mamba\.conv1d\.", r"layers.\1.mixer.mamba.conv.conv."),
           (_BLOCK + r"selective_gate_si\.1\.", r"layers.\1.mixer.gate_silu."),
           (_BLOCK + r"selective_gate_sig\.1\.", r"layers.\1.mixer.gate_sigmoid."),
           (_BLOCK + r"conv1d\.", r"layers.\1.mixer.feature_conv."),
           (_BLOCK + r"projection\.", r"layers.\1.mixer.proj."),
           (_BLOCK, r"layers.\1.mixer."),  # mamba, dense1, dense2, gru, combining_weights
           (r"^mamba_layers\.(\d+)\.LayerNorm\.", r"layers.\1.norm."),
           (r"^mamba_layers\.(\d+)\.ffn\.w_1\.", r"layers.\1.ffn.fc1."),
           (r"^mamba_layers\.(\d+)\.ffn\.w_2\.", r"layers.\1.ffn.fc2."),
           (r"^mamba_layers\.(\d+)\.ffn\.LayerNorm\.", r"layers.\1.ffn.norm."))


def to_ours(state: dict) -> dict:
    """Official state dict (or gradients) -> ours: names only."""
    return rename(state, RENAMES)


# float64_without_dropout: the gates' Dropout(0.2) is hard-coded in the official code
# (`selective_gate`); every other dropout is 0 through the config, so this removes exactly the
# gates' dropout, in the official model and in ours (gate_dropout = 0.2 as official).
EQUIVALENCE = {"no_dropout": {"dropout_prob": 0.0}, "context": float64_without_dropout}
