"""Time and tracked peak memory of fwd+bwd: `linear_scan` (odd-even scan, custom backward) vs
`linear_scan_ref` (time loop under autograd), on one shape.

    .venv/bin/python scripts/bench_linear_scan.py [--B 64 --L 1024 --P 128 --dtype complex64]
                                                  [--broadcast-a] [--interleave]

Memory is MemTracker's exact tensor accounting (bench.measure.memory.tracked_peak) over one
fwd+bwd step, including the inputs a, b and the upstream gradient; it is also shown in units of
one input-sized tensor. Times are medians of individually timed runs after warm-up
(bench.measure.timing.measure_time), on a fixed CPU thread count.

Order matters on CPU: by default `linear_scan` is timed first, then `linear_scan_ref`. glibc
serves a request above its mmap threshold (32 MiB at most) from a free heap chunk when one fits,
else with fresh mmap'd pages; the reference's thousands of small per-step tensors grow that
heap, after which input-sized outputs (of either path) reuse warm pages instead of paying
first-touch page faults (~40 ms per 64 MiB tensor on this project's 2-core VM).
``--interleave`` warms both paths first and then alternates their timed runs, so both see the
same allocator state.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure.memory import tracked_peak
from bench.measure.timing import measure_time, set_cpu_threads
from models.ops.linear_scan import linear_scan, linear_scan_ref

DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "complex64": torch.complex64, "complex128": torch.complex128}


def make_inputs(B: int, L: int, P: int, dtype: torch.dtype, broadcast_a: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    rdt = torch.float32 if dtype in (torch.float32, torch.complex64) else torch.float64
    a_shape = (1, L, P) if broadcast_a else (B, L, P)
    mag = 0.8 + 0.199 * torch.rand(a_shape, generator=gen, dtype=rdt)  # |a| in [0.8, 0.999]
    if dtype.is_complex:
        a = torch.polar(mag, 2 * math.pi * torch.rand(a_shape, generator=gen, dtype=rdt))
        b = torch.randn((B, L, P), generator=gen, dtype=dtype)
    else:
        a, b = mag, torch.randn((B, L, P), generator=gen, dtype=dtype)
    g = torch.randn((B, L, P), generator=gen, dtype=dtype)
    return a.requires_grad_(), b.requires_grad_(), g


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--B", type=int, default=64)
    p.add_argument("--L", type=int, default=1024)
    p.add_argument("--P", type=int, default=128)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="complex64")
    p.add_argument("--broadcast-a", action="store_true", help="gate of shape [1, L, P] (LRURec)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interleave", action="store_true",
                   help="warm both paths, then alternate their timed runs (same allocator state)")
    args = p.parse_args()

    threads = set_cpu_threads(args.threads)
    dtype = DTYPES[args.dtype]
    a, b, g = make_inputs(args.B, args.L, args.P, dtype, args.broadcast_a, args.seed)
    unit = b.numel() * b.element_size()

    def step(fn):
        def run():
            a.grad = b.grad = None
            fn(a, b).backward(g)
        return run

    paths = (("linear_scan", linear_scan), ("linear_scan_ref", linear_scan_ref))
    rows = {}
    if args.interleave:
        for _, fn in paths:
            for _ in range(args.warmup):
                step(fn)()
        runs = {name: [] for name, _ in paths}
        for _ in range(args.repeats):
            for name, fn in paths:
                runs[name].append(measure_time(step(fn), warmup=0, repeats=1).median_ms)
    for name, fn in paths:
        if args.interleave:
            t = _summary(runs[name])
        else:
            t = measure_time(step(fn), warmup=args.warmup, repeats=args.repeats)
        a.grad = b.grad = None
        mem = tracked_peak(step(fn), a, b, g).total_bytes
        rows[name] = (t, mem)

    a_desc = "[1,L,P]" if args.broadcast_a else "[B,L,P]"
    print(f"fwd+bwd  B={args.B} L={args.L} P={args.P} {args.dtype} a={a_desc}"
          f"  threads={threads}  input tensor={unit / 2**20:.1f} MiB  torch {torch.__version__}")
    print(f"{'path':<17}{'median ms':>11}{'p20-p80 ms':>17}{'peak MiB':>11}{'peak/input':>12}")
    for name, (t, mem) in rows.items():
        print(f"{name:<17}{t.median_ms:>11.1f}{f'{t.p20_ms:.1f}-{t.p80_ms:.1f}':>17}"
              f"{mem / 2**20:>11.1f}{mem / unit:>12.2f}")
    (ts, ms), (tr, mr) = rows["linear_scan"], rows["linear_scan_ref"]
    print(f"ratio scan/ref: time {ts.median_ms / tr.median_ms:.2f}x, peak memory {ms / mr:.2f}x"
          f"  ({args.repeats} timed runs after {args.warmup} warm-up"
          f"{', interleaved' if args.interleave else ', scan first'})")


def _summary(times_ms: list[float]):
    """median / p20 / p80 (linear interpolation, as bench.measure.timing) of interleaved runs."""
    s = sorted(times_ms)

    def pct(q: float) -> float:
        pos = (len(s) - 1) * q / 100
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return argparse.Namespace(median_ms=pct(50), p20_ms=pct(20), p80_ms=pct(80))


if __name__ == "__main__":
    main()
