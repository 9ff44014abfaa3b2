"""The model zoo behind one interface (see models/base.py).

    import models
    models.available()                       # ['echomamba4rec', 'elastic', 'eulerformer', ...]
    model = models.build("recgrela", n_items=3417, max_len=200, local_shortcut=False)
    hidden = model(item_seq)                 # [B, L, d]
    loss = model.loss(item_seq, target)      # CE over the catalogue (+ auxiliary losses)

Registry names are the ones used everywhere: CLI, CSV rows and plots.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .base import SeqRecConfig, SequentialRecommender
from .echomamba4rec import EchoMamba4Rec
from .elastic import Elastic
from .eulerformer import EulerFormer
from .linrec import LinRec
from .lrurec import LRURec
from .mamba4rec import Mamba4Rec
from .recblr import RecBLR
from .recgrela import RecGRELA
from .sasrec import SASRec
from .sigma import SIGMA

REGISTRY: dict[str, type[SequentialRecommender]] = {
    "sasrec": SASRec,
    "linrec": LinRec,
    "recgrela": RecGRELA,
    "eulerformer": EulerFormer,
    "lrurec": LRURec,
    "mamba4rec": Mamba4Rec,
    "echomamba4rec": EchoMamba4Rec,
    "sigma": SIGMA,
    "recblr": RecBLR,
    "elastic": Elastic,
}


# Namespaced names (`PREFIX/NAME`) resolved by a function another package registers, e.g.
# `official/recgrela` -> the official code's twin (bench.adapters.official). models/ never imports
# them itself.
NAMESPACES: dict[str, tuple[Callable[[str], type], Callable[[], list[str]]]] = {}


def register_namespace(prefix: str, resolve: Callable[[str], type],
                       names: Callable[[], list[str]]) -> None:
    """`PREFIX/NAME` resolves to `resolve(NAME)`; `names()` lists the valid NAMEs (for errors)."""
    NAMESPACES[prefix] = (resolve, names)


def available() -> list[str]:
    """Registered model names, sorted (namespaced names are not listed: see NAMESPACES)."""
    return sorted(REGISTRY)


def model_class(name: str) -> type[SequentialRecommender]:
    if name in REGISTRY:
        return REGISTRY[name]
    prefix, slash, rest = name.partition("/")
    if slash and prefix in NAMESPACES:
        resolve, names = NAMESPACES[prefix]
        if rest not in names():
            raise ValueError(f"unknown model {name!r}; {prefix}/ names: {', '.join(names())}")
        return resolve(rest)
    spaces = "".join(f", {p}/NAME" for p in sorted(NAMESPACES))
    raise ValueError(f"unknown model {name!r}; available models: {', '.join(available())}{spaces}")


def config_keys(name: str) -> list[str]:
    """Every config key `name` accepts, in declaration order."""
    return [f.name for f in dataclasses.fields(model_class(name).config_class)]


def make_config(name: str, **config) -> SeqRecConfig:
    """Validate keys and values against the model's config dataclass (official defaults)."""
    keys = config_keys(name)
    unknown = sorted(set(config) - set(keys))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)} for model {name!r}; "
                         f"valid keys: {', '.join(keys)}")
    return model_class(name).config_class(**config)


def build(name: str, **config) -> SequentialRecommender:
    """Build a registered model from keyword config (missing keys take the official defaults)."""
    return model_class(name)(make_config(name, **config))


__all__ = ["available", "build", "config_keys", "make_config", "model_class", "register_namespace", "REGISTRY",
           "SeqRecConfig", "SequentialRecommender"]
