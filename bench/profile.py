"""Profile a few steps of one model with torch.profiler: a trace to open and the top operators as CSV.

Examples:
  python -m bench.profile --model recgrela                          # quick preset shape, train step
  python -m bench.profile --model sasrec:attention=math --seq-len 512 --batch-size 8 --threads 1
  python -m bench.profile --model mamba4rec --workload infer --wait 1 --warmup 2 --active 5
  python -m bench.profile --model official/recgrela --seq-len 200 --batch-size 64   # the official code
  python -m bench.profile --model linrec --device cuda --preset paper --out reports/profile-linrec-gpu
  tensorboard --logdir reports/profile-recgrela-train/tb            # with the `profile` extra installed

Method: the workload is the sweep's (`bench.workload`: same inputs, same train/infer step, built
before the profiler starts). Steps run under `torch.profiler.profile` with the schedule
wait / warmup / active (repeat 1): `wait` steps are not recorded, `warmup` steps are recorded and
thrown away (the profiler's own start-up cost lands there), `active` steps are kept. Shapes and
memory are recorded (`record_shapes`, `profile_memory`).

Output (OUT, default reports/profile-<model>-<workload>):
  trace.json               Chrome trace of the active steps: open in ui.perfetto.dev or chrome://tracing
  tb/*.pt.trace.json       the same trace for TensorBoard's profiler plugin, written when
                           torch-tb-profiler is installed (`pip install -e '.[profile]'`; the plugin
                           is deprecated upstream, the Chrome trace is the durable format)
  top_ops_by_time.csv      operators by self time (CPU, or device time on CUDA), summed over the active steps
  top_ops_by_memory.csv    operators by the memory they allocated themselves (self memory)
  profile.json             the command, the shape, the schedule and the environment
Bad input is one line on stderr, exit code 2, and nothing written.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import cli
from bench.cli import UsageError, non_negative_int, positive_int
from bench.grid import PRESETS, WORKLOADS, parse_model_spec
from bench.results import Shape

REPO_ROOT = Path(__file__).resolve().parent.parent
TOP_COLUMNS = ["rank", "op", "calls", "self_cpu_time_us", "cpu_time_total_us", "self_device_time_us",
               "device_time_total_us", "self_time_share_pct", "self_cpu_memory_bytes", "cpu_memory_bytes",
               "self_device_memory_bytes", "device_memory_bytes"]


def parser() -> argparse.ArgumentParser:
    p = cli.parser("bench.profile", __doc__)
    p.add_argument("--model", required=True, help="NAME[:key=value[:key=value]], as in bench.sweep --models")
    p.add_argument("--workload", choices=WORKLOADS, default="train")
    p.add_argument("--preset", choices=sorted(PRESETS), help="shape defaults: paper on CUDA, quick otherwise")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--seq-len", type=positive_int)
    p.add_argument("--layers", type=positive_int)
    p.add_argument("--heads", type=positive_int)
    p.add_argument("--d-model", type=positive_int)
    p.add_argument("--n-items", type=positive_int)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=cli.threads, default=0,
                   help="CPU threads (0: torch's default; at most the CPUs this process may use)")
    p.add_argument("--wait", type=non_negative_int, default=1, help="steps run before recording (default 1)")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="steps recorded then discarded (default 1)")
    p.add_argument("--active", type=positive_int, default=3, help="steps recorded and kept (default 3)")
    p.add_argument("--top", type=positive_int, default=30, help="operators per CSV (default 30)")
    p.add_argument("--tensorboard", choices=("auto", "yes", "no"), default="auto",
                   help="TensorBoard plugin files: auto = when torch-tb-profiler is installed")
    p.add_argument("--out", help="output folder (default: reports/profile-<model>-<workload>)")
    return p


@dataclass(frozen=True)
class ProfileRequest(Shape):
    """What to profile: a model spec and workload at one shape (bench.results.Shape)."""

    model: str  # the spec as typed, e.g. "sasrec:attention=math"
    workload: str
    device: str = "cpu"
    threads: int = 0
    wait: int = 1
    warmup: int = 1
    active: int = 3
    top: int = 30
    tensorboard: bool = False


@dataclass(frozen=True)
class ProfileResult:
    trace: Path
    tensorboard_dir: Path | None
    top_by_time: Path
    top_by_memory: Path
    info: Path


def tb_plugin_installed() -> bool:
    return importlib.util.find_spec("torch_tb_profiler") is not None


def plan(args: argparse.Namespace) -> tuple[ProfileRequest, Path]:
    """Validate everything; raises UsageError before anything is built, measured or written.
    Refused: --device cuda without a CUDA device; a model spec that does not parse (unknown model,
    key or value, an option that sets a grid dimension); a shape the model's config refuses (heads
    that do not divide d, --n-items 1, an odd d where a model pairs channels); --tensorboard yes
    without the plugin; an output folder `cli.output_dir` refuses (a file, a parent that is a file,
    /proc or another unwritable place, an over-long name), the default folder included."""
    import models

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA device")
    preset = PRESETS[args.preset or ("paper" if device == "cuda" else "quick")]
    try:
        spec = parse_model_spec(args.model)
    except ValueError as err:
        raise UsageError(str(err)) from None
    tensorboard = {"yes": True, "no": False, "auto": tb_plugin_installed()}[args.tensorboard]
    if args.tensorboard == "yes" and not tb_plugin_installed():
        raise UsageError("--tensorboard yes needs torch-tb-profiler: pip install -e '.[profile]'")
    request = ProfileRequest(
        model=spec.label, workload=args.workload, batch_size=args.batch_size or preset.batch_size,
        seq_len=args.seq_len or preset.seq_len, n_layers=args.layers or preset.n_layers,
        n_heads=args.heads or preset.n_heads, d_model=args.d_model or preset.d_model,
        n_items=args.n_items or preset.n_items, device=device, threads=args.threads, wait=args.wait,
        warmup=args.warmup, active=args.active, top=args.top, tensorboard=tensorboard)
    try:
        models.make_config(spec.name, **model_config(request))
    except ValueError as err:
        raise UsageError(f"{spec.label}: {err}") from None
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec.label)
    out = cli.output_dir(args.out if args.out is not None else REPO_ROOT / "reports" / f"profile-{safe}-{args.workload}",
                         "--out")
    return request, out


def model_config(request: ProfileRequest) -> dict:
    spec = parse_model_spec(request.model)
    return dict(n_items=request.n_items, max_len=request.seq_len, d_model=request.d_model,
                n_layers=request.n_layers, n_heads=request.n_heads, **dict(spec.overrides))


def top_operators(key_averages, by: str, top: int, on_cuda: bool) -> list[dict]:
    """Rows of the operator table (ProfilerStep markers left out), ranked by `by` = time | memory."""
    events = [e for e in key_averages if not e.key.startswith("ProfilerStep")]
    self_time = (lambda e: e.self_device_time_total) if on_cuda else (lambda e: e.self_cpu_time_total)
    self_memory = (lambda e: e.self_device_memory_usage) if on_cuda else (lambda e: e.self_cpu_memory_usage)
    total_time = sum(max(self_time(e), 0) for e in events) or 1
    ranked = sorted(events, key=self_time if by == "time" else self_memory, reverse=True)
    if by == "memory":
        ranked = [e for e in ranked if self_memory(e) > 0]
    rows = []
    for rank, e in enumerate(ranked[:top], 1):
        rows.append({
            "rank": rank, "op": e.key, "calls": e.count,
            "self_cpu_time_us": round(e.self_cpu_time_total, 3), "cpu_time_total_us": round(e.cpu_time_total, 3),
            "self_device_time_us": round(e.self_device_time_total, 3),
            "device_time_total_us": round(e.device_time_total, 3),
            "self_time_share_pct": round(100 * self_time(e) / total_time, 2),
            "self_cpu_memory_bytes": e.self_cpu_memory_usage, "cpu_memory_bytes": e.cpu_memory_usage,
            "self_device_memory_bytes": e.self_device_memory_usage, "device_memory_bytes": e.device_memory_usage,
        })
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, TOP_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def run_profile(request: ProfileRequest, out: Path, command: str = "python -m bench.profile",
                log=print) -> ProfileResult:
    """Profile `wait + warmup + active` steps; every file is written to a temporary folder first
    and moved into `out` only once the profile is complete."""
    threads = torch.get_num_threads()
    if request.threads:
        torch.set_num_threads(request.threads)
    try:
        return _run_profile(request, out, command, log)
    finally:
        torch.set_num_threads(threads)


def _run_profile(request: ProfileRequest, out: Path, command: str, log) -> ProfileResult:
    from torch.profiler import ProfilerActivity, profile, schedule

    from bench.results import cpu_name, git_commit, utc_now
    from bench.workload import build_workload

    spec = parse_model_spec(request.model)
    device = torch.device(request.device)
    on_cuda = device.type == "cuda"
    workload = build_workload(spec.name, model_config(request), request.workload, request.batch_size,
                              seed=0, device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tb_dir = staging / "tb" if request.tensorboard else None
        ready = []

        def on_trace_ready(prof):
            prof.export_chrome_trace(str(staging / "trace.json"))  # a trace can be saved only once
            if tb_dir is not None:  # so the plugin's copy is a file named as tensorboard_trace_handler names it
                tb_dir.mkdir()
                shutil.copyfile(staging / "trace.json",
                                tb_dir / f"{platform.node() or 'host'}_{os.getpid()}.{time.time_ns()}.pt.trace.json")
            ready.append(True)

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        steps = request.wait + request.warmup + request.active
        with profile(activities=activities, record_shapes=True, profile_memory=True, on_trace_ready=on_trace_ready,
                     schedule=schedule(wait=request.wait, warmup=request.warmup, active=request.active,
                                       repeat=1)) as prof:
            for step in range(steps):
                workload.step()
                if on_cuda:
                    torch.cuda.synchronize(device)
                prof.step()
                log(f"step {step + 1}/{steps} "
                    f"({'wait' if step < request.wait else 'warmup' if step < request.wait + request.warmup else 'active'})")
        if not ready:
            raise RuntimeError("the profiler never delivered a trace")
        averages = prof.key_averages()
        _write_csv(staging / "top_ops_by_time.csv", top_operators(averages, "time", request.top, on_cuda))
        _write_csv(staging / "top_ops_by_memory.csv", top_operators(averages, "memory", request.top, on_cuda))
        info = {"command": command, "request": request.__dict__, "steps_kept": request.active,
                "device_name": torch.cuda.get_device_name(device) if on_cuda else cpu_name(),
                "threads": torch.get_num_threads(), "torch_version": torch.__version__,
                "python_version": platform.python_version(), "git_commit": git_commit(),
                "timestamp_utc": utc_now(), "tensorboard_plugin_files": bool(tb_dir)}
        (staging / "profile.json").write_text(json.dumps(info, indent=2) + "\n")
        out.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            target = out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ProfileResult(out / "trace.json", out / "tb" if request.tensorboard else None,
                         out / "top_ops_by_time.csv", out / "top_ops_by_memory.csv", out / "profile.json")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(argv)
        request, out = plan(args)
    except UsageError as err:
        print(f"bench.profile: error: {err}", file=sys.stderr)
        return 2
    print(f"profiling {request.model} {request.workload} on {request.device}: B={request.batch_size} "
          f"L={request.seq_len} layers={request.n_layers} heads={request.n_heads} d={request.d_model}; "
          f"schedule wait={request.wait} warmup={request.warmup} active={request.active}", flush=True)
    result = run_profile(request, out, "python -m bench.profile " + shlex.join(argv),
                         log=lambda line: print(line, flush=True))
    import csv

    with open(result.top_by_time) as handle:
        top = list(csv.DictReader(handle))[:10]
    print("top operators by self time:")
    for row in top:
        print(f"  {row['op']:<48} {float(row['self_time_share_pct']):6.2f} %  {row['calls']:>6} calls")
    for path in (result.trace, result.top_by_time, result.top_by_memory, result.info):
        print(f"wrote {path}")
    if result.tensorboard_dir is not None:
        print(f"wrote {result.tensorboard_dir}/ (tensorboard --logdir {result.tensorboard_dir})")
    else:
        print("no TensorBoard plugin files: torch-tb-profiler is not installed (pip install -e '.[profile]')")
    return 0


if __name__ == "__main__":
    cli.run(main)
