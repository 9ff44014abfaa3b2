"""Sweep one axis (sequence length, heads, layers, batch, width) over models; write CSV + PNGs.

Examples:
  python -m bench.sweep --axis seqlen                       # quick CPU preset, all ten models, train
  python -m bench.sweep --axis seqlen --preset long --models recgrela,linrec,sasrec,sasrec:attention=math
  python -m bench.sweep --axis heads --preset paper --device cuda --workload both
  python -m bench.sweep --axis seqlen --values 64,128,256 --batch-size 16 --layers 2
  python -m bench.sweep --axis layers --models recgrela,recgrela:local_shortcut=false:position=ape
  python -m bench.sweep --axis seqlen --values 200,1000 --batch-size 64 --layers 4 --heads 4 --models recgrela,official/recgrela
  python -m bench.sweep --axis layers --preset paper --predict --device cuda   # predicted, no GPU needed
  python -m bench.sweep --axis seqlen --models sasrec,recgrela --compile --dtype bf16
  python -m bench.sweep --axis seqlen --preset long --workload stream --batch-size 1   # one new event per user
  python -m bench.sweep --axis items --models recgrela,sasrec --loss ce,sampled:128   # catalogue 1e3..1e6
  python -m bench.sweep --axis seqlen --dry-run             # print the grid and stop
  python -m bench.sweep --axis seqlen --out reports/my-run --resume   # continue a killed run
  python -m bench.sweep --axis seqlen --executor ray --threads 1   # points as Ray tasks, all cores at once
  python -m bench.sweep --axis seqlen --preset paper --device cuda --executor ray --ray-address auto --threads 4   # a Ray cluster

Method: every point (model spec x workload x value) runs in its own process with a time limit.
Inside it: FLOP counters (fvcore forward, FlopCounterMode forward and whole step, analytic), then
`--warmup` untimed and `--repeats` timed steps (median, IQR), then the exact tracked peak memory
of one step (and, on CUDA, the allocator and NVML peaks). Rows are appended atomically to
OUT/results.csv as each point ends; a killed sweep keeps every finished row and `--resume` skips
them. Out-of-memory, timeouts and errors become rows with that status and the sweep goes on.
`--executor ray` runs each point as a Ray task (the same isolated process) on a local Ray instance or
a cluster (`--ray-address auto`), `--threads` CPUs and on CUDA one GPU each; this process still
writes every row (bench/sweep/executors.py).
`official/NAME` measures the official code of NAME (its twin, bench.adapters.official) the same way.
The figures (time_*.png, memory_*.png) are redrawn from the CSV at the end.

Workloads: `train` (forward, loss, backward, Adam), `infer` (forward and full-catalogue scores) and
`stream` (one user's new event and the full-catalogue scores, with the key/value cache or recurrent
state the model may keep; models that cannot keep one recompute the window: `stream_mode`,
`state_bytes_per_user` in every row; bench/workload.py). `--loss` sets the train objective: `ce`
(softmax over the whole catalogue, the paper's), `sampled:K` (sampled softmax over K uniform
negatives, log-Q corrected) or `bce:K` (binary CE against K negatives, the original SASRec's);
a comma list measures each. `--axis items` sweeps the catalogue size (values such as 1e3,1e6).

`--predict` runs nothing: each point's step is run under fake tensors (bench.measure.predict), which
gives its exact tracked peak memory (by category) and FlopCounterMode's FLOPs in seconds at any
size, without allocating; rows have status `predicted` and no time. `--device cuda` with `--predict`
needs no GPU: dropout and attention run as CUDA runs them and storages are rounded as its allocator
rounds them (the `prediction` column says so).
`--compile [BACKEND]` runs the step's forward and loss through torch.compile (default inductor); the
first call (compilation plus one step) is timed apart in `compile_time_s`, graph breaks are counted.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import os
import shlex
import sys
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

from bench import cli, results
from bench.cli import UsageError, clock, non_negative_int, positive_float, positive_int
from bench.grid import AXES, DEFAULT_MODELS, PRESETS, WORKLOADS, GridRequest, build_grid, parse_losses, parse_model_specs, parse_values
from bench.sweep.executors import EXECUTORS, RAY_INSTALL, check_ray_usable

REPO_ROOT = Path(__file__).resolve().parents[2]


def parser() -> argparse.ArgumentParser:
    p = cli.parser("bench.sweep", __doc__)
    p.add_argument("--axis", required=True, choices=sorted(AXES), help="the dimension to sweep")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="grid and fixed dimensions; default: paper on CUDA, quick otherwise. "
                   + "; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    p.add_argument("--values", help="comma-separated values of the axis, overriding the preset's")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma list of NAME[:key=value[:key=value]]: a built-in name, official/NAME, "
                        "recbole/ClassName, an installed plugin's name or a dotted path to your class "
                        "(default: %(default)s)")
    p.add_argument("--workload", type=workloads, default=("train",), metavar="train|infer|stream|both",
                   help="a comma list of train (forward + loss + backward + Adam step), infer (forward + "
                   "scores), stream (one new event + scores, with the cache or state the model keeps); "
                   "both = train,infer (default: train)")
    p.add_argument("--loss", type=losses, default=("ce",), metavar="ce|sampled:K|bce:K",
                   help="the train step's objective, a comma list to measure several: ce (full softmax, default), "
                   "sampled:K (sampled softmax, K uniform negatives, log-Q correction), bce:K (binary CE, K negatives)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--seq-len", type=positive_int)
    p.add_argument("--layers", type=positive_int)
    p.add_argument("--heads", type=positive_int)
    p.add_argument("--d-model", type=positive_int)
    p.add_argument("--n-items", type=positive_int, help="catalogue size incl. padding (default 3417, ML-1M)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="CPU threads per point (0: torch's default; --executor ray needs N >= 1, the CPUs each "
                   "point reserves on its node); recorded in every row")
    p.add_argument("--warmup", type=non_negative_int)
    p.add_argument("--repeats", type=positive_int)
    p.add_argument("--time-limit", type=positive_int, help="seconds per point before it is a timeout")
    p.add_argument("--mem-limit-gib", type=positive_float,
                   help="address-space limit per point on the CPU (default: 90%% of RAM)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP counters (faster)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="fp32 (default), or the step's forward and loss under torch.autocast to bf16 / fp16 "
                   "(weights and Adam state float32; fp16 training with a GradScaler); recorded in every row")
    p.add_argument("--predict", action="store_true",
                   help="predict each point under fake tensors instead of measuring it: exact tracked peak memory "
                   "and FLOPs, no time, nothing allocated; with --device cuda no GPU is needed")
    p.add_argument("--compile", nargs="?", const="inductor", default="", choices=COMPILE_BACKENDS, metavar="BACKEND",
                   help="torch.compile the step's forward and loss with BACKEND (%(const)s when none is given; "
                   f"one of {', '.join(COMPILE_BACKENDS)}); compile time is recorded apart from step time")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: one point after another on this machine (default); ray: each point a Ray task "
                   f"on a local Ray instance or a cluster (--ray-address; needs {RAY_INSTALL})")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="with --executor ray: the cluster to join, `auto` (the one this machine belongs to, "
                   "started by `ray start`) or HOST:PORT; default: start a local Ray instance for this sweep")
    p.add_argument("--out", help="output folder (default: reports/<axis>-<preset>)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and stop")
    p.add_argument("--resume", action="store_true", help="skip points already in OUT/results.csv")
    return p


COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")  # torch.compile backends (bench.workload.make_workload)


def workloads(text: str) -> tuple[str, ...]:
    """`--workload`: a comma list of train, infer, stream (`both` = train,infer), each once."""
    chosen = []
    for item in text.split(","):
        item = item.strip()
        names = ("train", "infer") if item == "both" else (item,)
        for name in names:
            if name not in WORKLOADS:
                raise argparse.ArgumentTypeError(f"{item!r} is not a workload; use a comma list of "
                                                 f"{', '.join(WORKLOADS)} (or both = train,infer)")
            if name in chosen:
                raise argparse.ArgumentTypeError(f"{text!r} lists {name} twice; each point is measured once")
            chosen.append(name)
    return tuple(chosen)


def losses(text: str) -> tuple[str, ...]:
    """`--loss`: bench.grid.parse_losses as an argparse type."""
    try:
        return parse_losses(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--loss ")) from None


def resolve_device(choice: str, predict: bool = False, remote: bool = False) -> str:
    """`--device`: auto picks CUDA when torch sees it here; cuda without a CUDA device is refused,
    except when predicting (nothing runs on the target) or when the points run elsewhere (`remote`:
    --executor ray, whose cluster is checked for GPUs once joined)."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available() and not predict and not remote:
        raise UsageError("--device cuda was asked for but torch sees no CUDA device")
    return choice


