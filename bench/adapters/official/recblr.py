"""official/recblr: TBI805/RecGRELA@608a39b `model/RecBLR.py` (the RecBLR authors' RecBole model)
with the paper's `config/RecBLR.yaml`. Its Triton `parallel_scan` is replaced here by the
sequential loop of shims.py; its `causal_conv1d_fn` is absent, so it takes its own nn.Conv1d path."""
from __future__ import annotations

from . import Twin, rename

TWIN = Twin(name="recblr", class_name="RecBLR", source="model/RecBLR.py", yaml="config/RecBLR.yaml",
            layers_key="num_layers", heads_key=None, causal=True)


def ours_config(official: dict) -> dict:
    """`recblr` at the official behaviour: every row left-padded to a power of two ("full")."""
    return dict(n_items=official.n_items, max_len=official["MAX_ITEM_LIST_LENGTH"],
                d_model=official["hidden_size"], n_layers=official["num_layers"],
                dropout=official["dropout_prob"], expand=official["expand"],
                d_conv=official["d_conv"], pow2_pad="full")


_LAYER = r"^recurrent_layers\.(\d+)\."
RENAMES = ((r"^layer_norm\.", "norm."),
           (_LAYER + r"behavior_modeling\.input\.", r"layers.\1.mixer.in_proj."),
           (_LAYER + r"behavior_modeling\.conv1d\.", r"layers.\1.mixer.conv.conv."),
           (_LAYER + r"behavior_modeling\.output\.", r"layers.\1.mixer.out_proj."),
           (_LAYER + r"behavior_modeling\.", r"layers.\1.mixer."),  # gates, Lambda
           (_LAYER + r"layer_norm\.", r"layers.\1.norm."),
           (_LAYER + r"ffn\.w_1\.", r"layers.\1.ffn.fc1."),
           (_LAYER + r"ffn\.w_2\.", r"layers.\1.ffn.fc2."),
           (_LAYER + r"ffn\.layer_norm\.", r"layers.\1.ffn.norm."))


def to_ours(state: dict) -> dict:
    """Official state dict (or gradients) -> ours: names only."""
    return rename(state, RENAMES)


# max_len 6 (not a power of two): the official left-pads every row to 8 inside each layer
EQUIVALENCE = {"no_dropout": {"dropout_prob": 0.0}, "dims": {"max_len": 6}}
