"""Time and tracked peak memory of one fwd+bwd of the Mamba-1 selective scan, three ways:
`selective_scan` (chunk-recompute Function), `selective_scan_ref` (mamba_ssm-style reference:
full [B, D_in, L, N] tensors indexed per step, O(L^2) backward) and `selective_scan_loop`
(per-step loop under autograd).

    .venv/bin/python scripts/bench_selective_scan.py [--B 64 --L 200 --D-in 128 --N 32 --chunk-size 32]
    .venv/bin/python scripts/bench_selective_scan.py --L 100 --skip-ref   # the two fast rungs only

Scan inputs only (no projections): u, delta = softplus(.) > 0, A = -[1..N] per channel (S4D-real),
Bm, C, D, all leaves requiring grad, and one fixed upstream gradient, built before the clock.
Times: medians of individually timed fwd+bwd runs after warm-up (bench.measure.timing), on a
fixed CPU thread count. The reference takes about a minute per run at L=200, so by default it
gets no warm-up (the other paths already warmed the allocator) and one timed run. Memory:
MemTracker's exact tensor accounting over one more fwd+bwd (bench.measure.memory.tracked_peak),
including the inputs and the upstream gradient; also shown in units of one [B, L, D_in, N] fp32
tensor ("full"). Ratios are against `selective_scan`.

Sample output (defaults; 1 thread of a shared 2-core AMD EPYC VM, torch 2.13 CPU; about 5 min,
almost all of it the reference's two runs):

    path                  runs  median ms       p20-p80 ms  peak MiB  peak/full  time/fast  mem/fast
    selective_scan           3      546.9      532.1-588.8      63.5       0.32      1.00x      1.0x
    selective_scan_loop      3      638.5      634.7-661.0     454.1       2.27      1.17x      7.2x
    selective_scan_ref       1    83100.3  83100.3-83100.3    1436.0       7.18    151.94x     22.6x
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure.memory import tracked_peak
from bench.measure.timing import measure_time, set_cpu_threads
from models.ops.selective_scan import selective_scan, selective_scan_loop, selective_scan_ref


def make_inputs(B: int, L: int, D_in: int, N: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(B, L, D_in, generator=gen)
    delta = F.softplus(torch.randn(B, L, D_in, generator=gen) - 0.5)
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(D_in, 1)  # [D_in, N]
    Bm = torch.randn(B, L, N, generator=gen)
    C = torch.randn(B, L, N, generator=gen)
    D = torch.ones(D_in)
    g = torch.randn(B, L, D_in, generator=gen)
    return [t.requires_grad_() for t in (u, delta, A, Bm, C, D)], g


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--B", type=int, default=64)
    p.add_argument("--L", type=int, default=200)
    p.add_argument("--D-in", type=int, default=128)
    p.add_argument("--N", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of the fast paths")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the fast paths")
    p.add_argument("--ref-warmup", type=int, default=0)
    p.add_argument("--ref-repeats", type=int, default=1)
    p.add_argument("--skip-ref", action="store_true", help="leave out selective_scan_ref")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    threads = set_cpu_threads(args.threads)
    inputs, g = make_inputs(args.B, args.L, args.D_in, args.N, args.seed)
    full = args.B * args.L * args.D_in * args.N * 4

    def step(fn, **kw):
        def run():
            for t in inputs:
                t.grad = None
            fn(*inputs, **kw).backward(g)
        return run

    paths = [("selective_scan", selective_scan, {"chunk_size": args.chunk_size}, args.warmup, args.repeats),
             ("selective_scan_loop", selective_scan_loop, {}, args.warmup, args.repeats)]
    if not args.skip_ref:
        paths.append(("selective_scan_ref", selective_scan_ref, {}, args.ref_warmup, args.ref_repeats))
    rows = {}
    for name, fn, kw, warmup, repeats in paths:
        t0 = time.perf_counter()
        log(f"{name}: {warmup} warm-up + {repeats} timed fwd+bwd ...")
        t = measure_time(step(fn, **kw), warmup=warmup, repeats=repeats)
        log(f"{name}: median {t.median_ms:.0f} ms; tracked-peak run ...")
        for x in inputs:
            x.grad = None
        mem = tracked_peak(step(fn, **kw), *inputs, g).total_bytes
        log(f"{name}: done in {time.perf_counter() - t0:.1f} s")
        rows[name] = (t, mem)

    print(f"fwd+bwd  B={args.B} L={args.L} D_in={args.D_in} N={args.N} chunk_size={args.chunk_size} fp32"
          f"  threads={threads}  full [B,L,D_in,N] tensor={full / 2**20:.1f} MiB  torch {torch.__version__}")
    print(f"{'path':<20}{'runs':>6}{'median ms':>11}{'p20-p80 ms':>17}{'peak MiB':>10}{'peak/full':>11}"
          f"{'time/fast':>11}{'mem/fast':>10}")
    t_fast, m_fast = rows["selective_scan"]
    for name, (t, mem) in rows.items():
        print(f"{name:<20}{t.repeats:>6}{t.median_ms:>11.1f}{f'{t.p20_ms:.1f}-{t.p80_ms:.1f}':>17}"
              f"{mem / 2**20:>10.1f}{mem / full:>11.2f}{t.median_ms / t_fast.median_ms:>10.2f}x"
              f"{mem / m_fast:>9.1f}x")


if __name__ == "__main__":
    main()
