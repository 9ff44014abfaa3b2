"""The regression gate: re-measure a tiny CPU grid and fail when a model got hungrier or slower.

Examples:
  python -m bench.regress                          # check the working tree against the committed baselines
  python -m bench.regress --update                 # re-measure every model, rewrite the baselines, say what changed
  python -m bench.regress --update --models sigma  # add or refresh one model's baseline, keep the others
  python -m bench.regress --models linrec,sasrec   # check only these models
  python -m bench.regress --update --models official/recgrela --baseline /tmp/twins.json   # an official twin
  python -m bench.regress --baseline /tmp/b.json --update   # baselines elsewhere (tests do this)

The grid: every registered model (`models.available()` at run time) with its default config, both
workloads (train: forward + CE + backward + Adam step; infer: forward + full scores), at one tiny
shape (GRID below: B=4, L=32, d=16, 2 layers, 2 heads, 256 items, 1 thread). Each point is measured
in this process by the sweep's own child routine (`bench.sweep.point.run`): parameters, FLOPs from every
counter (fvcore, FlopCounterMode forward and whole step, analytic, scan) and the exact tracked
peak memory of one step (MemTracker). Time is a ratio to a control workload (a fixed matmul + MLP
train step, `control_step`) timed in the same process: 30 rounds, each one control step and one
model step back to back in alternating order, and the median of the 30 per-round ratios, so load
from other processes hits both sides alike. The whole gate takes about a minute on 2 CPU cores.

Rules (growth = now / baseline; a decrease never fails and is listed so `--update` can lock it in):
  tracked_peak_bytes                fail on any growth. MemTracker sums tensor storages (numel x
                                    element size), so the count is exact: identical across processes,
                                    thread counts and run order on the same torch version; a growth of
                                    even one tensor is a real change in what a step keeps alive.
  FLOPs (fvcore, FlopCounterMode,   fail on any growth: integer counts from shapes.
  analytic, scan), params
  time ratio (model / control)      fail when it grows more than --time-fail (default 3x), warn (exit 0)
                                    above --time-warn (default 2x). Wall time of millisecond steps on a
                                    shared 2-core runner moves 10-50 % between runs even after the control
                                    ratio, so only a gross slowdown (a new Python loop, a materialised
                                    L x L) is a failure; use the pytest-benchmark micro-benchmarks
                                    (tests/test_benchmarks.py) for finer timing work.
A measurement that fails (status error / oom) is a failure of that model.

Exit codes: 0 pass (warnings may be printed), 1 regression (a table of what moved, by how much),
2 error: a missing or corrupt baseline file, a registered model with no baseline (run --update),
a baseline made for another grid, or bad input (one line on stderr). Every exit-2 check runs
before anything is measured; `validate_baseline` holds the baseline file's schema.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import cli
from bench.cli import UsageError
from bench.results import Shape

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = REPO_ROOT / "reports" / "baselines" / "cpu-tiny.json"
FORMAT = "seqrec-bench regression baselines v1"
SHAPE = Shape(seq_len=32, batch_size=4, n_layers=2, n_heads=2, d_model=16, n_items=256)
GRID = {**dataclasses.asdict(SHAPE), "threads": 1, "warmup": 3, "rounds": 30, "seed": 0, "device": "cpu",
        "workloads": ["train", "infer"]}
CONTROL = {"rows": 128, "d_in": 64, "d_hidden": 256, "description":
           "x [128, 64] @ W [64, 64] -> Linear(64, 256) -> GELU -> Linear(256, 64) -> mean square; "
           "backward; Adam step (seed 0)"}
EXACT = ("tracked_peak_bytes", "fwd_flops_fvcore", "fwd_flops_flopcounter", "step_flops_flopcounter",
         "fwd_flops_analytic", "step_flops_analytic", "scan_flops_analytic", "params_total", "params_trainable")
TIME_FAIL, TIME_WARN = 3.0, 2.0


def ratio_arg(text: str) -> float:
    """`--time-fail` / `--time-warn`: a finite growth factor >= 1. Refused: nan, inf (and numbers
    that overflow to it), zero, negatives and factors below 1 (a factor below 1 would fail a model
    that did not get slower); `--no-time` is the way to stop judging time."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1.0):
        raise argparse.ArgumentTypeError(f"expected a finite factor >= 1, got {text!r} "
                                         "(--no-time stops judging time ratios)")
    return value


