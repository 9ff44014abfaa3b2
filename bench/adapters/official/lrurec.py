"""official/lrurec: TBI805/RecGRELA@608a39b `model/LRURec.py` (a RecBole port of LRURec) with the
paper's `config/LRURec.yaml`.

That port moves each right-padded row to the right itself (`right_to_left_padding`), left-pads to
a power of two, gates the recurrence's carry with the padding mask and reads the last slot: the
user vector at the last real item, scored with CE at that slot only (as ours). Its `forward`
takes the ids alone, hence `TwinHooks.user_vector`.
"""
from __future__ import annotations

import torch

from models.lrurec import complex_follows_real

from . import Twin, keep_float64, rename

TWIN = Twin(name="lrurec", class_name="LRURec", source="model/LRURec.py", yaml="config/LRURec.yaml",
            layers_key="n_layers", heads_key=None, causal=True)


class TwinHooks:
    """Mixed into the twin class (TWIN_MIXINS): the official `forward(item_seq)` has no length
    argument, and its complex projections follow the real dtype as ours do (`.double()` alone
    leaves them complex64)."""

    def user_vector(self, item_seq: torch.Tensor, hidden=None) -> torch.Tensor:
        return self.official.forward(item_seq)  # [B, d], the last real item's slot

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        complex_follows_real(self.official)
        return self


TWIN_MIXINS = (TwinHooks,)


def ours_config(official: dict) -> dict:
    """`lrurec` computing what the port computes: one dropout rate everywhere, the paper's
    (r_min, r_max) = (0.8, 0.99) hard-coded in its LRULayer (our defaults)."""
    return dict(n_items=official.n_items, max_len=official["MAX_ITEM_LIST_LENGTH"],
                d_model=official["hidden_size"], n_layers=official["n_layers"],
                dropout=official["dropout_prob"], lru_dropout=official["dropout_prob"])


_BLOCK = r"^encoder\.lru_blocks\.(\d+)\."
RENAMES = ((r"^layer_norm\.", "norm."), (r"^bias$", "item_bias"),
           (_BLOCK + r"lru_layer\.layer_norm\.", r"blocks.\1.lru.norm."),
           (_BLOCK + r"lru_layer\.", r"blocks.\1.lru."),  # params_log, in_proj, out_proj
           (_BLOCK + r"feed_forward\.w_1\.", r"blocks.\1.ffn.fc1."),
           (_BLOCK + r"feed_forward\.w_2\.", r"blocks.\1.ffn.fc2."),
           (_BLOCK + r"feed_forward\.layer_norm\.", r"blocks.\1.ffn.norm."))


def to_ours(state: dict) -> dict:
    """Official state dict (or gradients) -> ours: names only."""
    return rename(state, RENAMES)


# max_len 6 (not a power of two): the port left-pads every row to 8 before its scan
EQUIVALENCE = {"no_dropout": {"dropout_prob": 0.0}, "dims": {"max_len": 6},
               "context": keep_float64}