SWEEP_LOCK_NAME = ".sweep.lock"  # held by the one sweep writing a folder; kept after use
MIN_MEM_LIMIT_GIB = 1.0  # below this a child cannot even import torch (its libraries map ~0.6 GiB)
# How each setting column is set on the command line, for the --resume refusal.
SETTING_FLAGS = {"threads": "--threads", "time_warmup": "--warmup", "time_repeats": "--repeats",
                 "seed": "the seed", "mem_limit_gib": "--mem-limit-gib", "time_limit_s": "--time-limit",
                 "flops_counted": "FLOP counting (--no-flops)", "dtype": "--dtype", "torch_version": "torch",
                 "device_name": "the device", "perf_env_json": "the performance environment variables",
                 "prediction": "--predict (and its target --device)", "compile_backend": "--compile"}


def plan(args: argparse.Namespace):
    """Validate everything and build the grid; raises UsageError before anything is written."""
    check_executor(args)
    device = resolve_device(args.device, args.predict, remote=args.executor == "ray")
    if "train" not in args.workload and args.loss != ("ce",):
        raise UsageError(f"--loss {','.join(args.loss)} sets the train objective, but --workload "
                         f"{','.join(args.workload)} measures no train step (infer and stream score the whole catalogue)")
    if args.predict:
        given = [flag for flag, value in (("--compile", args.compile), ("--warmup", args.warmup is not None),
                                          ("--repeats", args.repeats is not None)) if value]
        if given:
            raise UsageError(f"--predict runs no step for real; {' and '.join(given)} cannot apply to it")
    preset = PRESETS[args.preset or ("paper" if device == "cuda" else "quick")]
    try:
        specs = parse_model_specs(args.models)
        values = parse_values(args.values) if args.values is not None else None
    except ValueError as err:
        raise UsageError(str(err)) from None
    fixed = {column: value for column, value in (
        ("batch_size", args.batch_size), ("seq_len", args.seq_len), ("n_layers", args.layers),
        ("n_heads", args.heads), ("d_model", args.d_model), ("n_items", args.n_items)) if value}
    if AXES[args.axis] in fixed:
        flag = {"batch_size": "--batch-size", "seq_len": "--seq-len", "n_layers": "--layers", "n_heads": "--heads",
                "d_model": "--d-model", "n_items": "--n-items"}[AXES[args.axis]]
        raise UsageError(f"{flag} fixes the swept axis {args.axis}; give its values with --values")
    if args.mem_limit_gib is not None and args.mem_limit_gib < MIN_MEM_LIMIT_GIB:
        raise UsageError(f"--mem-limit-gib {args.mem_limit_gib:g} is below {MIN_MEM_LIMIT_GIB:g} GiB, "
                         "where a point's process cannot even start")
    from bench.sweep.runner import default_mem_limit_gib

    request = GridRequest(
        axis=args.axis, preset=preset, specs=specs,
        workloads=args.workload, losses=args.loss,
        values=values, fixed=fixed, device=device, threads=args.threads, warmup=args.warmup,
        repeats=args.repeats, time_limit_s=args.time_limit,
        mem_limit_gib=args.mem_limit_gib if args.mem_limit_gib else default_mem_limit_gib(device),
        flops=not args.no_flops, dtype=args.dtype, predict=args.predict, compile=args.compile)
    try:
        points = build_grid(request)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.executor != "local":
        points = [dataclasses.replace(p, executor=args.executor) for p in points]
    out = cli.output_dir(args.out if args.out is not None else REPO_ROOT / "reports" / f"{args.axis}-{preset.name}")
    csv_path = out / "results.csv"
    if (csv_path.exists() or csv_path.is_symlink()) and not args.dry_run:
        if not csv_path.is_file():
            raise UsageError(f"{csv_path} exists but is not a file (a folder, a dangling link); use a new --out folder")
        if not args.resume:
            raise UsageError(f"{csv_path} already holds results; pass --resume to continue it or --out for a new folder")
        existing = resumable_rows(csv_path)
        check_resume_settings(existing, points, csv_path, several_nodes=args.executor == "ray")
    return preset, points, out, csv_path