def parser() -> argparse.ArgumentParser:
    p = cli.parser("bench.regress", __doc__)
    p.add_argument("--update", action="store_true", help="re-measure and rewrite the baselines")
    p.add_argument("--models", help="comma list of registered names (default: every registered model)")
    p.add_argument("--baseline", default=str(DEFAULT_BASELINE), help="baseline file (default: %(default)s)")
    p.add_argument("--time-fail", type=ratio_arg, default=TIME_FAIL,
                   help="fail when a time ratio grows by more than this factor (default %(default)s)")
    p.add_argument("--time-warn", type=ratio_arg, default=TIME_WARN,
                   help="warn when a time ratio grows by more than this factor (default %(default)s)")
    p.add_argument("--no-time", action="store_true",
                   help="report time ratios but never warn or fail on them (counts only)")
    return p


# ------------------------------------------------------------------------------------ measuring


def control_step():
    """The fixed control workload: (step, inputs built) - a small matmul + MLP train step."""
    import torch
    import torch.nn as nn

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(CONTROL["rows"], CONTROL["d_in"], generator=gen)
    mix = torch.randn(CONTROL["d_in"], CONTROL["d_in"], generator=gen)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(CONTROL["d_in"], CONTROL["d_hidden"]), nn.GELU(),
                        nn.Linear(CONTROL["d_hidden"], CONTROL["d_in"]))
    optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = mlp(x @ mix).pow(2).mean()
        loss.backward()
        optimizer.step()

    return step


def paired_time_ratio(step, control, warmup: int, rounds: int) -> tuple[float, float, float]:
    """(median of per-round ratios step / control, median step ms, median control ms).

    Each round times one control step and one model step back to back, in alternating order
    (C M, M C, ...), so load that comes and goes hits both sides of a round alike (bench.ab's method).
    """
    from bench.measure.timing import time_call_ms

    for _ in range(warmup):
        control()
        step()
    model_ms, control_ms = [], []
    for r in range(rounds):
        for side in (("c", "m") if r % 2 == 0 else ("m", "c")):
            (control_ms if side == "c" else model_ms).append(time_call_ms(control if side == "c" else step))
    ratio = statistics.median(m / c for m, c in zip(model_ms, control_ms))
    return ratio, statistics.median(model_ms), statistics.median(control_ms)


def measure_point(name: str, workload: str, control) -> dict:
    """One model x workload at GRID: counts and tracked memory by `bench.sweep.point.run` (its own
    timing, one step, is not used), then the paired time ratio against the control."""
    from bench.grid import Point
    from bench.sweep.point import run
    from bench.workload import build_workload

    point = Point(name, (), workload, "seq_len", **dataclasses.asdict(SHAPE), device=GRID["device"],
                  threads=GRID["threads"], warmup=1, repeats=1, seed=GRID["seed"])
    row = run(point)
    entry = {"status": row["status"], "reason": row.get("reason", "")}
    for column in EXACT:
        value = row.get(column)
        entry[column] = None if value in (None, "") else int(value)
    if row["status"] == "ok":
        w = build_workload(name, point.model_config(), workload, point.batch_size, point.seed, point.device)
        ratio, model_ms, control_ms = paired_time_ratio(w.step, control, GRID["warmup"], GRID["rounds"])
        entry.update(time_ratio=round(ratio, 4), time_median_ms=round(model_ms, 4),
                     control_median_ms=round(control_ms, 4))
    return entry


