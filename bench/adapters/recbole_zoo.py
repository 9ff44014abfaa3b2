"""`recbole/<ClassName>`: any sequential recommender of the installed RecBole package, behind the
shared interface through the official twins' adapter (bench.adapters.official.OfficialTwin):

    import models, bench.adapters
    bench.adapters.register()
    gru = models.build("recbole/GRU4Rec", n_items=3417, max_len=200)   # RecBole's GRU4Rec.yaml
    gru.loss(item_seq, target)        # its calculate_loss (CE)
    gru.full_scores(item_seq)         # its full_sort_predict

Config, RecBole's way (bench.adapters.official.merge_recbole_config): `overall.yaml`, then
`properties/model/<ClassName>.yaml`, then the grid: max_len -> MAX_ITEM_LIST_LENGTH; d_model ->
`embedding_size` where the YAML has one (the item table's width, which the scores use; GRU4Rec's
`hidden_size` stays its own key), else `hidden_size`; n_layers -> `n_layers` or `num_layers`;
n_heads -> `n_heads`. Every other model key of the YAML is a config key under its RecBole name
(`recbole/GRU4Rec:hidden_size=64`). The loss is CE (RecBole's full softmax), as for every model.

Refused, with one line naming what is missing: a model that asks its dataset for more than the
number of items when it is built (user ids, side features, a knowledge graph), and one whose
loss or scores read a batch field other than the item sequence, its length and the target
(BERT4Rec's masked-item batch, user ids): `NeedsMoreThanItems`. A model RecBole itself cannot
train with CE is refused by RecBole's own error. `causal` is False for every zoo model: nothing is
claimed about slots it cannot show (the twin exposes scores, not each slot's hidden state).
"""
from __future__ import annotations

import dataclasses
import functools

import torch

from models.base import SeqRecConfig

from .official import (
    ITEM_ID_FIELD,
    NOT_MODEL_KEYS,
    ItemOnlyDataset,
    NeedsMoreThanItems,
    OfficialTwin,
    OfficialUnavailable,
    as_config_default,
    import_recbole,
    merge_recbole_config,
    read_yaml,
    resolve_path,
)

PACKAGE = "recbole.model.sequential_recommender"
LAYER_KEYS = ("n_layers", "num_layers")
WIDTH_KEYS = ("embedding_size", "hidden_size")  # the first one the YAML has is the grid's d_model


def _package():
    try:
        return import_recbole(PACKAGE)
    except ModuleNotFoundError as err:
        raise OfficialUnavailable(f"recbole/ models need the package {err.name!r}: pip install -e '.[official]'") from None


def zoo_names() -> list[str]:
    """The class names of RecBole's sequential recommenders (the installed package's own list)."""
    package = _package()
    base = import_recbole("recbole.model.abstract_recommender").SequentialRecommender
    return sorted(name for name in dir(package)
                  if isinstance(getattr(package, name), type) and issubclass(getattr(package, name), base)
                  and getattr(package, name) is not base)


def model_yaml(class_name: str) -> dict:
    """RecBole's `properties/model/<ClassName>.yaml` ({} when the package ships none)."""
    path = resolve_path(f"recbole:properties/model/{class_name}.yaml")
    return read_yaml(path) if path.is_file() else {}


def grid_keys(yaml: dict) -> dict[str, tuple[str, ...]]:
    """Our grid keys -> the RecBole names they set for this model (see the module docstring)."""
    width = next((key for key in WIDTH_KEYS if key in yaml), "hidden_size")
    return {"d_model": (width,), "n_layers": tuple(k for k in LAYER_KEYS if k in yaml),
            "n_heads": ("n_heads",) if "n_heads" in yaml else ()}


class RecBoleZooConfig(SeqRecConfig):
    """Base of every zoo config: RecBole's own keys may be negative (CPR's `n_facet_window=-2`),
    so numbers are checked for type and finiteness only."""

    negative_numbers = True


class BatchFields(dict):
    """RecBole's interaction as a dict; a field this suite does not feed raises NeedsMoreThanItems."""

    model_name = "the model"

    def __missing__(self, key):
        what = "the target item when scoring" if key == ITEM_ID_FIELD else f"the batch field {key!r}"
        raise NeedsMoreThanItems(f"{self.model_name} reads {what}; this suite feeds the item sequence, "
                                 "its length and (in training) the target only")


