"""Wall-time of one callable: warm-up, then individually timed repeats.

Method: ``step()`` runs ``warmup`` times untimed (lazy init, allocator growth, autotuning),
then ``repeats`` times, each run timed on its own. We report the median with p20/p80, the
IQR (p75 - p25) and the minimum, never a mean. Percentiles use linear interpolation between
order statistics (numpy's default, ``statistics.quantiles(method="inclusive")``).

- CPU: ``time.perf_counter`` around each call. The result depends heavily on the intra-op
  thread count, so ``threads`` (``torch.get_num_threads()``) is recorded in every result;
  pin it with :func:`set_cpu_threads` (1 thread is the low-noise choice on shared runners).
- CUDA: kernels are asynchronous, so we ``torch.cuda.synchronize()`` before the first timed
  run, record a pair of CUDA events (``enable_timing=True``) around each call on the current
  stream, synchronise after each run and report the event time in ms. ``perf_counter`` wall
  time (launch overhead included) is kept as ``wall_median_ms``.

Pitfalls: build inputs before calling this (inputs built inside ``step`` are timed). Never
print, log or call ``.item()`` inside ``step``: ``.item()`` forces a device sync and the print
itself is timed. CI machines are noisy; gate on ratios against a control workload measured
in the same run, not on absolute milliseconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bench.measure.device import resolve_device

__all__ = ["TimingResult", "measure_time", "set_cpu_threads"]


@dataclass(frozen=True)
class TimingResult:
    """Summary of ``repeats`` individually timed calls, all times in milliseconds.

    ``timer`` is ``"perf_counter"`` (CPU) or ``"cuda_event"`` (CUDA). ``wall_median_ms`` is
    the median ``perf_counter`` time; on CPU it equals ``median_ms``, on CUDA it adds the
    host-side launch overhead that events do not see.
    """

    median_ms: float
    iqr_ms: float
    p20_ms: float
    p80_ms: float
    min_ms: float
    p99_ms: float
    repeats: int
    warmup: int
    threads: int
    timer: str
    wall_median_ms: float | None = None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method) of pre-sorted values."""
    if not sorted_values:
        raise ValueError("Cannot take a percentile of an empty list of timings.")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def _summarise(
    times_ms: list[float], *, warmup: int, timer: str, wall_ms: list[float]
) -> TimingResult:
    s = sorted(times_ms)
    w = sorted(wall_ms)
    return TimingResult(
        median_ms=percentile(s, 50),
        iqr_ms=percentile(s, 75) - percentile(s, 25),
        p20_ms=percentile(s, 20),
        p80_ms=percentile(s, 80),
        min_ms=s[0],
        p99_ms=percentile(s, 99),
        repeats=len(s),
        warmup=warmup,
        threads=torch.get_num_threads(),
        timer=timer,
        wall_median_ms=percentile(w, 50),
    )


def measure_time(
    step: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 10,
    min_total_s: float | None = None,
) -> TimingResult:
    """Time ``step()`` after ``warmup`` untimed calls, over at least ``repeats`` timed calls.

    If ``min_total_s`` is given, timed calls continue past ``repeats`` until the summed timed
    duration reaches ``min_total_s`` seconds (``repeats`` is then a minimum); the reported
    ``repeats`` is the number actually timed.
    """
    if not callable(step):
        raise ValueError(f"Expected a callable step taking no arguments, got {type(step).__name__}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"Expected warmup to be an integer >= 0, got {warmup!r}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"Expected repeats to be an integer >= 1, got {repeats!r}.")
    if min_total_s is not None and not (
        isinstance(min_total_s, (int, float)) and math.isfinite(min_total_s) and min_total_s >= 0
    ):
        raise ValueError(
            f"Expected min_total_s to be None or a finite number of seconds >= 0, got {min_total_s!r}."
        )
    dev = resolve_device(device, ("cpu", "cuda"))
    if dev.type == "cuda":
        return _time_cuda(step, dev, warmup, repeats, min_total_s)
    return _time_cpu(step, warmup, repeats, min_total_s)


def _time_cpu(
    step: Callable[[], object], warmup: int, repeats: int, min_total_s: float | None
) -> TimingResult:
    for _ in range(warmup):
        step()
    times_ms: list[float] = []
    total_s = 0.0
    while len(times_ms) < repeats or (min_total_s is not None and total_s < min_total_s):
        t0 = time.perf_counter()
        step()
        dt = time.perf_counter() - t0
        total_s += dt
        times_ms.append(dt * 1e3)
    return _summarise(times_ms, warmup=warmup, timer="perf_counter", wall_ms=times_ms)


def _time_cuda(
    step: Callable[[], object],
    dev: torch.device,
    warmup: int,
    repeats: int,
    min_total_s: float | None,
) -> TimingResult:
    with torch.cuda.device(dev):
        for _ in range(warmup):
            step()
        torch.cuda.synchronize(dev)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        event_ms: list[float] = []
        wall_ms: list[float] = []
        total_s = 0.0
        while len(event_ms) < repeats or (min_total_s is not None and total_s < min_total_s):
            t0 = time.perf_counter()
            start.record()
            step()
            end.record()
            torch.cuda.synchronize(dev)
            wall = time.perf_counter() - t0
            ms = start.elapsed_time(end)  # both events have completed: no extra wait
            event_ms.append(ms)
            wall_ms.append(wall * 1e3)
            total_s += ms / 1e3
    return _summarise(event_ms, warmup=warmup, timer="cuda_event", wall_ms=wall_ms)


def set_cpu_threads(n: int) -> int:
    """Set torch's intra-op thread count to ``n`` and return the count actually in effect.

    Inter-op threads are set too, but only when torch still allows it (once any inter-op
    parallel work has started, or after a first call, torch raises ``RuntimeError``, which is
    ignored here).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected a thread count that is an integer >= 1, got {n!r}.")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass
    return torch.get_num_threads()


def time_call_ms(step) -> float:
    """One call of ``step`` in ms, wall clock (CUDA: synchronised before and after when a context
    exists), for paired measurements that alternate two steps (bench.ab, bench.regress)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3