def measure_grid(names: list[str], log=print) -> dict:
    """{model: {workload: entry}} for every name and workload, measured with 1 thread (restored after)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(GRID["threads"])
    try:
        control = control_step()
        measured, total, start = {}, len(names) * len(GRID["workloads"]), time.monotonic()
        for name in names:
            for workload in GRID["workloads"]:
                t0 = time.monotonic()
                entry = measure_point(name, workload, control)
                measured.setdefault(name, {})[workload] = entry
                done = sum(len(v) for v in measured.values())
                state = "ok" if entry["status"] == "ok" else f"{entry['status']}: {entry['reason']}"
                log(f"[{done}/{total}] {name} {workload}: {state} ({time.monotonic() - t0:.1f} s, "
                    f"elapsed {time.monotonic() - start:.0f} s)")
    finally:
        torch.set_num_threads(threads)
    return measured


# ------------------------------------------------------------------------------------ baselines


def environment() -> dict:
    import platform

    import torch

    from bench.results import cpu_name, git_commit, utc_now

    return {"torch_version": torch.__version__, "python_version": platform.python_version(),
            "device_name": cpu_name(), "git_commit": git_commit(), "timestamp_utc": utc_now()}


# The schema of a baseline file (read by `validate_baseline` only). Every field of an entry is
# required; null is allowed only where NULLABLE says why the gate itself writes one.
TOP_LEVEL_FIELDS = ("format", "grid", "control", "environment", "models")
ENTRY_FIELDS = {
    "status": "the text 'ok'", "reason": "text",
    **dict.fromkeys(EXACT, "an integer >= 0"),  # byte, FLOP and parameter counts
    "time_ratio": "a finite number > 0",
    "time_median_ms": "a finite number >= 0", "control_median_ms": "a finite number >= 0",
}
ANALYTIC = ("fwd_flops_analytic", "step_flops_analytic", "scan_flops_analytic")
NULLABLE = {
    "fwd_flops_fvcore": "fvcore cannot trace some code (the official RecBLR); the point is measured without it",
    **dict.fromkeys(ANALYTIC, "a model without an analytic formula (official/NAME, recbole/NAME, a plugin without cost "
                              "methods: models.no_analytic_reason); all three are null together"),
}
MAX_BASELINE_BYTES = 16 * 2**20  # the committed file of every model is about 10 KiB


class CorruptBaseline(ValueError):
    """What is wrong with a baseline's content, naming the model, workload and field."""


class _JsonObject(dict):
    """A JSON object that remembers the keys its text gave more than once (json keeps the last)."""

    duplicates: tuple = ()


def _json_object(pairs: list) -> _JsonObject:
    obj = _JsonObject(pairs)
    keys = [key for key, _ in pairs]
    obj.duplicates = tuple(sorted({key for key in keys if keys.count(key) > 1}))
    return obj


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def _shown(value) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise CorruptBaseline(f"{where} is a JSON {_json_kind(value)}, not an object")
    for key in getattr(value, "duplicates", ()):
        raise CorruptBaseline(f"{key!r} appears twice in {where}")
    return value


def _field_problem(name: str, field: str, value) -> str | None:
    """Why `value` cannot be `field` of model `name`'s entry (None: it can)."""
    if value is None:
        if field in NULLABLE and (field not in ANALYTIC or _no_analytic_formula(name)):
            return None  # the analytic three are checked together by validate_baseline
        why = f"{name} has an analytic formula" if field in ANALYTIC else "the gate always measures it"
        return f"is null, but {why}"
    if field == "status":
        return None if value == "ok" else f"is {_shown(value)}, not 'ok' (a baseline holds successful points only)"
    if field == "reason":
        return None if isinstance(value, str) else f"is {_shown(value)}, not text"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if field in EXACT:
        if not (isinstance(value, int) and not isinstance(value, bool)):
            return f"is {_shown(value)}, not an integer"
        return None if value >= 0 else f"is {value}, not an integer >= 0"
    if not (number and math.isfinite(value)):
        return f"is {_shown(value)}, not a finite number"
    if field == "time_ratio":
        return None if value > 0 else f"is {value}, not a number > 0"
    return None if value >= 0 else f"is {value}, not a number >= 0"