def check_executor(args: argparse.Namespace) -> None:
    """`--executor`, `--ray-address` and `--threads` agree (UsageError, one line, otherwise)."""
    if args.executor == "local":
        if args.ray_address is not None:
            raise UsageError("--ray-address joins a Ray cluster; it needs --executor ray")
        if args.threads > cli.available_cpus():  # a Ray cluster's nodes are checked once joined
            raise UsageError(f"--threads {args.threads}: this machine lets the process use {cli.available_cpus()} CPUs")
        return
    check_ray_usable(args.threads)


def resumable_rows(csv_path: Path) -> list[dict]:
    """The rows of a results file `--resume` may append to, read as `results.read_rows` does.
    Refused (UsageError, one line naming the line and column): a file `bench.plots` could not
    draw (another schema, a line with the wrong number of cells, a hand-edited cell such as
    `seq_len` 8.0, which would never match its point and be measured again), and a last line
    without its end (a torn line the next row would be glued to), an empty file. A header without
    rows is fine."""
    from bench.report.plots import check_results_header, read_csv_records, results_row_problem

    try:
        text = csv_path.read_bytes()
        if not text.strip():
            raise UsageError(f"--resume: {csv_path} is empty, not a results file; remove it or use a new --out folder")
        header, records = read_csv_records(csv_path, "results.csv")  # UTF-8, cells per line
        if not text.endswith(b"\n"):
            raise UsageError(f"--resume: {csv_path}: its last line has no end (a torn or hand-cut line); "
                             "remove that line or use a new --out folder")
        check_results_header(csv_path, header)
        for line, row in records:
            problem = results_row_problem(row)
            if problem:
                raise UsageError(f"--resume: {csv_path} line {line}, column {problem[0]}: {problem[1]}; "
                                 "fix or remove that line, or use a new --out folder")
        return results.read_rows(csv_path)
    except UsageError as err:
        message = " ".join(str(err).split())
        raise UsageError(message if message.startswith("--resume") else f"--resume: {message}") from None
    except (ValueError, csv.Error, OSError) as err:
        raise UsageError(f"--resume: {' '.join(str(err).split())}") from None


