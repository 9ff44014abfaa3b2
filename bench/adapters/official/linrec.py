"""official/linrec: TBI805/RecGRELA@608a39b `model/LinRec.py` (+ `model/layers/layers_LinRec.py`)
with the paper's `config/LinRec.yaml`."""
from __future__ import annotations

from . import Twin, rename
from .sasrec import RENAMES  # the same RecBole Transformer backbone and parameter names

# the ELU-normalised attention takes no mask at all: every slot sees every slot, padding included
TWIN = Twin(name="linrec", class_name="LinRec", source="model/LinRec.py", yaml="config/LinRec.yaml",
            layers_key="n_layers", heads_key="n_heads", causal=False)


def ours_config(official: dict) -> dict:
    """`linrec` computing what the official LinRec computes (no option departs: the official
    [B, 1, L, L] mask it builds and never reads is the only declared difference, cost only)."""
    if official["hidden_act"] != "gelu":
        raise ValueError("our LinRec's FFN is GELU (the paper's config)")
    return dict(n_items=official.n_items, max_len=official["MAX_ITEM_LIST_LENGTH"],
                d_model=official["hidden_size"], n_layers=official["n_layers"],
                n_heads=official["n_heads"], d_inner=official["inner_size"],
                hidden_dropout=official["hidden_dropout_prob"], attn_dropout=official["attn_dropout_prob"],
                layer_norm_eps=official["layer_norm_eps"])


def to_ours(state: dict) -> dict:
    """Official state dict (or gradients) -> ours: names only (SASRec's mapping)."""
    return rename(state, RENAMES)


# attn_dropout_prob builds an nn.Dropout the official attention never calls; set to 0 all the same
EQUIVALENCE = {"no_dropout": {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}}
