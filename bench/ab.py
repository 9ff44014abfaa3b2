"""A/B: two model specs on one shape, timed alternately in one process (paired ratios).

Examples:
  python -m bench.ab lrurec lrurec:scan=ref --batch-size 64 --seq-len 1024 --threads 1
  python -m bench.ab mamba4rec mamba4rec:scan=loop --seq-len 200 --rounds 10 --out reports/_scratch/ab.csv
  python -m bench.ab sasrec sasrec:attention=math --workload infer --seq-len 512
  python -m bench.ab recgrela official/recgrela --seq-len 1000 --layers 4 --heads 4 --batch-size 64

Why: a sweep measures its points one after another, so a 5% difference between two variants
drowns in the 10-25% drift of a shared machine. Here both workloads are built from the same
seeded batch, warmed up, and then timed in rounds that alternate their order (A B, B A, A B, ..),
so drift and allocator warm-up hit both alike. Reported: each side's median step time, the
median of the per-round ratios B / A with its p10-p90 spread and how many rounds B was slower,
and each side's exact tracked peak memory (MemTracker) of one step. With `--out`, one CSV row per
run is appended atomically (the file is created with a header).
Bad input (a spec or shape a model refuses, an `--out` that cannot take the row) is one line on
stderr, exit code 2, before anything is built or measured, and nothing written.
"""
from __future__ import annotations

import csv
import statistics
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

import models
from bench import cli
from bench.cli import UsageError, non_negative_int, positive_int
from bench.grid import WORKLOADS, ModelSpec, parse_model_spec
from bench.measure.device import device_name
from bench.measure.memory import tracked_peak
from bench.measure.timing import percentile, set_cpu_threads, time_call_ms
from bench.results import SHAPE_COLUMNS, Shape, append_csv_row
from bench.workload import build_workload


@dataclass(frozen=True)
class ABResult(Shape):
    """One A/B comparison at one shape (bench.results.Shape)."""

    model_a: str
    model_b: str
    workload: str
    threads: int
    rounds: int
    time_a_median_ms: float
    time_b_median_ms: float
    ratio_b_over_a_median: float  # > 1: B is slower
    ratio_b_over_a_p10: float
    ratio_b_over_a_p90: float
    rounds_b_slower: int
    tracked_peak_a_bytes: int
    tracked_peak_b_bytes: int
    torch_version: str
    device: str
    device_name: str  # as in sweep rows (bench.sweep.point.device_name)


_OWN = [f.name for f in fields(ABResult) if f.name not in SHAPE_COLUMNS]
AB_COLUMNS = [*_OWN[:3], *SHAPE_COLUMNS, *_OWN[3:]]  # the CSV header of `--out`: the specs, the shape, the rest


def compare(spec_a: ModelSpec, spec_b: ModelSpec, *, workload: str = "train", batch_size: int = 64,
            seq_len: int = 200, n_layers: int = 2, n_heads: int = 2, d_model: int = 64,
            n_items: int = 3417, rounds: int = 10, warmup: int = 2, threads: int = 1,
            seed: int = 0, device: str = "cpu", progress=None) -> ABResult:
    """Time ``spec_a`` and ``spec_b`` alternately (ABBA order) and measure each one's tracked peak."""
    if threads:
        set_cpu_threads(threads)
    shape = dict(n_items=n_items, max_len=seq_len, d_model=d_model, n_layers=n_layers, n_heads=n_heads)
    sides = [build_workload(spec.name, dict(shape, **dict(spec.overrides)), workload, batch_size, seed, device)
             for spec in (spec_a, spec_b)]
    for _ in range(warmup):
        for side in sides:
            side.step()
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            times[i].append(time_call_ms(sides[i].step))
        if progress:
            progress(f"round {r + 1}/{rounds}: A {times[0][-1]:.1f} ms, B {times[1][-1]:.1f} ms")
    ratios = sorted(b / a for a, b in zip(*times))
    peaks = [tracked_peak(side.step, *side.tracked, device=device).total_bytes for side in sides]
    return ABResult(
        model_a=spec_a.label, model_b=spec_b.label, workload=workload, batch_size=batch_size,
        seq_len=seq_len, n_layers=n_layers, n_heads=n_heads, d_model=d_model, n_items=n_items,
        threads=torch.get_num_threads(), rounds=rounds,
        time_a_median_ms=statistics.median(times[0]), time_b_median_ms=statistics.median(times[1]),
        ratio_b_over_a_median=statistics.median(ratios), ratio_b_over_a_p10=percentile(ratios, 10),
        ratio_b_over_a_p90=percentile(ratios, 90), rounds_b_slower=sum(r > 1 for r in ratios),
        tracked_peak_a_bytes=peaks[0], tracked_peak_b_bytes=peaks[1],
        torch_version=torch.__version__, device=device.split(":")[0],
        device_name=device_name(device, torch.cuda.is_available() and torch.cuda.is_initialized()))


