"""official/sasrec: RecBole 1.2.1's `sasrec.py` at RecBole's defaults (`properties/model/SASRec.yaml`)."""
from __future__ import annotations

from . import Twin, rename

TWIN = Twin(name="sasrec", class_name="SASRec", source="recbole:recbole.model.sequential_recommender.sasrec",
            yaml="recbole:properties/model/SASRec.yaml", layers_key="n_layers", heads_key="n_heads",
            causal=True, faithful_to="RecBole 1.2.1 recbole/model/sequential_recommender/sasrec.py")


def ours_config(official: dict) -> dict:
    """`sasrec` computing what RecBole's SASRec computes (the materialised-mask math backend)."""
    if official["hidden_act"] != "gelu":
        raise ValueError("our SASRec's FFN is GELU (RecBole's default)")
    return dict(n_items=official.n_items, max_len=official["MAX_ITEM_LIST_LENGTH"],
                d_model=official["hidden_size"], n_layers=official["n_layers"],
                n_heads=official["n_heads"], d_inner=official["inner_size"],
                hidden_dropout=official["hidden_dropout_prob"], attn_dropout=official["attn_dropout_prob"],
                layer_norm_eps=official["layer_norm_eps"], attention="math")


RENAMES = ((r"^LayerNorm\.", "norm."), (r"^trm_encoder\.layer\.(\d+)\.multi_head_attention\.LayerNorm\.", r"layers.\1.attention.norm."),
           (r"^trm_encoder\.layer\.(\d+)\.multi_head_attention\.", r"layers.\1.attention."),
           (r"^trm_encoder\.layer\.(\d+)\.feed_forward\.dense_1\.", r"layers.\1.ffn.fc1."),
           (r"^trm_encoder\.layer\.(\d+)\.feed_forward\.dense_2\.", r"layers.\1.ffn.fc2."),
           (r"^trm_encoder\.layer\.(\d+)\.feed_forward\.LayerNorm\.", r"layers.\1.ffn.norm."))


def to_ours(state: dict) -> dict:
    """Official state dict (or gradients) -> ours: names only."""
    return rename(state, RENAMES)

# what the equivalence test sets on the twin (official names): dropout off
EQUIVALENCE = {"no_dropout": {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}}