def validate_baseline(data) -> None:
    """Raise CorruptBaseline (its text names the model, workload and field) unless `data` (parsed
    with duplicate keys remembered, as `load_baseline` does) is a baseline this gate could have
    written:
    - the top level is an object with exactly TOP_LEVEL_FIELDS and `format` == FORMAT; `grid`,
      `control`, `environment` (text values) and `models` are objects (whether grid and control are
      this code's is `same_grid`'s question, not a corruption);
    - each model's entry is an object with exactly one object per workload of GRID, each holding
      exactly ENTRY_FIELDS: status 'ok'; every gated count (EXACT) an integer >= 0 (a bool, a float,
      a string or a negative count is corrupt, not a regression); time_ratio finite and > 0; null
      only where NULLABLE says the gate writes it: fwd_flops_fvcore for any model, the three analytic
      counts together for a model without an analytic formula (models.no_analytic_reason: a twin, a
      RecBole model, a plugin without cost methods), never for one of ours;
    - no object gives a key twice (json would keep the last silently).
    An unknown field is corrupt, not ignored: this module is the format's only writer and v1 names
    every field, so an unknown one is a typo or a hand edit (`tracked_peak_byte`) beside a field the
    gate would then not check as intended, or a newer gate's quantity this one cannot judge.
    """
    top = _object(data, "the top level")
    if top.get("format") != FORMAT:
        raise CorruptBaseline(f"not a baseline file (expected format {FORMAT!r})")
    for key in top:
        if key not in TOP_LEVEL_FIELDS:
            raise CorruptBaseline(f"unknown top-level field {key!r} (a baseline has {', '.join(TOP_LEVEL_FIELDS)})")
    for key in TOP_LEVEL_FIELDS:
        if key not in top:
            raise CorruptBaseline(f"the top-level field {key!r} is missing")
        if key != "format":
            _object(top[key], f"{key!r}")
    for key, value in top["environment"].items():
        if not isinstance(value, str):
            raise CorruptBaseline(f"environment {key!r} is {_shown(value)}, not text")
    for name, workloads in top["models"].items():
        _object(workloads, f"model {name!r}")
        for workload in workloads:
            if workload not in GRID["workloads"]:
                raise CorruptBaseline(f"model {name!r}: unknown workload {workload!r} (expected {', '.join(GRID['workloads'])})")
        for workload in GRID["workloads"]:
            if workload not in workloads:
                raise CorruptBaseline(f"model {name!r} has no {workload} entry")
            where = f"{name} {workload}"
            entry = _object(workloads[workload], where)
            for field in entry:
                if field not in ENTRY_FIELDS:
                    raise CorruptBaseline(f"{where}: unknown field {field!r}")
            for field, expected in ENTRY_FIELDS.items():
                if field not in entry:
                    raise CorruptBaseline(f"{where}: {field} is missing (expected {expected})")
                problem = _field_problem(name, field, entry[field])
                if problem:
                    raise CorruptBaseline(f"{where}: {field} {problem}")
            nulls = [entry[field] is None for field in ANALYTIC]
            if any(nulls) and not all(nulls):
                raise CorruptBaseline(f"{where}: the analytic counts {', '.join(ANALYTIC)} are null together "
                                      f"(no formula) or integers together, got "
                                      + ", ".join(f"{f}={_shown(entry[f])}" for f in ANALYTIC))


