"""Sequence-mixing operators shared by model families, each a fast path with its reference oracle
beside it (as state-spaces/mamba keeps `selective_scan_ref` next to its kernel).

The scan strategies a model's config `scan` selects, one vocabulary for every model (see
models/base.py): the key names the function, `<op>` for the fast default and `<op>_<key>` for the
others, so `ref` is always the step-by-step reference oracle.

| op (models) | keys, default first | functions |
| --- | --- | --- |
| selective scan (Mamba4Rec, EchoMamba4Rec, SIGMA) | chunked, loop, ref | selective_scan, _loop, _ref |
| linear scan (LRURec, RecBLR) | parallel, ref | linear_scan, linear_scan_ref |

One-step updates for streaming (models/base.py, "Streaming"), beside the op they step:
`selective_scan.selective_state_update` (the selective scan at one slot, from the state h) and
`causal_conv.causal_conv1d_update` (the causal depthwise conv of Mamba and RecBLR at one slot,
from the window of its last k - 1 inputs). The linear scan's step is h = a h + b, written inline.

`scan=sequential` is an accepted alias of the linear scan's `ref` (its former name, used by the
committed reports/cpu-lrurec-scan-paths/command.txt); `scan_choice` turns it into `ref`.
"""
from __future__ import annotations

from collections.abc import Callable

# the submodules under other names: `models.ops.selective_scan` must stay the module, not its function
from . import linear_scan as _linear
from . import selective_scan as _selective
from .causal_conv import causal_conv1d_update, causal_conv1d_update_flops
from .selective_scan import selective_state_update

SELECTIVE_SCANS: dict[str, Callable] = {"chunked": _selective.selective_scan, "loop": _selective.selective_scan_loop,
                                        "ref": _selective.selective_scan_ref}
LINEAR_SCANS: dict[str, Callable] = {"parallel": _linear.linear_scan, "ref": _linear.linear_scan_ref}
LINEAR_SCAN_ALIASES = {"sequential": "ref"}


def scan_choice(value: str, scans: dict[str, Callable], aliases: dict[str, str] | None = None) -> str:
    """The canonical key of `value` in `scans` (an alias resolved); a ValueError naming the valid
    keys (and aliases) otherwise."""
    aliases = aliases or {}
    if value in scans:
        return value
    if value in aliases:
        return aliases[value]
    also = "".join(f"; alias {old!r} = {new!r}" for old, new in aliases.items())
    raise ValueError(f"scan must be one of {list(scans)}{also}, got {value!r}")


__all__ = ["LINEAR_SCANS", "LINEAR_SCAN_ALIASES", "SELECTIVE_SCANS", "causal_conv1d_update",
           "causal_conv1d_update_flops", "scan_choice", "selective_state_update"]
