"""official/eulerformer: TBI805/RecGRELA@608a39b `model/EulerFormer.py` (+ `model/layers/layers_euler.py`)
with the paper's `config/EulerFormer.yaml`."""
from __future__ import annotations

from . import Twin, float64_without_dropout, rename
from .sasrec import RENAMES as SASREC_RENAMES

TWIN = Twin(name="eulerformer", class_name="EulerFormer", source="model/EulerFormer.py",
            yaml="config/EulerFormer.yaml", layers_key="n_layers", heads_key="n_heads", causal=True)

OFFICIAL_CL_DROPOUT = 0.5  # layers_euler.MultiHeadAttention: `self.dp = nn.Dropout(p=0.5)`, no config key


def ours_config(official: dict) -> dict:
    """`eulerformer` computing what the official EulerFormer computes: RecBole's materialised
    mask (attention="math"), and alpha held as per-layer parameters (angle_params) so that the
    parameter counts agree."""
    if official["hidden_act"] != "gelu":
        raise ValueError("our EulerFormer's FFN is GELU (the paper's config)")
    return dict(n_items=official.n_items, max_len=official["MAX_ITEM_LIST_LENGTH"],
                d_model=official["hidden_size"], n_layers=official["n_layers"],
                n_heads=official["n_heads"], d_inner=official["inner_size"],
                hidden_dropout=official["hidden_dropout_prob"], attn_dropout=official["attn_dropout_prob"],
                layer_norm_eps=official["layer_norm_eps"], attention="math",
                euler_bias=bool(official["euler_bias"]), init_factor=float(official["init_factor"]),
                lamb=float(official["lamb"]), tep=float(official["tep"]),
                cl_dropout=OFFICIAL_CL_DROPOUT, angle_params=True)


_EULER = r"^trm_encoder\.layer\.(\d+)\.multi_head_attention\."
RENAMES = ((r"^rotary_embedding\.", "input_phase."),
           (_EULER + r"euler\.b$", r"layers.\1.attention.qk_transform.bias"),
           (_EULER + r"euler\.", r"layers.\1.attention.qk_transform."),  # delta, alpha
           (_EULER + r"w$", r"layers.\1.attention.qk_transform.cl_weight"),
           *SASREC_RENAMES)
_SCALARS = (".qk_transform.delta", ".qk_transform.bias")  # official [1], ours []


def to_ours(state: dict) -> dict:
    """Official state dict (or gradients) -> ours: names, and delta, b from shape [1] to []."""
    return {k: (v.reshape(()) if k.endswith(_SCALARS) else v) for k, v in rename(state, RENAMES).items()}


# float64_without_dropout: the official phase view's nn.Dropout(p=0.5) has no config key. The
# contrastive term stays live: S[t, u] = sum_i w_i cos(Phi_t,i - Phi_u,i), InfoNCE of each slot's
# phases against all L slots of its sequence (not a constant: it has gradients).
EQUIVALENCE = {"no_dropout": {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0},
               "context": float64_without_dropout}