def expected_settings(point) -> dict[str, str]:
    """The SETTINGS_COLUMNS and LIMIT_COLUMNS cells a row of `point` will carry, as the CSV spells
    them: `bench.sweep.point.base_row`'s, computed in this process (which the point's child inherits its
    environment from), with the thread count a fresh child would run with."""
    from bench.sweep.point import base_row

    row = base_row(point)
    row["threads"] = point.threads or default_threads()
    return {column: "" if row[column] is None else str(row[column])
            for column in results.SETTINGS_COLUMNS + results.LIMIT_COLUMNS}


def default_threads() -> int | None:
    """torch's default intra-op thread count in a fresh process with this environment, which is
    what a point's child runs with under `--threads 0` (this process's count may have been changed
    by `torch.set_num_threads`, so it is asked of a new interpreter); None if that fails."""
    import subprocess

    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, timeout=120)
    return int(probe.stdout.strip()) if probe.returncode == 0 and probe.stdout.strip().isdigit() else None


def check_resume_settings(rows: list[dict], points: list, csv_path: Path, several_nodes: bool = False) -> None:
    """Refuse (UsageError) to resume a results file whose rows were measured with other settings
    (`results.SETTINGS_COLUMNS`: threads, warmup, repeats, seed, FLOP counting, dtype, torch,
    device, performance environment; and `results.LIMIT_COLUMNS`) than this command's: their rows would be drawn as one
    line with the new ones, and points already present would never be re-measured with the new
    settings. Empty cells (a file from before the column existed) are not compared. With
    `several_nodes` (--executor ray) `device_name` is not compared: a cluster's rows may come from
    several devices, which the figures keep apart."""
    if not rows or not points:
        return
    first = {}  # workload -> its first point (a stream point times more repeats than a train one)
    for point in points:
        first.setdefault(point.workload, point)
    for workload, point in first.items():
        _check_settings([row for row in rows if row.get("workload") == workload], point, csv_path, several_nodes)


