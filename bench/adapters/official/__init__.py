"""Official twins: the official code of each model, unedited, behind the shared interface.

    import models, bench.adapters
    bench.adapters.register()
    twin = models.build("official/recgrela", n_items=3417, max_len=200)   # RecGRELA.py + its YAML
    twin.loss(item_seq, target)       # the official calculate_loss (CE)
    twin.full_scores(item_seq)        # the official full_sort_predict

Where the code comes from: `../shared/peers` beside the project (the RecGRELA authors' RecBole
models at TBI805/RecGRELA@608a39b and Mamba's block and reference scan at
state-spaces/mamba@e9594ce), or the folder named by $SEQREC_PEERS (`scripts/fetch_peers.sh`
lays one out). RecBole's SASRec comes from the installed `recbole` package (1.2.1). Imports that
cannot run here get the stand-ins of `shims.py`; every row says which (`official_substitutions`).

Config: RecBole's way, without its `Config` class (numpy 2 broke it): the package's
`overall.yaml`, then the model's own YAML (the paper's config in the peers folder; RecBole's
`properties/model/SASRec.yaml` for SASRec), then the grid: d_model -> `hidden_size`, n_layers ->
`n_layers`/`num_layers`, n_heads -> `n_heads`/`num_heads`, max_len -> `MAX_ITEM_LIST_LENGTH`,
n_items -> `dataset.num(item_id)`. Every other model key of the YAML is a config key of the twin
under its official name (`official/sasrec:hidden_dropout_prob=0.2`). `loss_type` is CE.

Per model (one module each: `sasrec.py`, `recgrela.py`, ...): a `TWIN` (file, class, YAML and the
official names of the grid keys), `ours_config(official)` (our registered model's config that the
official code computes, with any option set to the official behaviour) and `to_ours(state)` (the
explicit state-dict mapping, official -> ours, also applied to gradients). The equivalence tests
(tests/test_official_equivalence.py) use exactly these.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.base import SeqRecConfig, SequentialRecommender

from . import shims

PEERS_ENV = "SEQREC_PEERS"
DEFAULT_PEERS = Path(__file__).resolve().parents[3].parent / "shared" / "peers"
TWIN_MODULES = ("sasrec", "linrec", "recgrela", "eulerformer", "lrurec", "mamba4rec",
                "echomamba4rec", "sigma", "recblr")
# RecBole's keys that describe data and training, not the model: never config keys of a twin
NOT_MODEL_KEYS = {"gpu_id", "log_wandb", "dataset", "USER_ID_FIELD", "ITEM_ID_FIELD", "load_col",
                   "user_inter_num_interval", "item_inter_num_interval", "epochs",
                   "train_batch_size", "learner", "learning_rate", "eval_step", "stopping_step",
                   "train_neg_sample_args", "metrics", "valid_metric", "eval_batch_size",
                   "weight_decay", "topk", "MAX_ITEM_LIST_LENGTH", "hidden_size", "loss_type"}


class PeersNotFound(ValueError):
    """The folder of official code is missing or incomplete (one line for the CLI, exit 2)."""


def peers_dir() -> Path:
    """$SEQREC_PEERS, else ../shared/peers beside the project; checked, never guessed."""
    path = Path(os.environ.get(PEERS_ENV) or DEFAULT_PEERS)
    if not (path / "recgrela-paper" / "model").is_dir() or not (path / "mamba" / "mamba_ssm").is_dir():
        raise PeersNotFound(f"official code not found in {path} (expected recgrela-paper/model and "
                            f"mamba/mamba_ssm): set ${PEERS_ENV} or run scripts/fetch_peers.sh")
    return path


@dataclass(frozen=True)
class Twin:
    """Where one official model lives and how the grid maps onto its config names."""

    name: str  # our registry name
    class_name: str
    source: str  # "model/RecGRELA.py" under recgrela-paper/, or "recbole:<module>"
    yaml: str  # "config/RecGRELA.yaml" under recgrela-paper/, or "recbole:<yaml path>"
    layers_key: str = "num_layers"
    heads_key: str | None = None  # None: the official model has no heads (the grid's n_heads unused)
    causal: bool = False
    faithful_to: str = ""
    # the file's own fallback for a missing causal_conv1d is broken (RecGRELA's crashes): give it the
    # reference conv, its CUDA path's math (shims.patch_causal_conv1d)
    reference_conv: bool = False


class RecBoleConfig(dict):
    """RecBole's Config as the models read it: `config[key]`, None for a missing key; `n_items`
    is the catalogue size the twin was built for (the dataset's `num(item_id)`)."""

    n_items: int = 0

    def __missing__(self, key):
        return None

    def __getattr__(self, key):  # RecBole's Config also answers `config.key` (EulerFormer's layers)
        if key in self:
            return self[key]
        raise AttributeError(f"config has no key {key!r}")


class NeedsMoreThanItems(ValueError):
    """A RecBole model asked its dataset for more than the item sequence (one line, exit 2)."""


ITEM_ID_FIELD = "item_id"
# what a RecBole model's request of its dataset means, for the refusal's one line
_DATASET_NEEDS = {"user_num": "user ids", "user_feat": "user features", "item_feat": "item side features",
                  "field2type": "side features", "field2source": "side features", "fields": "side features",
                  "get_preload_weight": "pre-trained or knowledge-graph embeddings",
                  "entity_num": "a knowledge graph", "relation_num": "a knowledge graph",
                  "inter_feat": "the training interactions", "get_user_feature": "user features",
                  "get_item_feature": "item side features"}


class ItemOnlyDataset:
    """The dataset a RecBole model is built from here: item sequences and nothing else. It answers
    `num("item_id")` (the catalogue size, padding id 0 included); any other request (user ids,
    side features, a knowledge graph) raises NeedsMoreThanItems naming what the model needs."""

    def __init__(self, n_items: int, model_name: str = "the model", max_len: int | None = None):
        self.n_items = n_items
        self.item_num = n_items  # RecBole's Dataset.item_num: num(item_id)
        self.model_name = model_name
        if max_len is not None:  # the padded length of the item-sequence field (CORE reads it)
            self.field2seqlen = {f"{ITEM_ID_FIELD}_list": max_len}

    def num(self, field: str) -> int:
        if field != ITEM_ID_FIELD:
            need = "user ids" if "user" in field else f"the field {field!r}"
            raise NeedsMoreThanItems(f"{self.model_name} needs {need}; this suite feeds item sequences only")
        return self.n_items

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        need = _DATASET_NEEDS.get(attr, f"dataset.{attr}")
        raise NeedsMoreThanItems(f"{self.model_name} needs {need}; this suite feeds item sequences only")


# RecBole's YAML loader resolves "1e-12" as a float (plain YAML 1.1 reads a string)
_FLOAT = re.compile(r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
                    r"|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


def read_yaml(path: Path) -> dict:
    import yaml

    class Loader(yaml.FullLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return yaml.load(path.read_text(), Loader=Loader) or {}


def resolve_path(path_text: str) -> Path:
    if path_text.startswith("recbole:"):
        import recbole

        return Path(recbole.__file__).parent / path_text.split(":", 1)[1]
    return peers_dir() / "recgrela-paper" / path_text


def twin_names() -> list[str]:
    return sorted(TWIN_MODULES)


def twin_module(name: str):
    """bench.adapters.official.<name>: TWIN, ours_config, to_ours."""
    if name not in TWIN_MODULES:
        raise ValueError(f"no official twin for {name!r}; official/ names: {', '.join(twin_names())}")
    return importlib.import_module(f"{__name__}.{name}")


class OfficialUnavailable(ValueError):
    """A package the official code needs is not installed (one line for the CLI, exit 2)."""


@functools.cache
def load_official(name: str) -> tuple[type, tuple[str, ...]]:
    """(the official class, the substitutions made to import it); imports once per process.
    Raises PeersNotFound or OfficialUnavailable (both ValueError) with one line."""
    try:
        return _load_official(name)
    except ModuleNotFoundError as err:
        raise OfficialUnavailable(f"official/{name} needs the package {err.name!r}: "
                                  "pip install -e '.[official]'") from None


def import_recbole(module_name: str):
    """Import a module of the installed `recbole` package. Importing RecBole's
    sequential_recommender package runs sine.py, which switches autograd anomaly detection on for
    the whole process (a NaN check after every backward op): a hidden handicap on every model
    measured afterwards, so it is switched back."""
    anomaly = torch.is_anomaly_enabled()
    try:
        return importlib.import_module(module_name)
    finally:
        torch.autograd.set_detect_anomaly(anomaly)


def _load_official(name: str) -> tuple[type, tuple[str, ...]]:
    twin = twin_module(name).TWIN
    if twin.source.startswith("recbole:"):
        return getattr(import_recbole(twin.source.split(":", 1)[1]), twin.class_name), ()
    root = peers_dir()
    paper = str(root / "recgrela-paper")
    if paper not in sys.path:
        sys.path.insert(0, paper)  # `from model.layers...`, `from parallel_scan import ...`
    text = (root / "recgrela-paper" / twin.source).read_text()
    subs = []
    if "timm" in text:
        subs += shims.install_timm()
    if "mamba_ssm" in text:
        subs += shims.install_mamba(root / "mamba")
    if "parallel_scan" in text:
        subs += shims.install_parallel_scan()
    module = importlib.import_module(twin.source[:-3].replace("/", "."))
    if twin.reference_conv:
        subs += shims.patch_causal_conv1d(module)
    elif "causal_conv1d" in text and getattr(module, "causal_conv1d_fn", None) is None:
        subs.append(f"{name} causal_conv1d not installed: its own nn.Conv1d path")
    return getattr(module, twin.class_name), tuple(subs)


def model_defaults(name: str) -> dict:
    """The model keys of the twin's YAML (the paper's config) with their values."""
    twin = twin_module(name).TWIN
    keys = set(NOT_MODEL_KEYS) | {twin.layers_key} | ({twin.heads_key} if twin.heads_key else set())
    return {k: v for k, v in read_yaml(resolve_path(twin.yaml)).items() if k not in keys}


def recbole_config(name: str, config: SeqRecConfig) -> RecBoleConfig:
    """The dict the official constructor reads: overall.yaml < model YAML < the grid (+ overrides)."""
    twin = twin_module(name).TWIN
    grid_keys = {"d_model": ("hidden_size",), "n_layers": (twin.layers_key,),
                 "n_heads": (twin.heads_key,) if twin.heads_key else ()}
    return merge_recbole_config(read_yaml(resolve_path(twin.yaml)), config, grid_keys)


def merge_recbole_config(model_yaml: dict, config: SeqRecConfig, grid_keys: dict) -> RecBoleConfig:
    """RecBole's config without its Config class: overall.yaml, then `model_yaml`, then the grid
    (`max_len` -> MAX_ITEM_LIST_LENGTH; each of d_model, n_layers, n_heads -> the official names
    `grid_keys` gives it), then every extra key of `config` (the spec's overrides); loss CE."""
    merged = read_yaml(resolve_path("recbole:properties/overall.yaml"))
    merged.update(model_yaml)
    merged.update(USER_ID_FIELD="user_id", ITEM_ID_FIELD=ITEM_ID_FIELD, LIST_SUFFIX="_list",
                  ITEM_LIST_LENGTH_FIELD="item_length", NEG_PREFIX="neg_", device=torch.device("cpu"),
                  loss_type="CE", MAX_ITEM_LIST_LENGTH=config.max_len)
    for ours, official_names in grid_keys.items():
        merged.update({official: getattr(config, ours) for official in official_names})
    extras = {f.name for f in dataclasses.fields(config)} - {f.name for f in dataclasses.fields(SeqRecConfig)}
    merged.update({k: as_yaml_value(getattr(config, k)) for k in extras})
    out = RecBoleConfig(merged)
    out.n_items = config.n_items
    return out


def rename(state: dict, renames) -> dict:
    """Apply the first matching (pattern, replacement) of `renames` to every key; a key no
    pattern matches keeps its name. For the state-dict mappings of the twin modules."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in renames:
            new, hits = re.subn(pattern, replacement, key)
            if hits:
                key = new
                break
        out[key] = value
    return out


@contextlib.contextmanager
def keep_float64():
    """Test scaffolding: inside, `Tensor.float()` and `Tensor.to(torch.float32)` leave a float64
    tensor float64, and `Tensor.to(torch.complex64)` of a float64 tensor gives complex128. Several
    official files cast by name on purpose (RecGRELA's RoPE, Mamba's `A_log.float()` and
    `selective_scan_ref`, the LRURec port's `x.to(torch.cfloat)`); our code casts at the same
    places. At float32, the benchmark's dtype, the casts are the same on both sides; this lets the
    equivalence tests run both codes entirely in float64 so that a relative error of 1e-9 can be
    asked of them."""
    float_, to = torch.Tensor.float, torch.Tensor.to

    def keep_float(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else float_(self, *args, **kwargs)

    wider = {torch.float32: torch.float64, torch.complex64: torch.complex128}

    def keep_to(self, *args, **kwargs):
        if self.dtype == torch.float64:
            args = tuple(wider.get(a, a) if isinstance(a, torch.dtype) else a for a in args)
            if "dtype" in kwargs:
                kwargs["dtype"] = wider.get(kwargs["dtype"], kwargs["dtype"])
        return to(self, *args, **kwargs)

    torch.Tensor.float, torch.Tensor.to = keep_float, keep_to
    try:
        yield
    finally:
        torch.Tensor.float, torch.Tensor.to = float_, to


@contextlib.contextmanager
def float64_without_dropout():
    """keep_float64, and `F.dropout` (so every nn.Dropout) the identity, in both codes: for the
    official dropouts hard-coded without a config key (SIGMA's gate Dropout(0.2), EulerFormer's
    phase-view Dropout(0.5)); every other dropout is switched off through the config."""
    dropout = F.dropout
    F.dropout = lambda input, p=0.5, training=True, inplace=False: input
    try:
        with keep_float64():
            yield
    finally:
        F.dropout = dropout


def as_yaml_value(value):
    return list(value) if isinstance(value, tuple) else value


class OfficialTwin(SequentialRecommender):
    """The official model (`self.official`) behind the shared interface: `loss` is its
    `calculate_loss` (CE), `full_scores` its `full_sort_predict`, `user_vector` its `forward`.
    There is no analytic FLOP formula for it (the counters measure it)."""

    official_name: str = ""
    official_substitutions: str = ""
    analytic_flops_reason = "no analytic formula for official code (fvcore and FlopCounterMode count it)"
    objectives = ("ce",)  # the official calculate_loss is the loss; --loss sampled/bce would not be the official code's

    def __init__(self, config: SeqRecConfig):
        nn.Module.__init__(self)
        self.config = config
        self.official = self.build_official(config)

    def build_official(self, config: SeqRecConfig) -> nn.Module:
        """The official model for `config` (sets `self.recbole_config`, the dict it was built from);
        bench.adapters.recbole_zoo overrides it for any RecBole sequential model."""
        official_class, _ = load_official(self.official_name)
        self.recbole_config = recbole_config(self.official_name, config)
        return official_class(self.recbole_config, ItemOnlyDataset(config.n_items))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        first = next(self.official.parameters(), None)
        if first is not None:  # RecBole models keep `self.device` for tensors they create
            self.official.device = first.device
        return self

    @property
    def item_embedding(self) -> nn.Embedding:
        return self.official.item_embedding

    def interaction(self, item_seq: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        """RecBole's batch as the official methods read it (a dict is enough: `inter[key]`)."""
        seq_len = (item_seq != 0).sum(dim=1).clamp(min=1)
        inter = {self.official.ITEM_SEQ: item_seq, self.official.ITEM_SEQ_LEN: seq_len}
        if target is not None:
            inter[self.official.POS_ITEM_ID] = target
        return inter

    def forward(self, item_seq: torch.Tensor, target: torch.Tensor | None = None, entry: str = "hidden"):
        """The official entry points, each run through `self(...)` so that module hooks see the
        twin as the root module (MemTracker refuses a root-level module called twice in a step,
        and the official code's methods are plain methods, not module calls):
        `entry="loss"` calculate_loss, `"scores"` full_sort_predict, `"user_vector"` its forward.
        The hidden states of every slot are not exposed (`entry="hidden"` raises)."""
        if entry == "loss":
            return self.official.calculate_loss(self.interaction(item_seq, target))
        if entry == "scores":
            return self.official.full_sort_predict(self.interaction(item_seq))
        if entry == "user_vector":
            inter = self.interaction(item_seq)
            return self.official.forward(item_seq, inter[self.official.ITEM_SEQ_LEN])
        raise NotImplementedError("an official twin exposes the user vector, scores and loss, not "
                                  "the hidden states of every slot")

    def user_vector(self, item_seq: torch.Tensor, hidden=None) -> torch.Tensor:
        return self(item_seq, entry="user_vector")

    def full_scores(self, item_seq: torch.Tensor, hidden=None) -> torch.Tensor:
        return self(item_seq, entry="scores")

    def loss(self, item_seq: torch.Tensor, target: torch.Tensor, objective=None) -> torch.Tensor:
        """The official calculate_loss (its own loss type); `objective`, if given, must be ce
        (`objectives`: the grid refuses any other for a twin)."""
        if objective is not None and objective.name not in self.objectives:
            raise ValueError(f"{type(self).__name__} trains with the official loss only, not {objective.spec}")
        return self(item_seq, target, entry="loss")

    def forward_flops(self, batch_size: int, seq_len: int):
        return None

    def step_flops(self, batch_size: int, seq_len: int):
        return None

    def scan_flops(self, batch_size: int, seq_len: int):
        return None


@functools.cache
def twin_class(name: str) -> type[OfficialTwin]:
    """The registry class of `official/<name>`: its config dataclass holds the five grid keys
    plus the YAML's model keys under their official names, with the paper's values."""
    module = twin_module(name)
    twin = module.TWIN
    _, subs = load_official(name)
    paper = read_yaml(resolve_path(twin.yaml))
    grid = {"max_len": paper.get("MAX_ITEM_LIST_LENGTH"), "d_model": paper.get("hidden_size"),
            "n_layers": paper.get(twin.layers_key), "n_heads": paper.get(twin.heads_key)}
    fields = [(key, int, dataclasses.field(default=value)) for key, value in grid.items() if value]
    fields += [(key, type(value), dataclasses.field(default=as_config_default(value)))
               for key, value in model_defaults(name).items()]
    config_class = dataclasses.make_dataclass(f"Official{twin.class_name}Config", fields,
                                              bases=(SeqRecConfig,))
    # a twin module may put TWIN_MIXINS before OfficialTwin (LRURec: its forward takes only the ids)
    bases = (*getattr(module, "TWIN_MIXINS", ()), OfficialTwin)
    return type(f"Official{twin.class_name}", bases, {
        "config_class": config_class, "official_name": name, "causal": twin.causal,
        "faithful_to": twin.faithful_to or f"official code: {twin.source}",
        "official_substitutions": "; ".join(subs), "__module__": __name__,
    })


def as_config_default(value):
    return tuple(value) if isinstance(value, list) else value