def parser() -> cli.OneLineParser:
    p = cli.parser("bench.ab", __doc__)
    p.add_argument("model_a", help="NAME[:key=value...], the reference side")
    p.add_argument("model_b", help="NAME[:key=value...], the side compared with A")
    p.add_argument("--workload", choices=WORKLOADS, default="train")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--seq-len", type=positive_int, default=200)
    p.add_argument("--layers", type=positive_int, default=2)
    p.add_argument("--heads", type=positive_int, default=2)
    p.add_argument("--d-model", type=positive_int, default=64)
    p.add_argument("--n-items", type=positive_int, default=3417)
    p.add_argument("--threads", type=cli.threads, default=1,
                   help="CPU intra-op threads (default 1; 0: torch's default; at most the CPUs this process may use)")
    p.add_argument("--rounds", type=positive_int, default=10, help="timed rounds, each runs A and B once")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed steps of each side first")
    p.add_argument("--out", help="CSV file to append the result row to")
    return p


def shape_config(args) -> dict:
    """The model config keys the shape flags set (the spec's own options come on top)."""
    return dict(n_items=args.n_items, max_len=args.seq_len, d_model=args.d_model, n_layers=args.layers,
                n_heads=args.heads)


def check_specs(texts: list[str], shape: dict) -> list[ModelSpec]:
    """Both specs parsed and each one's config (the shape plus its options) validated by the model,
    before anything is built: refused (UsageError) are unknown models, keys and values, options
    that set a grid dimension, and shapes a model does not take (heads that do not divide d,
    `--n-items 1`, an odd d where a model pairs channels, ...)."""
    specs = []
    for side, text in zip("AB", texts):
        try:
            spec = parse_model_spec(text)
            models.make_config(spec.name, **dict(shape, **dict(spec.overrides)))
        except ValueError as err:
            raise UsageError(f"model {side} {text!r}: {' '.join(str(err).split())}") from None
        specs.append(spec)
    return specs


def check_out_csv(text: str) -> Path:
    """`--out`: a CSV file this run can append its row to, checked before measuring. Refused
    (UsageError): a path `cli.output_file` refuses (a folder, a parent that is a file, /proc or
    another unwritable place, an over-long name), something that is not a regular file (/dev/null),
    and an existing file that is not one of this command's CSVs: empty, not UTF-8 text, or another
    header than AB_COLUMNS (appending would mix tables)."""
    out = cli.output_file(text, "--out")
    if not out.exists():
        return out
    if not out.is_file():
        raise UsageError(f"--out {out} is not a regular file; give a CSV file path")
    try:
        with open(out, encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError:
        raise UsageError(f"--out {out} is not UTF-8 text (a binary file?); give a new file or an earlier "
                         "bench.ab CSV") from None
    except csv.Error as err:
        raise UsageError(f"--out {out} is not a CSV file ({err}); give a new file or an earlier bench.ab CSV") from None
    except OSError as err:
        raise UsageError(f"--out {out}: cannot read it ({err.strerror or err})") from None
    if header is None:
        raise UsageError(f"--out {out} is empty, without the header of a bench.ab CSV; delete it or give a new file")
    if header != AB_COLUMNS:
        raise UsageError(f"--out {out} has other columns than bench.ab writes ({', '.join(header[:4])}"
                         f"{', ...' if len(header) > 4 else ''}); give a new file or an earlier bench.ab CSV")
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        specs = check_specs([args.model_a, args.model_b], shape_config(args))
        out = check_out_csv(args.out) if args.out is not None else None
    except UsageError as err:
        return cli.report_usage_error("bench.ab", err)
    result = compare(*specs, workload=args.workload, batch_size=args.batch_size, seq_len=args.seq_len,
                     n_layers=args.layers, n_heads=args.heads, d_model=args.d_model,
                     n_items=args.n_items, rounds=args.rounds, warmup=args.warmup,
                     threads=args.threads, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"A {result.model_a}: median {result.time_a_median_ms:.1f} ms, tracked peak {result.tracked_peak_a_bytes:,} B")
    print(f"B {result.model_b}: median {result.time_b_median_ms:.1f} ms, tracked peak {result.tracked_peak_b_bytes:,} B")
    print(f"B / A time: median {result.ratio_b_over_a_median:.3f} (p10 {result.ratio_b_over_a_p10:.3f}, "
          f"p90 {result.ratio_b_over_a_p90:.3f}); B slower in {result.rounds_b_slower} of {result.rounds} rounds")
    if out is not None:
        append_csv_row(out, AB_COLUMNS, asdict(result))
        print(f"appended to {out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