def _check_settings(rows: list[dict], point, csv_path: Path, several_nodes: bool = False) -> None:
    if not rows:
        return
    expected = expected_settings(point)
    for column in results.SETTINGS_COLUMNS + results.LIMIT_COLUMNS:
        if several_nodes and column == "device_name":
            continue
        found = sorted({row[column] for row in rows if row.get(column, "") != ""})
        if column == "threads" and expected[column] == "":  # torch's default could not be asked
            continue
        if found and found != [expected[column]]:
            now = expected[column] or "none"
            raise UsageError(
                f"{csv_path}: its rows were measured with {SETTING_FLAGS[column]} = {', '.join(found)}, this command "
                f"measures with {now}; resume with the same settings or use a new --out")


def describe(point) -> str:
    loss = f" ({point.loss})" if point.workload == "train" and point.loss != "ce" else ""
    return f"{point.spec.label} {point.workload}{loss} {point.axis}={getattr(point, point.axis)}"


def summary(row: dict) -> str:
    if row.get("status") == "predicted":
        return f"predicted {float(row['tracked_peak_mib']):.1f} MiB tracked"
    if row.get("status") != "ok":
        return f"{row.get('status')}: {row.get('reason', '')}"
    mib = row.get("tracked_peak_mib")
    memory = "memory not tracked" if mib in (None, "") else f"{float(mib):.1f} MiB tracked"
    compiled = f", compiled in {float(row['compile_time_s']):.1f} s" if row.get("compile_time_s") not in (None, "") else ""
    return f"ok {float(row['time_median_ms']):.1f} ms, {memory}{compiled}"


def run_sweep(points, csv_path: Path, resume: bool, log=print, progress=None, executor=None) -> list[dict]:
    """Measure every point not yet in the CSV on `executor` (an entered one, such as a RayExecutor;
    default: a LocalExecutor made and closed here), appending a row as each finishes: this process
    is the file's only writer, whatever runs the points.
    `progress`: a stream to draw a progress bar on (`Progress`) when it is a terminal; the log lines
    are the same with or without it."""
    from bench.sweep.executors import Finished, LocalExecutor

    done = {results.row_key(row) for row in results.read_rows(csv_path)} if resume and csv_path.exists() else set()
    todo = [p for p in points if results.row_key(_key_row(p)) not in done]
    if done:
        log(f"resuming: {len(points) - len(todo)} of {len(points)} points already in {csv_path}")
    if not todo:
        return []
    start, rows, spent = time.monotonic(), [], []
    left = list(todo)  # points without a row yet, in grid order
    running: dict = {}  # id(point) -> its description, in the order they started
    with Progress(len(todo), progress, log) as bar, contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(LocalExecutor(log=bar.log))
        several = executor.name != "local"
        for event in executor.events(todo):
            point = event.point
            if not isinstance(event, Finished):
                running[id(point)] = describe(point) + (f" on {event.node}" if several else "")
                bar.start(now_running(running), estimate_remaining_s(spent, left, executor.slots) if spent else None)
                continue
            running.pop(id(point), None)
            left.remove(point)
            row = event.row
            if event.seconds is not None:  # a point lost before it started says nothing of its cost
                spent.append((point, event.seconds))
            i = len(rows) + 1
            unknown = sorted(set(row) - set(results.COLUMNS))
            if unknown:  # a child from other code than this parent (the tree changed mid-run)
                bar.log(f"warning: dropped columns outside the schema: {', '.join(unknown)}")
                row = {k: v for k, v in row.items() if k in results.COLUMNS}
            results.append_row(csv_path, row)
            rows.append(row)
            elapsed = time.monotonic() - start
            eta = estimate_remaining_s(spent, left, executor.slots)
            where = f" on {row.get('node') or 'an unknown node'}" if several else ""
            bar.log(f"[{i}/{len(todo)}] {describe(point)}{where}: {summary(row)} "
                    f"(elapsed {clock(elapsed)}, ETA {clock(eta)})")
            bar.finish_point(eta, now_running(running) if running else None)
    return rows


def now_running(running: dict) -> str:
    """The progress bar's `now`: the first point still running, and how many more run beside it."""
    first, *more = running.values()
    return first + (f" (+{len(more)} more)" if more else "")


def is_terminal(stream) -> bool:
    """Whether a progress bar may be drawn on `stream`: an interactive terminal that understands
    carriage returns (not a pipe, a file, CI's log, or TERM=dumb)."""
    try:
        return bool(stream is not None and stream.isatty()) and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError, OSError):  # closed or not a file
        return False