class RecBoleZooModel(OfficialTwin):
    """A RecBole sequential recommender (`recbole_class`) behind the shared interface."""

    recbole_class: type = None
    analytic_flops_reason = "no analytic formula for a RecBole model (fvcore and FlopCounterMode count it)"

    def build_official(self, config: SeqRecConfig) -> torch.nn.Module:
        name = f"recbole/{self.recbole_class.__name__}"
        yaml = model_yaml(self.recbole_class.__name__)
        self.recbole_config = merge_recbole_config(yaml, config, grid_keys(yaml))
        if yaml.get("transform"):
            raise NeedsMoreThanItems(f"{name} trains on batches made by RecBole's {yaml['transform']!r} data transform; "
                                     "this suite feeds the item sequence, its length and the target only")
        try:
            return self.recbole_class(self.recbole_config, ItemOnlyDataset(config.n_items, name, config.max_len))
        except NeedsMoreThanItems:
            raise
        except (KeyError, AttributeError, TypeError, NotImplementedError, ValueError) as err:
            # RecBole's own error for a config it cannot build (a bad value, or a key only a
            # dataset with more fields would set): one line, with its cause
            raise ValueError(f"{name} cannot be built with this config: {type(err).__name__}: {err}") from None

    def interaction(self, item_seq: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        fields = BatchFields(super().interaction(item_seq, target))
        fields.model_name = f"recbole/{self.recbole_class.__name__}"
        return fields


@functools.cache
def zoo_class(class_name: str) -> type[RecBoleZooModel]:
    """The registry class of `recbole/<class_name>`: its config dataclass holds the five grid keys
    (RecBole's YAML values where it has them) plus the YAML's other model keys."""
    if class_name not in zoo_names():
        raise ValueError(f"unknown model recbole/{class_name}; recbole/ names: {', '.join(zoo_names())}")
    recbole_class = getattr(_package(), class_name)
    yaml = model_yaml(class_name)
    keys = grid_keys(yaml)
    grid = {"d_model": yaml.get(keys["d_model"][0]), "n_layers": yaml.get(next(iter(keys["n_layers"]), "")),
            "n_heads": yaml.get("n_heads")}
    # RecBole's own keys, but a width the grid does not set (GRU4Rec's hidden_size) stays a key
    taken = (set(NOT_MODEL_KEYS) - set(WIDTH_KEYS)) | {k for names in keys.values() for k in names} | {"transform"}
    fields = [(key, int, dataclasses.field(default=value)) for key, value in grid.items() if isinstance(value, int)]
    fields += [(key, type(value), dataclasses.field(default=as_config_default(value)))
               for key, value in yaml.items() if key not in taken]
    config_class = dataclasses.make_dataclass(f"RecBole{class_name}Config", fields, bases=(RecBoleZooConfig,))
    zoo_model = type(f"RecBole{class_name}", (RecBoleZooModel,), {
        "config_class": config_class, "recbole_class": recbole_class, "official_name": class_name,
        "causal": False, "faithful_to": f"RecBole {_version()} {recbole_class.__module__.replace('.', '/')}.py",
        "official_substitutions": "", "__module__": __name__,
    })
    refuse_what_needs_more(zoo_model)
    return zoo_model


def refuse_what_needs_more(zoo_model: type[RecBoleZooModel]) -> None:
    """Build the model once at a tiny size, so that one which asks its dataset for more than item
    sequences (or trains on RecBole's data transforms) is refused when its name is resolved: one
    line, exit 2, before any command measures or writes anything. Other build failures at this
    size are left to the real build (they may depend on the size)."""
    tiny = zoo_model.config_class(n_items=8, max_len=4)
    try:
        zoo_model(tiny)
    except NeedsMoreThanItems:
        raise
    except Exception:
        pass


def _version() -> str:
    import recbole

    return getattr(recbole, "__version__", "")


def check_all(n_items: int = 3417, max_len: int = 50, d_model: int = 64, n_layers: int = 2,
              n_heads: int = 2) -> list[tuple[str, str]]:
    """Every zoo model built at this size and put through one train step (loss, backward) and one
    full-catalogue scoring: [(spec, "" if it runs, else the one line that refuses it)]."""
    out = []
    for class_name in zoo_names():
        spec = f"recbole/{class_name}"
        try:
            zoo_model = zoo_class(class_name)
            model = zoo_model(zoo_model.config_class(n_items=n_items, max_len=max_len, d_model=d_model,
                                                     n_layers=n_layers, n_heads=n_heads))
            generator = torch.Generator().manual_seed(0)
            item_seq = torch.randint(1, n_items, (4, max_len), generator=generator)
            model.train()
            model.loss(item_seq, torch.randint(1, n_items, (4,), generator=generator)).backward()
            model.eval()
            with torch.no_grad():
                model.full_scores(item_seq)
            out.append((spec, ""))
        except ValueError as err:
            out.append((spec, str(err).splitlines()[0]))
    return out


def main(argv=None) -> int:
    """`python -m bench.adapters.recbole_zoo`: the markdown table of which RecBole models run."""
    import argparse

    from bench.adapters import register

    argparse.ArgumentParser(prog="python -m bench.adapters.recbole_zoo", description=(
        "Build every sequential model of the installed RecBole at n_items=3417, L=50, d=64, 2 layers, "
        "2 heads, run one train step and one full-catalogue scoring, and print a markdown table of "
        "which run and why the others are refused.")).parse_args(argv)
    register()
    print("| spec | status | why not |\n| --- | --- | --- |")
    for spec, reason in check_all():
        print(f"| `{spec}` | {'refused' if reason else 'runs'} | {reason} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