def parse_baseline(raw: bytes) -> dict:
    """The baseline's JSON, validated; raises CorruptBaseline saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorruptBaseline(f"not UTF-8 text (a binary file?): byte {err.start} is {raw[err.start:err.start + 1]!r}") from None
    if not text.strip():
        raise CorruptBaseline("the file is empty")
    try:
        data = json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError as err:
        raise CorruptBaseline(f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise CorruptBaseline("not a baseline: its JSON is nested too deeply to read") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise CorruptBaseline(f"not a readable baseline ({' '.join(str(err).split(';')[0].split())})") from None
    validate_baseline(data)
    return data


def update_command(path: Path, names=()) -> str:
    """The `--update` command a hint suggests: for this baseline file (named unless it is the
    default) and, when given, only these models (never a rewrite of every model's baseline in
    another file than the one the user named)."""
    command = "python -m bench.regress --update"
    if names:
        command += f" --models {','.join(names)}"
    if Path(path).resolve() != DEFAULT_BASELINE.resolve():
        command += f" --baseline {path}"
    return f"`{command}`"


def load_baseline(path: Path) -> dict:
    """The baseline file, validated (`parse_baseline`); raises UsageError saying what is wrong with
    it: no such file, not a regular file, unreadable, too large, not UTF-8, empty, invalid JSON or
    content `validate_baseline` refuses."""
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise UsageError(f"no baseline file {path} ({what}); create it with {update_command(path)}")
    try:
        size = path.stat().st_size
        if size > MAX_BASELINE_BYTES:
            raise CorruptBaseline(f"{size:,} bytes; a baseline is a few KiB")
        return parse_baseline(path.read_bytes())
    except OSError as err:
        raise UsageError(f"cannot read baseline {path}: {err.strerror or err}") from None
    except CorruptBaseline as err:
        raise UsageError(f"corrupt baseline {path}: {err}; rewrite it with {update_command(path)}") from None


def same_grid(data: dict, path: Path) -> str | None:
    """Why the baselines in `data` cannot be compared with this code's measurements (made for
    another grid or another control workload), or None."""
    if data["grid"] != GRID:
        return f"baseline {path} was made for another grid ({data['grid']}); this code measures {GRID}"
    if data["control"] != CONTROL:
        return (f"baseline {path} was made against another control workload ({data['control']}); this code "
                f"times {CONTROL}")
    return None


def write_baseline(path: Path, models_measured: dict) -> None:
    data = {"format": FORMAT, "grid": GRID, "control": CONTROL, "environment": environment(),
            "models": {name: models_measured[name] for name in sorted(models_measured)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    from bench.results import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


# ------------------------------------------------------------------------------------ comparing


@dataclass
class Change:
    model: str
    workload: str
    quantity: str
    baseline: object
    now: object
    verdict: str  # FAIL, WARN, better, changed

    @property
    def change(self) -> str:
        if isinstance(self.baseline, (int, float)) and isinstance(self.now, (int, float)) and self.baseline:
            factor = self.now / self.baseline
            return f"{(factor - 1) * 100:+.1f}%" if factor < 2 else f"x{factor:.2f}"
        return ""


def compare(baseline: dict, measured: dict, time_fail: float = TIME_FAIL, time_warn: float = TIME_WARN,
            check_time: bool = True) -> list[Change]:
    """Every quantity that moved, with its verdict under the rules in the module docstring."""
    changes = []
    for name, workloads in measured.items():
        for workload, now in workloads.items():
            base = baseline.get(name, {}).get(workload)
            if base is None:
                continue
            if now["status"] != "ok":
                changes.append(Change(name, workload, "status", "ok", f"{now['status']}: {now['reason']}", "FAIL"))
                continue
            for column in EXACT:
                old, new = base.get(column), now.get(column)
                if old == new:
                    continue
                if new is None:
                    verdict = "FAIL"  # a counter that counted before and now gives nothing: a lost measurement
                elif old is None:
                    verdict = "changed"  # a new measurement: --update records it
                else:
                    verdict = "FAIL" if new > old else "better"
                changes.append(Change(name, workload, column, old, new, verdict))
            old, new = base["time_ratio"], now["time_ratio"]
            growth = new / old
            if check_time and growth > time_fail:
                verdict = "FAIL"
            elif check_time and growth > time_warn:
                verdict = "WARN"
            else:
                continue  # within the noise band: not worth a line
            changes.append(Change(name, workload, "time_ratio", old, new, verdict))
    return changes


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(changes: list[Change], time_fail: float, time_warn: float) -> str:
    rules = {"time_ratio": f"fail > x{time_fail:g}, warn > x{time_warn:g}", "status": "must be ok"}
    rows = [("model", "workload", "quantity", "baseline", "now", "change", "verdict", "rule")]
    for c in changes:
        rows.append((c.model, c.workload, c.quantity, _fmt(c.baseline), _fmt(c.now), c.change, c.verdict,
                     rules.get(c.quantity, "no growth")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


# ------------------------------------------------------------------------------------ CLI


def _known(name: str) -> bool:
    """A model name that resolves: built-in, namespaced (`official/NAME`, `recbole/NAME`), an
    installed plugin's entry point or a dotted path."""
    try:
        _resolve(name)
        return True
    except ValueError:
        return False