class Progress:
    """The sweep's progress bar (tqdm) on `stream` when it is a terminal: points done / total, the
    point being measured, elapsed time and the ETA (`estimate_remaining_s`, counting down while a
    point runs). Elsewhere (a pipe, a log file, CI) it draws nothing and writes no control
    characters: `log` lines go out exactly as they would without it. Log lines written while the
    bar is shown go above it (tqdm.write)."""

    TICK_S = 1.0  # how often the bar's clock and ETA are redrawn while a point runs

    def __init__(self, total: int, stream, log=print):
        self._log, self._stream, self.bar = log, stream, None
        self._eta, self._since = None, time.monotonic()
        if not is_terminal(stream):
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, file=stream, unit="point", dynamic_ncols=True, leave=False,
                        bar_format="{n_fmt}/{total_fmt} points |{bar}| {elapsed}{postfix}")
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="sweep-progress", daemon=True)
        self._ticker.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log(self, line: str) -> None:
        if self.bar is None:
            self._log(line)
        else:
            self.bar.write(line, file=self._stream)

    def _postfix(self, what: str | None = None) -> str:
        if self._eta is None:
            eta = "ETA ?"
        else:
            eta = f"ETA {clock(max(0.0, self._eta - (time.monotonic() - self._since)))}"
        return eta if what is None else f"{eta}, now {what}"

    def start(self, what: str, eta_s: float | None) -> None:
        """A point begins: `what` it is, and the estimated seconds left including it (None: unknown)."""
        self._what, self._eta, self._since = what, eta_s, time.monotonic()
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(what))

    def finish_point(self, eta_s: float, still: str | None = None) -> None:
        """A point ended; `still`: what is still running (several executors' points at once)."""
        self._what, self._eta, self._since = still, eta_s, time.monotonic()
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(still), refresh=False)
            self.bar.update(1)

    def _tick(self) -> None:
        while not self._stop.wait(self.TICK_S):
            bar = self.bar
            if bar is None:
                return
            bar.set_postfix_str(self._postfix(getattr(self, "_what", None)))

    def close(self) -> None:
        if self.bar is not None:
            self._stop.set()
            self._ticker.join()
            bar, self.bar = self.bar, None
            bar.close()


def point_size(point) -> int:
    """A cost proxy for the ETA: tokens x layers x width (cost grows at least this fast)."""
    return point.batch_size * point.seq_len * point.n_layers * point.d_model


def estimate_remaining_s(spent: list, remaining: list, slots: int = 1) -> float:
    """Seconds left: each remaining point costs its size times the seconds per size unit its
    model spec and workload took so far (all finished points when that spec has none yet),
    shared among `slots` points measured at once. `spent` holds (point, seconds) pairs. Points
    grow along the axis, so a plain mean of the finished points under-estimates (the last,
    longest points of a seqlen sweep most of all)."""
    if not spent:
        return 0.0
    total_s = sum(s for _, s in spent)
    total_size = sum(point_size(p) for p, _ in spent)
    per_spec: dict = {}
    for p, s in spent:
        seconds, size = per_spec.get((p.spec.label, p.workload), (0.0, 0))
        per_spec[(p.spec.label, p.workload)] = (seconds + s, size + point_size(p))
    eta = 0.0
    for p in remaining:
        seconds, size = per_spec.get((p.spec.label, p.workload), (total_s, total_size))
        eta += seconds / max(size, 1) * point_size(p)
    return eta / max(1, min(slots, len(remaining)))


