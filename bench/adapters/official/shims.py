"""Stand-ins for the imports the official files need that cannot run here, and nothing else.

Each stand-in is installed only when the real package cannot be imported, and each one installed
is named in the returned substitution list, which every row of a twin carries
(`official_substitutions`): a twin whose scan is `selective_scan_ref` is not timed with the
official CUDA kernel. The official files themselves are never edited.

| import in the official code | stand-in | why it changes cost |
| --- | --- | --- |
| `timm.models.layers.DropPath` | timm's stochastic depth, same math | none (timm pulls torchvision) |
| `causal_conv1d.causal_conv1d_fn` (RecGRELA) | Dao-AILab's `causal_conv1d_ref`: depthwise `F.conv1d`, left pad k-1, SiLU | reference conv, not the CUDA kernel; RecGRELA's own CPU fallback crashes |
| `mamba_ssm` (Mamba4Rec, EchoMamba4Rec, SIGMA) | the pinned peer files (`Mamba`, `selective_scan_interface`) with `selective_scan_fn` = `selective_scan_ref` | the reference scan materialises (B, D, L, N) and loops over L |
| `mamba_ssm.ops.triton.layer_norm` | a module that only raises | the peer interface imports it; Mamba-1 never calls it |
| `parallel_scan.parallel_scan` (RecBLR, Triton) | a sequential loop over L of h_t = a_t h_{t-1} + b_t | a loop, not the Triton kernel |
| `einops` | must be installed (`pip install -e '.[official]'`) | none |
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from models.layers import DropPath as _DropPath


class TimmDropPath(_DropPath):
    """timm's `DropPath(drop_prob, scale_by_keep=True)`: zero a sample's branch with probability p
    and scale the kept ones by 1/(1-p) (models.layers.DropPath is that math)."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        if not scale_by_keep:
            raise NotImplementedError("only timm's default scale_by_keep=True is provided")
        super().__init__(drop_prob)


def causal_conv1d_ref(x, weight, bias=None, seq_idx=None, initial_states=None,
                      return_final_states=False, final_states_out=None, activation=None):
    """Dao-AILab/causal-conv1d's reference (BSD-3), re-written: x [B, D, L], weight [D, W] ->
    SiLU?(depthwise conv of x left-padded with W - 1 zeros) [B, D, L]."""
    if seq_idx is not None or initial_states is not None or return_final_states:
        raise NotImplementedError("the stand-in covers the plain causal conv only")
    if activation not in (None, "silu", "swish"):
        raise NotImplementedError(f"activation {activation!r}")
    seq_len = x.shape[-1]
    dim, width = weight.shape
    out = F.conv1d(x.to(weight.dtype), weight.unsqueeze(1), bias, padding=width - 1, groups=dim)
    out = out[..., :seq_len]
    return out if activation is None else F.silu(out)


def sequential_parallel_scan(gates: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """RecBLR's `parallel_scan(gates, tokens)` as a loop: [B, C, T] each, h_t = g_t h_{t-1} + x_t,
    h_{-1} = 0; autograd differentiates the loop (the Triton kernel's own backward is the same
    adjoint recurrence)."""
    state = torch.zeros_like(tokens[..., 0])
    states = []
    for g_t, x_t in zip(gates.unbind(-1), tokens.unbind(-1)):
        state = g_t * state + x_t
        states.append(state)
    return torch.stack(states, dim=-1)


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:
        return False


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    module.__file__ = __file__  # says where it came from in tracebacks
    return module


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _package(name: str) -> types.ModuleType:
    package = _module(name)
    package.__path__ = []  # a package with no files of its own
    sys.modules[name] = package
    return package


def install_timm() -> list[str]:
    if _importable("timm.models.layers"):
        return []
    sys.modules["timm"] = _package("timm")
    sys.modules["timm.models"] = _package("timm.models")
    sys.modules["timm.models.layers"] = _module("timm.models.layers", DropPath=TimmDropPath)
    return ["timm.DropPath=stand-in (same math)"]


def install_mamba(mamba_root: Path) -> list[str]:
    """`from mamba_ssm import Mamba` -> the pinned peer block with the reference scan, unless the
    real mamba_ssm (with its CUDA kernels) imports."""
    installed = sys.modules.get("mamba_ssm")
    if installed is not None and getattr(installed, "stand_in_substitutions", None):
        return list(installed.stand_in_substitutions)  # a second twin in one process: same stand-in
    if _importable("mamba_ssm"):
        import mamba_ssm

        return [f"mamba_ssm={getattr(mamba_ssm, '__version__', 'installed')} (its own kernels)"]
    for name in [n for n in sys.modules if n == "mamba_ssm" or n.startswith("mamba_ssm.")]:
        del sys.modules[name]
    root = mamba_root / "mamba_ssm"
    package = _package("mamba_ssm")
    for sub in ("modules", "ops", "utils", "ops.triton"):
        _package(f"mamba_ssm.{sub}")

    def _no_triton(*args, **kwargs):
        raise NotImplementedError("mamba_ssm's Triton layer norm is not available (stand-in)")

    sys.modules["mamba_ssm.ops.triton.layer_norm"] = _module("mamba_ssm.ops.triton.layer_norm",
                                                             _layer_norm_fwd=_no_triton)
    _load_file("mamba_ssm.utils.torch", root / "utils" / "torch.py")
    interface = _load_file("mamba_ssm.ops.selective_scan_interface",
                           root / "ops" / "selective_scan_interface.py")
    interface.selective_scan_fn = interface.selective_scan_ref  # the substitution
    block = _load_file("mamba_ssm.modules.mamba_simple", root / "modules" / "mamba_simple.py")
    package.Mamba = block.Mamba
    subs = ["mamba_ssm.selective_scan_fn=selective_scan_ref (peer file; not the CUDA kernel)"]
    if block.causal_conv1d_fn is None:
        subs.append("mamba causal_conv1d not installed: Mamba's own nn.Conv1d path")
    package.stand_in_substitutions = tuple(subs)
    return subs


def install_parallel_scan() -> list[str]:
    if _importable("triton") and torch.cuda.is_available():
        return []  # the official Triton file imports and runs
    sys.modules["parallel_scan"] = _module("parallel_scan", parallel_scan=sequential_parallel_scan)
    return ["parallel_scan=sequential loop (not the Triton kernel)"]


def patch_causal_conv1d(module: types.ModuleType) -> list[str]:
    """Give an official module whose `causal_conv1d_fn` import failed the reference conv (its GPU
    code path's math). Used for RecGRELA, whose own fallback crashes on any device."""
    if getattr(module, "causal_conv1d_fn", None) is not None:
        return ["causal_conv1d (its own kernel)"]
    module.causal_conv1d_fn = causal_conv1d_ref
    return ["causal_conv1d_fn=causal_conv1d_ref (reference conv, not the CUDA kernel)"]