def _no_analytic_formula(name: str) -> bool:
    """True when model `name` has no analytic FLOP formula (a twin, a RecBole model, a plugin
    without cost methods), or cannot be resolved in this environment (a plugin not installed here:
    its entry is kept, not judged, and gated only where it resolves)."""
    import models

    try:
        _resolve(name)
        return models.no_analytic_reason(models.model_class(name)) is not None
    except ValueError:  # a plugin not importable here (or RecBole absent): its entry is not judged
        return True


def _resolve(name: str) -> None:
    import models
    from bench import adapters

    adapters.register()
    models.model_class(name)  # ValueError says why (unknown name, official code not found)


def selected_models(text: str | None) -> list[str]:
    """`--models`: our registered models by default (None); otherwise a comma list of names, which
    may add namespaced ones (official twins). Refused (UsageError): an empty list, an empty name
    between commas, a spec with options (`linrec:n_heads=1`: the gate measures each model's default
    config on its fixed grid, and a baseline is keyed by name), a name given twice (it would be
    measured twice) and a name that does not resolve (unknown, or official code not found)."""
    import models

    if text is None:
        return models.available()
    if not text.strip():
        raise UsageError(f"--models names no model; registered: {', '.join(models.available())} (and official/NAME, recbole/NAME, plugins)")
    names = []
    for item in text.split(","):
        name = item.strip()
        if not name:
            raise UsageError(f"--models {text!r} has an empty name between commas")
        if ":" in name:
            raise UsageError(f"--models takes model names, not specs with options ({name!r}): the gate measures "
                             "each model's default config on its fixed grid")
        if name in names:
            raise UsageError(f"--models lists {name} twice; each model is measured once")
        try:
            _resolve(name)
        except ValueError as err:
            raise UsageError(str(err)) from None
        names.append(name)
    return names


def baseline_path(text: str, for_update: bool) -> Path:
    """`--baseline`, checked before anything is measured. For `--update` it is a file path that can
    be written (`cli.output_file`: not a folder, no parent that is a file, not under /proc or
    another place nothing can be written, no over-long name); for a check it must be an existing
    file. Either way an existing path must be a regular file: a device such as /dev/null would be
    read forever or replaced by the new baselines."""
    if for_update:
        path = cli.output_file(text, "--baseline")
    else:
        path = Path(text)
        if not text or "\0" in text:
            raise UsageError(f"--baseline {text!r} is not a usable path")
    try:
        exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
    except OSError as err:  # a name longer than the file system takes
        raise UsageError(f"--baseline {path}: {err.strerror or err}") from None
    if is_dir:
        raise UsageError(f"--baseline {path} is a folder, not a file")
    if exists and not is_file:
        raise UsageError(f"--baseline {path} is not a regular file")
    if not exists and not for_update:
        parent = path.absolute().parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"--baseline {path}: {parent} is a file, not a folder")
        raise UsageError(f"no baseline file {path}; create it with {update_command(path)}")
    return path


def previous_baselines(path: Path, keep_others: bool) -> dict:
    """The models of the baseline file `--update` will replace ({} where there is none), read
    before anything is measured. Refused (UsageError): a non-empty file that does not name the
    baseline format (not a baseline: overwriting it would lose it) and, when the update keeps the
    other models (`--models`), a corrupt file or one made for another grid or control workload (the
    merged file would mix grids). Without `--models` a corrupt or other-grid baseline is replaced,
    with a note: that is how one is repaired."""
    if not path.exists():
        return {}
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BASELINE_BYTES + 1)
    except OSError as err:
        raise UsageError(f"cannot read the baseline {path} that --update would replace: {err.strerror or err}") from None
    if raw.strip() and FORMAT.encode() not in raw:
        raise UsageError(f"--baseline {path} is not a regression baseline (it never names the format {FORMAT!r}); "
                         "refusing to overwrite it: give another path or delete it")
    try:
        data = load_baseline(path)
    except UsageError as err:
        if keep_others:
            raise UsageError(f"{err}; --update --models would keep the other models from it: run "
                             "--update without --models") from None
        print(f"note: replacing an unreadable baseline ({err})")
        return {}
    other = same_grid(data, path)
    if other and keep_others:
        raise UsageError(f"{other}; --update --models would merge points of two grids into one file: run "
                         "--update without --models")
    if other:
        print(f"note: replacing baselines that no measurement of this code can be compared with ({other})")
        return {}
    return data["models"]