def _key_row(point) -> dict:
    return {"model": point.model, "variant": point.spec.variant, "workload": point.workload,
            "seq_len": point.seq_len, "batch_size": point.batch_size, "n_layers": point.n_layers,
            "n_heads": point.n_heads, "d_model": point.d_model, "n_items": point.n_items,
            "device": point.device.split(":")[0], "loss": point.loss if point.workload == "train" else ""}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(argv)
        preset, points, out, csv_path = plan(args)
    except UsageError as err:
        print(f"bench.sweep: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"{len(points)} points (preset {preset.name}, device {points[0].device}) -> {csv_path}")
        for i, point in enumerate(points, 1):
            print(f"  {i:3d}. {describe(point)} B={point.batch_size} L={point.seq_len} "
                  f"layers={point.n_layers} heads={point.n_heads} d={point.d_model}")
        return 0
    from bench.sweep.executors import make_executor, remove_orphaned_ray_instances

    orphans = remove_orphaned_ray_instances()
    if orphans:
        print(f"stopped {len(orphans)} process(es) a killed sweep's local Ray instance left running", flush=True)
    with contextlib.ExitStack() as stack:
        executor = None  # the local executor is made by run_sweep, beside its progress bar
        if args.executor != "local":  # joined (or started) and checked before anything is written
            try:
                executor = stack.enter_context(make_executor(
                    args.executor, args.ray_address, args.threads, points[0].device, args.dtype, args.predict, _log))
            except UsageError as err:  # the cluster could not be joined, or no node can run a point
                return cli.report_usage_error("bench.sweep", err)
        out.mkdir(parents=True, exist_ok=True)
        folder_lock = FileLock(out / SWEEP_LOCK_NAME, timeout=0)
        try:
            folder_lock.acquire()
        except Timeout:
            return cli.report_usage_error("bench.sweep", UsageError(
                f"{out} is being written by another running sweep; wait for it to end (then --resume) or use another --out"))
        try:
            return _run_locked(argv, args, preset, points, out, csv_path, executor)
        finally:
            folder_lock.release()


def _log(line: str) -> None:
    print(line, flush=True)


def with_device_peak(points: list) -> list:
    """The points with the device's peak TFLOP/s at their dtype (bench.measure.peak): the GPU's
    datasheet figure, or on the CPU a calibration matmul measured here, once per sweep, at the
    sweep's threads; every row records it and its source, and its MFU against it."""
    import dataclasses

    from bench.measure.device import device_name
    from bench.measure.peak import device_peak

    first = points[0]
    if first.predict:  # no step time, so no utilisation
        return points
    peak, source = device_peak(first.device, device_name(first.device, False), first.dtype, first.threads)
    print(f"device peak: {'unknown' if peak is None else f'{peak:.3f} TFLOP/s'} ({source})", flush=True)
    return [dataclasses.replace(p, peak_tflops=peak, peak_source=source) for p in points]


def sweep_writes(name: str) -> bool:
    """The files a sweep writes in its folder (results.csv and the figures): the only ones whose
    stale temporaries a restart removes."""
    return name == "results.csv" or (name.endswith(".png") and name.startswith(("time_", "memory_")))


def _run_locked(argv, args, preset, points, out: Path, csv_path: Path, executor=None) -> int:
    """The sweep proper, while this process holds the folder's lock: clean what a killed sweep
    left, record the command, measure, redraw the figures."""
    from bench.sweep.runner import remove_orphaned_point_dirs

    if csv_path.exists() and not args.resume:  # another sweep finished here since `plan` looked
        return cli.report_usage_error("bench.sweep", UsageError(
            f"{csv_path} already holds results; pass --resume to continue it or --out for a new folder"))
    if args.executor == "local":
        points = with_device_peak(points)  # a Ray executor measures each node's own
    stale = results.remove_stale_temporaries(out, sweep_writes) + remove_orphaned_point_dirs()
    if stale:
        print(f"removed what a killed sweep left: {', '.join(p.name for p in stale)}", flush=True)
    with open(out / "command.txt", "a") as handle:  # a resumed run appends its own command
        handle.write(f"{results.utc_now()}  python -m bench.sweep {shlex.join(argv)}\n")
    print(f"{len(points)} points (preset {preset.name}, device {points[0].device}) -> {csv_path}", flush=True)
    try:
        run_sweep(points, csv_path, args.resume, log=_log, progress=sys.stdout, executor=executor)
    except KeyboardInterrupt:
        kept = f"finished rows are kept in {csv_path}" if csv_path.exists() else "no point had finished"
        print(f"interrupted: {kept}; rerun with --resume", file=sys.stderr)
        return 130
    finally:
        if csv_path.exists():
            _redraw(csv_path)
    return 0


def _redraw(csv_path: Path) -> None:
    from bench.report.plots import plot_results_csv

    try:
        drawn = plot_results_csv(csv_path)
    except (UsageError, ValueError) as err:
        print(f"figures not drawn: {' '.join(str(err).split())}", file=sys.stderr)
        return
    for path in drawn:
        print(f"wrote {path}")

if __name__ == "__main__":
    cli.run(main)
