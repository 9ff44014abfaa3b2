"""Presets, model specs and the grid of points a sweep measures.

A point is one (model spec, workload, setting of every dimension). The swept axis takes its
values from the preset (or `--values`); the other dimensions take the preset's fixed values (or
their flags). Every point is validated against the model's config before anything runs, so bad
input fails at once with one sentence.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import models
from bench import adapters
from bench.results import Shape, spec_label

adapters.register()  # `official/NAME` specs (the official code's twins) everywhere a spec is read

AXES = {"seqlen": "seq_len", "heads": "n_heads", "layers": "n_layers", "batch": "batch_size",
        "dmodel": "d_model", "items": "n_items"}
WORKLOADS = ("train", "infer", "stream")
ITEMS = (1_000, 10_000, 100_000, 1_000_000)  # --axis items: catalogue sizes (ids incl. padding)
# the product card's six, then the RecGRELA paper's other baselines and ELASTIC (a reconstruction)
DEFAULT_MODELS = ("recgrela", "linrec", "sasrec", "eulerformer", "mamba4rec", "lrurec",
                  "echomamba4rec", "recblr", "sigma", "elastic")


@dataclass(frozen=True)
class Preset:
    name: str
    batch_size: int
    seq_len: int
    n_layers: int
    n_heads: int
    d_model: int
    values: dict  # axis name -> tuple of values
    n_items: int = 3417  # ML-1M's item ids including padding
    warmup: int = 2
    repeats: int = 10
    time_limit_s: int = 900
    stream_repeats: int = 100  # a stream step is one event: enough repeats for a p99
    description: str = ""


PRESETS = {
    # a first look on a CPU: B=4 keeps the selective scans (Mamba4Rec, EchoMamba4Rec, SIGMA), whose
    # per-step Python ops grow with L x ceil(B/4) and dominate every counter's cost (MemTracker's most
    # of all), to one row block; the linear-vs-quadratic trend over L is the same
    "quick": Preset(
        "quick", batch_size=4, seq_len=100, n_layers=2, n_heads=2, d_model=64,
        values={"seqlen": (50, 100, 200, 400), "heads": (1, 2, 4, 8), "layers": (1, 2, 3, 4),
                "batch": (8, 16, 32, 64), "dmodel": (32, 64, 128), "items": ITEMS},
        warmup=1, repeats=5, time_limit_s=300,
        description="CPU-sized first look (the default without a GPU): B=4, d=64, 2 layers, 2 heads, "
                    "L=50..400, 1 warm-up and 5 timed steps; sized for minutes, not tens, on 2 cores"),
    "paper": Preset(
        "paper", batch_size=2048, seq_len=200, n_layers=4, n_heads=4, d_model=64,
        values={"seqlen": (100, 125, 150, 175, 200), "heads": (1, 2, 4, 8, 16),
                "layers": (1, 2, 3, 4, 5, 6), "batch": (256, 512, 1024, 2048),
                "dmodel": (32, 64, 128, 256), "items": ITEMS},
        description="RecGRELA Sec. 4.1.4 settings (B=2048, d=64, 4 layers, 4 heads); GPU-sized"),
    "long": Preset(
        "long", batch_size=8, seq_len=1024, n_layers=2, n_heads=2, d_model=64,
        values={"seqlen": (256, 512, 1024, 2048, 4096, 8192), "heads": (1, 2, 4, 8),
                "layers": (1, 2, 4), "batch": (1, 2, 4, 8, 16), "dmodel": (32, 64, 128), "items": ITEMS},
        warmup=1, repeats=5, time_limit_s=1800,
        description="long sequences at a small batch: where linear and quadratic cost part"),
}


@dataclass(frozen=True)
class ModelSpec:
    """`NAME[:key=value[:key=value]]`, e.g. `sasrec:attention=math`."""

    name: str
    overrides: tuple = ()  # sorted (key, value) pairs

    @property
    def variant(self) -> str:
        return ":".join(f"{k}={_format(v)}" for k, v in self.overrides) or "default"

    @property
    def label(self) -> str:
        return spec_label(self.name, self.variant)


MAX_VALUE = 2**31 - 1  # the bound of every size flag (bench.cli.MAX_INT)


def _format(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_model_spec(text: str) -> ModelSpec:
    name, *pairs = text.strip().split(":")
    models.model_class(name)  # raises with the list of valid names
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"bad model spec {text!r}: expected NAME[:key=value[:key=value]]")
        if key in overrides:
            raise ValueError(f"model spec {text!r} sets {key} twice")
        parsed = _parse_value(value)
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise ValueError(f"model spec {text!r}: {key}={value} is not a finite number")
        if isinstance(parsed, int) and not isinstance(parsed, bool) and abs(parsed) > MAX_VALUE:
            raise ValueError(f"model spec {text!r}: {key}={value} is larger than {MAX_VALUE}")
        overrides[key] = parsed
    grid_keys = {"n_items", "max_len", "d_model", "n_layers", "n_heads"}
    if grid_keys & set(overrides):
        raise ValueError(f"model spec {text!r} sets a grid dimension ({', '.join(sorted(grid_keys & set(overrides)))}); "
                         "use the command's own flags for it (--seq-len or --max-len, --d-model, --layers, --heads, --n-items)")
    models.make_config(name, **overrides)  # unknown keys / bad values fail here
    return ModelSpec(name, tuple(sorted(overrides.items())))


def _positive_integer(item: str) -> int | None:
    """`4096` or, for a catalogue size, `1e6` (a power-of-ten form that is an integer); else None."""
    if item.isascii() and item.isdigit():
        return int(item)
    mantissa, e, exponent = item.lower().partition("e")
    if e and mantissa.isascii() and mantissa.isdigit() and exponent.isascii() and exponent.isdigit() \
            and len(exponent) <= 2:
        return int(mantissa) * 10 ** int(exponent)
    return None


def parse_values(text: str) -> tuple[int, ...]:
    """`--values`: distinct positive integers separated by commas, in the order given (`1e6` is
    1000000). Raises ValueError for an empty list, an empty item, a non-integer, a value above
    2**31 - 1 or a repeated value (it would measure one point twice)."""
    if not text.strip():
        raise ValueError("--values is empty; give positive integers separated by commas or leave it out for the preset's")
    values = []
    for item in text.split(","):
        item = item.strip()
        value = _positive_integer(item)
        if value is None or value <= 0:
            raise ValueError(f"--values must be positive integers separated by commas, got {item!r}")
        if value > MAX_VALUE:
            raise ValueError(f"--values: {item} is larger than {MAX_VALUE}, the largest size any command takes")
        if value in values:
            raise ValueError(f"--values lists {value} twice; each point is measured once")
        values.append(value)
    return tuple(values)


def parse_losses(text: str) -> tuple[str, ...]:
    """`--loss`: a comma list of ce, sampled:K, bce:K (models/losses.py), each once, in their
    canonical spelling. Raises ValueError naming the bad one."""
    from models.losses import parse_loss

    losses = []
    for item in text.split(","):
        spec = parse_loss(item).spec
        if spec in losses:
            raise ValueError(f"--loss lists {spec} twice; each point is measured once")
        losses.append(spec)
    return tuple(losses)


def parse_model_specs(text: str) -> list[ModelSpec]:
    """`--models`: a comma list of specs. Raises ValueError for an empty list, an empty item
    (`a,,b`) or a spec given twice (after normalising: `sasrec:b=1:a=2` = `sasrec:a=2:b=1`), also
    as an option set to its default (`sasrec,sasrec:attention=sdpa`: one config, two labels)."""
    items = text.split(",")
    if not text.strip():
        raise ValueError("--models names no model")
    specs = []
    for item in items:
        if not item.strip():
            raise ValueError(f"--models {text!r} has an empty name between commas")
        spec = parse_model_spec(item)
        if spec in specs:
            raise ValueError(f"--models lists {spec.label} twice; each point is measured once")
        same = [other for other in specs if other.name == spec.name
                and models.make_config(other.name, **dict(other.overrides)) == models.make_config(spec.name, **dict(spec.overrides))]
        if same:
            raise ValueError(f"--models: {spec.label} is the same model config as {same[0].label} (an option set to its "
                             "default); each point is measured once")
        specs.append(spec)
    return specs


@dataclass(frozen=True)
class Point(Shape):
    """Everything the isolated runner needs to measure one row: the shape (bench.results.Shape) and how."""

    model: str
    overrides: tuple
    workload: str
    axis: str
    device: str = "cpu"
    threads: int = 0  # 0: torch's default
    warmup: int = 2
    repeats: int = 10
    seed: int = 0
    time_limit_s: int = 900
    mem_limit_gib: float | None = None
    flops: bool = True  # count FLOPs (fvcore, FlopCounterMode) in the child
    dtype: str = "fp32"  # bench.workload.DTYPES: fp32, or autocast to bf16 / fp16
    peak_tflops: float | None = None  # the device's peak at this dtype (bench.measure.peak), set by the sweep
    peak_source: str = ""
    predict: bool = False  # predict the cost under fake tensors (bench.measure.predict) instead of measuring
    compile: str = ""  # torch.compile backend of the step's forward and loss ("": eager)
    loss: str = "ce"  # the train step's objective (models/losses.py); "" for infer and stream
    executor: str = "local"  # bench.sweep.executors: under ray, a GPU point's CUDA_VISIBLE_DEVICES is Ray's choice, not recorded

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.overrides)

    def model_config(self) -> dict:
        return dict(super().model_config(), **dict(self.overrides))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Point:
        data = json.loads(text)
        data["overrides"] = tuple(tuple(pair) for pair in data["overrides"])
        return cls(**data)


@dataclass
class GridRequest:
    axis: str  # a key of AXES
    preset: Preset
    specs: list
    workloads: tuple = ("train",)
    values: tuple | None = None
    fixed: dict = field(default_factory=dict)  # column -> value overriding the preset
    device: str = "cpu"
    threads: int = 0
    warmup: int | None = None
    repeats: int | None = None
    time_limit_s: int | None = None
    mem_limit_gib: float | None = None
    flops: bool = True
    dtype: str = "fp32"
    predict: bool = False
    compile: str = ""
    losses: tuple = ("ce",)  # the train points' objectives (parse_losses); infer and stream score all N


def build_grid(request: GridRequest) -> list[Point]:
    """All points, value-major (every model at one value before the next value); a train point per
    loss. A stream point takes the preset's `stream_repeats` unless --repeats is given. Raises
    ValueError naming the spec and value of a point its model cannot run (a config the model
    refuses, a loss it does not take or whose K negatives do not fit the catalogue)."""
    from models.losses import check_loss_fits, parse_loss

    preset, column = request.preset, AXES[request.axis]
    values = request.values or preset.values[request.axis]
    base = dict(seq_len=preset.seq_len, batch_size=preset.batch_size, n_layers=preset.n_layers,
                n_heads=preset.n_heads, d_model=preset.d_model, n_items=preset.n_items)
    base.update(request.fixed)
    points = []
    for value in values:
        dims = dict(base, **{column: value})
        for spec in request.specs:
            for workload in request.workloads:
                for loss in request.losses if workload == "train" else ("",):
                    point = Point(spec.name, spec.overrides, workload, column, device=request.device,
                                  threads=request.threads,
                                  warmup=preset.warmup if request.warmup is None else request.warmup,
                                  repeats=(request.repeats if request.repeats is not None
                                           else preset.stream_repeats if workload == "stream" else preset.repeats),
                                  time_limit_s=request.time_limit_s or preset.time_limit_s,
                                  mem_limit_gib=request.mem_limit_gib, flops=request.flops, dtype=request.dtype,
                                  predict=request.predict, compile=request.compile, loss=loss, **dims)
                    try:
                        models.make_config(point.model, **point.model_config())
                        if loss:
                            objective = parse_loss(loss)
                            taken = models.model_class(spec.name).objectives
                            if objective.name not in taken:
                                raise ValueError(f"it trains with {', '.join(taken)} only, not --loss {loss}")
                            check_loss_fits(objective, point.n_items)
                    except ValueError as err:
                        raise ValueError(f"{spec.label} at {column}={value}: {err}") from None
                    points.append(point)
    return points