def check(args, names: list[str], path: Path) -> int:
    data = load_baseline(path)
    other = same_grid(data, path)
    if other:
        raise UsageError(f"{other}; run {update_command(path)}")
    absent = [n for n in names if n not in data["models"]]
    if absent:
        raise UsageError(f"no baseline for registered model(s) {', '.join(absent)} in {path}; run "
                         f"{update_command(path, absent)}")
    env = data["environment"]
    import torch

    if env.get("torch_version") and env["torch_version"] != torch.__version__:
        print(f"note: baselines were made with torch {env['torch_version']}, this is {torch.__version__}; "
              "memory and FLOP counts can move with torch itself", flush=True)
    stale = sorted(n for n in data["models"] if not _known(n))
    if stale:
        print(f"note: baselines hold models no longer registered: {', '.join(stale)} (--update drops them)")
    measured = measure_grid(names, log=lambda line: print(line, flush=True))
    changes = compare(data["models"], measured, args.time_fail, args.time_warn, not args.no_time)
    failed = sorted({c.model for c in changes if c.verdict == "FAIL"})
    if changes:
        print(table(changes, args.time_fail, args.time_warn))
    points = len(names) * len(GRID["workloads"])
    if failed:
        print(f"bench.regress: FAILED: {', '.join(failed)} regressed against {path} (see the table; if the "
              f"change is intended, run {update_command(path, failed)} and commit the new baselines)")
        return 1
    warned = sorted({c.model for c in changes if c.verdict == "WARN"})
    print(f"bench.regress: OK: {points} points ({len(names)} models x {len(GRID['workloads'])} workloads) "
          f"within the baselines of {path}" + (f"; slower, within the failure band: {', '.join(warned)}" if warned else ""))
    return 0


def update(args, names: list[str], path: Path) -> int:
    old = previous_baselines(path, keep_others=args.models is not None)
    measured = measure_grid(names, log=lambda line: print(line, flush=True))
    broken = {f"{n} {w}: {e['status']}: {e['reason']}" for n, ws in measured.items() for w, e in ws.items()
              if e["status"] != "ok"}
    if broken:
        print("bench.regress: not updated, some points failed to measure:\n  " + "\n  ".join(sorted(broken)),
              file=sys.stderr)
        return 1
    merged = dict(old) if args.models is not None else {}
    merged.update(measured)
    changes = compare(old, measured, args.time_fail, args.time_warn, check_time=True)
    added = sorted(set(measured) - set(old))
    dropped = sorted(set(old) - set(merged))
    write_baseline(path, merged)
    if changes:
        print("changes against the previous baselines (time ratios only beyond the warning band):")
        print(table(changes, args.time_fail, args.time_warn))
    if added:
        print(f"new baselines: {', '.join(added)}")
    if dropped:
        print(f"dropped (no longer registered): {', '.join(dropped)}")
    if not (changes or added or dropped):
        print("no change beyond the time-ratio noise band")
    print(f"wrote {path} ({len(merged)} models)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(argv)
        if args.time_warn > args.time_fail:
            raise UsageError("--time-warn must not exceed --time-fail")
        names = selected_models(args.models)
        path = baseline_path(args.baseline, for_update=args.update)
        return update(args, names, path) if args.update else check(args, names, path)
    except UsageError as err:
        return cli.report_usage_error("bench.regress", err)


if __name__ == "__main__":
    cli.run(main)
