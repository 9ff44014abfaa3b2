"""official/recgrela: TBI805/RecGRELA@608a39b `model/RecGRELA.py` with the paper's `config/RecGRELA.yaml`."""
from __future__ import annotations

from . import Twin, keep_float64, rename

TWIN = Twin(name="recgrela", class_name="RecGRELA", source="model/RecGRELA.py", yaml="config/RecGRELA.yaml",
            layers_key="num_layers", heads_key="num_heads", causal=False, reference_conv=True)


def ours_config(official: dict) -> dict:
    """`recgrela` at the official behaviour: RoPE, local shortcut, SiLU gate, input projection."""
    return dict(n_items=official.n_items, max_len=official["MAX_ITEM_LIST_LENGTH"],
                d_model=official["hidden_size"], n_layers=official["num_layers"],
                n_heads=official["num_heads"], dropout=official["dropout_prob"],
                drop_path=official["drop_path"])


_BLOCK = r"^GRELA_block\.(\d+)\."
RENAMES = ((r"^LayerNorm\.", "norm."),
           (_BLOCK + r"attn\.qk\.", r"blocks.\1.qk."),
           (_BLOCK + r"attn\.conv1d\.", r"blocks.\1.shortcut.conv."),
           (_BLOCK + r"act_proj\.", r"blocks.\1.gate."),
           (_BLOCK + r"LayerNorm1\.", r"blocks.\1.norm1."),
           (_BLOCK + r"LayerNorm2\.", r"blocks.\1.norm2."),
           (_BLOCK, r"blocks.\1."))  # in_proj, out_proj, mlp.fc1, mlp.fc2 keep their names


def to_ours(state: dict) -> dict:
    """Official state dict (or gradients) -> ours: names only. The official RoPE table is a
    persistent buffer of every block; ours is one shared, non-persistent table (not mapped)."""
    return rename({k: v for k, v in state.items() if not k.endswith("attn.rope.rotations")}, RENAMES)


EQUIVALENCE = {"no_dropout": {"dropout_prob": 0.0, "drop_path": 0.0}, "context": keep_float64}
