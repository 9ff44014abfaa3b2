"""The model zoo behind one interface (see models/base.py).

    import models
    models.available()                       # ['echomamba4rec', 'elastic', 'eulerformer', ...]
    model = models.build("recgrela", n_items=3417, max_len=200, local_shortcut=False)
    hidden = model(item_seq)                 # [B, L, d]
    loss = model.loss(item_seq, target)      # CE over the catalogue (+ auxiliary losses)

Registry names are the ones used everywhere: CLI, CSV rows and plots. Beside the built-in ten, a
spec may name `official/NAME` (the official code), `recbole/ClassName` (RecBole's zoo), a model an
installed package registers under the entry-point group `seqrec_bench.models`, or a dotted path to
your own class (`mypkg.models.MyRec`); see `model_class` and the contract in models/base.py.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .base import STREAM_MODES, SeqRecConfig, SequentialRecommender
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


ENTRY_POINT_GROUP = "seqrec_bench.models"


class PluginError(ValueError):
    """A model from outside the package cannot be used (one line for the CLI, exit 2)."""


def available() -> list[str]:
    """The built-in model names, sorted (the default of every command; names from NAMESPACES,
    entry points and dotted paths are not listed: see `plugins()`)."""
    return sorted(REGISTRY)


def plugins() -> dict[str, str]:
    """Models that installed packages register under the entry-point group `seqrec_bench.models`:
    {name: "module:Class"}. A name that shadows a built-in one is left out (the built-in wins)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in REGISTRY}


def model_class(name: str) -> type[SequentialRecommender]:
    """The class of a model spec's name, resolved in this order: a built-in name; `PREFIX/NAME` of
    a registered namespace (`official/`, `recbole/`); a name an installed package registers as an
    entry point (`seqrec_bench.models`); a dotted path to a class (`mypkg.models.MyRec`).
    Raises ValueError (PluginError for a plugin that fails the contract) with one line."""
    if name in REGISTRY:
        return REGISTRY[name]
    prefix, slash, rest = name.partition("/")
    if slash and prefix in NAMESPACES:
        resolve, names = NAMESPACES[prefix]
        if rest not in names():
            raise ValueError(f"unknown model {name!r}; {prefix}/ names: {', '.join(names())}")
        return resolve(rest)
    entry_points = plugins()
    if name in entry_points:
        target = entry_points[name]
        try:
            return check_model_class(_import_class(target.replace(":", "."), name), name)
        except PluginError as err:
            raise PluginError(f"{err} (entry point {name} = {target!r} of group {ENTRY_POINT_GROUP})") from None
    if "." in name and not slash:
        return check_model_class(_import_class(name, name), name)
    spaces = "".join(f", {p}/NAME" for p in sorted(NAMESPACES))
    installed = "".join(f", {n}" for n in sorted(entry_points))
    raise ValueError(f"unknown model {name!r}; available models: {', '.join(available())}{installed}{spaces}, "
                     "or a dotted path to your own class (mypkg.models.MyRec)")


def _import_class(path: str, name: str) -> type:
    """Import `pkg.module.Class` (the longest importable module prefix, then attributes)."""
    import importlib

    parts = path.split(".")
    if not all(part.isidentifier() for part in parts) or len(parts) < 2:
        raise PluginError(f"model {name!r}: {path!r} is not a dotted path to a class (mypkg.models.MyRec)")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue  # this prefix is not a module: try a shorter one
            raise PluginError(f"model {name!r}: importing {module_name} failed: {type(err).__name__}: {err}") from None
        except (Exception, SystemExit) as err:  # the plugin's own import-time failure (even sys.exit), with its cause
            first = str(err).splitlines()[0] if str(err) else ""
            raise PluginError(f"model {name!r}: importing {module_name} failed: {type(err).__name__}: {first}") from None
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise PluginError(f"model {name!r}: {'.'.join(parts[:cut])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise PluginError(f"model {name!r}: no module named {parts[0]!r} (is the package installed, or on PYTHONPATH?)")


def check_model_class(cls, name: str) -> type[SequentialRecommender]:
    """The contract a model from outside the package must meet (models/base.py): a subclass of
    SequentialRecommender that implements `forward`, declares `causal` (True or False) and a
    `config_class` dataclass derived from SeqRecConfig. Raises PluginError naming the fault."""
    if not isinstance(cls, type):
        raise PluginError(f"model {name!r} is a {type(cls).__name__}, not a class")
    if not issubclass(cls, SequentialRecommender):
        raise PluginError(f"model {name!r}: {cls.__qualname__} does not derive from models.base.SequentialRecommender")
    if cls.forward is SequentialRecommender.forward:
        raise PluginError(f"model {name!r}: {cls.__qualname__} does not implement forward(item_seq) -> [B, L, d]")
    if not any("causal" in vars(k) for k in cls.__mro__ if k is not SequentialRecommender):
        raise PluginError(f"model {name!r}: {cls.__qualname__} does not declare `causal` (True if slot t never sees slots > t)")
    if not isinstance(cls.causal, bool):
        raise PluginError(f"model {name!r}: {cls.__qualname__}.causal must be True or False, got {cls.causal!r}")
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)
            and issubclass(config_class, SeqRecConfig)):
        raise PluginError(f"model {name!r}: {cls.__qualname__}.config_class must be a dataclass derived from "
                          f"models.base.SeqRecConfig, got {config_class!r}")
    check_stream_mode(cls, name)
    return cls


def check_stream_mode(cls: type[SequentialRecommender], name: str) -> None:
    """`stream_mode` is one of STREAM_MODES; "cache" and "state" need a causal model that implements
    `stream_init` and `stream_step` (models/base.py). Raises PluginError naming the fault."""
    mode = cls.stream_mode
    if mode not in STREAM_MODES:
        raise PluginError(f"model {name!r}: {cls.__qualname__}.stream_mode must be one of "
                          f"{', '.join(STREAM_MODES)}, got {mode!r}")
    if mode == "recompute":
        return
    if not cls.causal:
        raise PluginError(f"model {name!r}: {cls.__qualname__} declares stream_mode {mode!r} but is not causal: "
                          "its last slot depends on later ones, so nothing can be kept exactly (use 'recompute')")
    missing = [m for m in ("stream_init", "stream_step")
               if getattr(cls, m) is getattr(SequentialRecommender, m)]
    if missing:
        raise PluginError(f"model {name!r}: {cls.__qualname__} declares stream_mode {mode!r} but does not implement "
                          f"{' and '.join(missing)}")


def no_analytic_reason(cls: type[SequentialRecommender]) -> str | None:
    """Why the model class `cls` has no analytic FLOP formula, or None when it has one. The analytic
    cost methods are optional (models/base.py): without them the analytic cells stay empty and
    carry this reason (also an official twin's or a RecBole model's `analytic_flops_reason`)."""
    reason = getattr(cls, "analytic_flops_reason", None)
    if reason:
        return reason
    if cls.layer_flops is SequentialRecommender.layer_flops and cls.forward_flops is SequentialRecommender.forward_flops:
        return f"{cls.__qualname__} defines no analytic cost method (layer_flops or forward_flops, models/base.py)"
    return None


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


__all__ = ["available", "build", "check_model_class", "config_keys", "make_config", "model_class", "no_analytic_reason", "plugins",
           "register_namespace", "PluginError", "REGISTRY", "SeqRecConfig", "SequentialRecommender"]
