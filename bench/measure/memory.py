"""Peak memory of one step, three ways: tensor accounting, CUDA allocator, NVML sampling.

1. :func:`tracked_peak` (CPU and CUDA, exact and repeatable, the CI gate). It uses
   ``torch.distributed._tools.mem_tracker.MemTracker`` (a private torch API), a dispatch mode
   that sums live tensor storages by category (Parameter, Buffer, Gradient, Activation, Temp,
   Optstate, Other). Pitfalls: only tensors created inside the tracker or passed to
   ``track_external`` are seen (pass the model, the optimizer and the input tensors); a
   tracker cannot be reused for a second iteration, so every call builds a fresh one; the
   result depends on the state at entry (existing ``.grad`` tensors, optimizer state), so
   run the step once untracked first for a steady-state figure; on CUDA each storage is
   rounded up to 512 B, on CPU the count is exact ``numel * element_size``; allocator
   fragmentation, the CUDA context and kernel-internal scratch are not seen.
2. :func:`cuda_allocator_peak` (CUDA only): ``max_memory_allocated`` (live tensor blocks)
   and ``max_memory_reserved`` (caching-allocator footprint) after resetting peak stats.
3. :class:`NvmlSampler` (CUDA only, best effort): polls device-wide used memory from NVML in a
   background thread and reports the peak minus a baseline: one read before the workload's
   tensors exist (:func:`nvml_used_bytes`, after CUDA init plus one small allocation, so it
   holds the CUDA context) or, if none is given, the reading on entry (which after earlier
   steps also holds the allocator's pool: then only growth is seen). It includes other processes and the
   allocator's reserve, misses spikes shorter than the interval, and reports
   ``status="unavailable: ..."`` instead of raising when NVML cannot be used (no driver, no
   GPU, MIG without permission). Expected ordering: NVML >= reserved >= allocated.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import torch

from bench.measure.device import resolve_device

__all__ = [
    "MEMTRACKER_CATEGORIES",
    "CudaPeak",
    "NvmlSampler",
    "cuda_uuid",
    "nvml_handle",
    "nvml_used_bytes",
    "TrackedPeak",
    "cuda_allocator_peak",
    "tracked_peak",
]

_MIB = 2**20

MEMTRACKER_CATEGORIES: tuple[str, ...] = (
    "Parameter",
    "Buffer",
    "Gradient",
    "Activation",
    "Temp",
    "Optstate",
    "Other",
)


@dataclass(frozen=True)
class TrackedPeak:
    """MemTracker peak on one device: total bytes and the breakdown at the moment of the peak."""

    total_bytes: int
    by_category_bytes: dict[str, int]


@dataclass(frozen=True)
class CudaPeak:
    """CUDA caching-allocator peaks over one step, in MiB (bytes / 2**20)."""

    peak_alloc_mib: float
    peak_reserved_mib: float


def tracked_peak(
    step: Callable[[], object], *track: object, device: torch.device | str = "cpu"
) -> TrackedPeak:
    """Run ``step()`` once under a fresh MemTracker and return its peak on ``device``.

    ``track`` holds the objects created before the step that should count (modules,
    optimizers, input tensors); they are passed to ``MemTracker.track_external``.
    """
    if not callable(step):
        raise ValueError(f"Expected a callable step taking no arguments, got {type(step).__name__}.")
    dev = resolve_device(device)
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except Exception as exc:  # private API: absent in some builds/versions
        raise RuntimeError(
            f"MemTracker could not be imported from torch.distributed._tools.mem_tracker "
            f"in torch {torch.__version__} ({type(exc).__name__}: {exc})."
        ) from exc
    mt = MemTracker()
    try:
        mt.track_external(*track)
    except TypeError as exc:
        raise ValueError(
            "Expected track to hold only modules, optimizers, tensors or None, "
            f"but MemTracker rejected one: {exc}"
        ) from exc
    with mt:
        step()
    snapshot = mt.get_tracker_snapshot("peak")
    dev_snap = snapshot.get(dev)
    if not dev_snap:  # never a silent 0: the step ran on another device than the one asked about
        seen = ", ".join(str(d) for d in snapshot) or "none"
        raise RuntimeError(f"MemTracker saw no tensor on {dev} during the step (devices seen: {seen})")
    by_cat = dict.fromkeys(MEMTRACKER_CATEGORIES, 0)
    total = 0
    for key, nbytes in dev_snap.items():
        name = getattr(key, "value", key)
        if name == "Total":
            total = int(nbytes)
        else:
            by_cat[str(name)] = int(nbytes)
    return TrackedPeak(total_bytes=total, by_category_bytes=by_cat)


def cuda_allocator_peak(step: Callable[[], object], device: torch.device | str) -> CudaPeak:
    """Run ``step()`` once and return the CUDA allocator's peak allocated and reserved MiB."""
    if not callable(step):
        raise ValueError(f"Expected a callable step taking no arguments, got {type(step).__name__}.")
    dev = resolve_device(device)
    if dev.type != "cuda":
        raise ValueError(
            f"cuda_allocator_peak measures the CUDA caching allocator and needs a CUDA device, got {str(dev)!r}."
        )
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    step()
    torch.cuda.synchronize(dev)
    return CudaPeak(
        peak_alloc_mib=torch.cuda.max_memory_allocated(dev) / _MIB,
        peak_reserved_mib=torch.cuda.max_memory_reserved(dev) / _MIB,
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"


def cuda_uuid(cuda_index: int) -> str | None:
    """NVML's name for torch's cuda:N (`GPU-<uuid>`), read from an initialised CUDA runtime; None
    when torch cannot tell (older torch, no CUDA)."""
    try:
        uuid = torch.cuda.get_device_properties(cuda_index).uuid
    except Exception:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def nvml_handle(pynvml, cuda_index: int, uuid: str | None = None, environ=None):
    """The NVML handle of the GPU that is torch's cuda:`cuda_index`. NVML numbers GPUs by PCI bus
    and ignores CUDA_VISIBLE_DEVICES, while torch's ordinals count the visible GPUs in CUDA's order
    (fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID), so an ordinal is never used as an NVML
    index without this mapping:
    1. `uuid` given (the child, with CUDA initialised: `cuda_uuid`): by UUID;
    2. else through CUDA_VISIBLE_DEVICES (`environ`, default os.environ): a `GPU-`/`MIG-` entry by
       UUID; a number is a CUDA ordinal, and so is `cuda_index` when the variable is unset;
    3. a CUDA ordinal is an NVML index only when CUDA enumerates in PCI order: CUDA_DEVICE_ORDER=
       PCI_BUS_ID, one GPU, or GPUs all of one model (fastest first then keeps PCI order).
    Raises LookupError saying why when the GPU cannot be told (never another GPU's handle)."""
    environ = os.environ if environ is None else environ
    if uuid:
        return pynvml.nvmlDeviceGetHandleByUUID(uuid)
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
        if cuda_index >= len(entries):
            raise LookupError(f"cuda:{cuda_index} is not among CUDA_VISIBLE_DEVICES={visible!r}")
        entry = entries[cuda_index]
        if entry.startswith(("GPU-", "MIG-")):
            return pynvml.nvmlDeviceGetHandleByUUID(entry)
        if not (entry.isascii() and entry.isdigit()):
            raise LookupError(f"CUDA_VISIBLE_DEVICES entry {entry!r} is neither an index nor a UUID")
        ordinal = int(entry)
    else:
        ordinal = cuda_index
    count = int(pynvml.nvmlDeviceGetCount())
    if ordinal >= count:
        raise LookupError(f"CUDA ordinal {ordinal} but NVML sees {count} GPU(s)")
    if environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID" and count > 1:
        names = {_text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)}
        if len(names) > 1:
            raise LookupError(f"GPUs of {len(names)} models: CUDA numbers them fastest first, NVML by PCI bus; "
                              "set CUDA_DEVICE_ORDER=PCI_BUS_ID or give UUIDs in CUDA_VISIBLE_DEVICES")
    return pynvml.nvmlDeviceGetHandleByIndex(ordinal)


def nvml_missing(exc: BaseException) -> str:
    """The status of an NVML cell when pynvml cannot be imported (it is the optional `gpu` extra)."""
    return (f"unavailable: pynvml cannot be imported ({_one_line(exc)}); "
            "pip install -e '.[gpu]' installs it (package nvidia-ml-py)")


def nvml_used_bytes(device_index: int, uuid: str | None = None) -> tuple[int | None, str]:
    """(device-used bytes now, "ok") of the NVML device that is torch's cuda:`device_index`, or
    (None, "unavailable: <reason>"); never raises."""
    try:
        import pynvml
    except Exception as exc:
        return None, nvml_missing(exc)
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return None, f"unavailable: NVML init failed ({_one_line(exc)})"
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(nvml_handle(pynvml, device_index, uuid)).used), "ok"
    except Exception as exc:
        return None, f"unavailable: {_one_line(exc)}"
    finally:
        NvmlSampler._shutdown(pynvml)


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


class NvmlSampler:
    """Context manager sampling NVML device-used memory in a daemon thread.

    After ``__exit__``: ``status`` is ``"ok"`` or ``"unavailable: <reason>"``;
    ``peak_used_mib`` is the max sampled used memory minus ``baseline_used_mib`` (both MiB),
    ``None`` unless ``status == "ok"``; ``samples`` is the number of NVML reads.
    The baseline is ``baseline_used_bytes`` when given (read earlier with :func:`nvml_used_bytes`,
    e.g. right after CUDA init, before any tensor of the workload exists), else the used memory
    on entry. Read on entry after earlier steps, it would include the caching allocator's pool
    those steps left reserved, and the peak would show only new growth (close to 0 for a
    repeated step). Initialise CUDA before taking either baseline so that it holds the CUDA
    context, and call ``torch.cuda.synchronize()`` at the end of the block so the work is done
    before the last sample. Never raises because NVML is missing or refuses a query.
    """

    def __init__(self, device_index: int = 0, interval_s: float = 0.005, uuid: str | None = None,
                 baseline_used_bytes: int | None = None) -> None:
        if isinstance(device_index, bool) or not isinstance(device_index, int) or device_index < 0:
            raise ValueError(f"Expected device_index to be an integer >= 0, got {device_index!r}.")
        if not (
            isinstance(interval_s, (int, float))
            and not isinstance(interval_s, bool)
            and math.isfinite(interval_s)
            and interval_s > 0
        ):
            raise ValueError(f"Expected interval_s to be a finite number of seconds > 0, got {interval_s!r}.")
        self.device_index = device_index  # torch's CUDA ordinal, mapped to NVML by `nvml_handle`
        self.uuid = uuid
        self.given_baseline_bytes = baseline_used_bytes
        self.interval_s = float(interval_s)
        self.status: str = "unavailable: sampler was never entered"
        self.peak_used_mib: float | None = None
        self.baseline_used_mib: float | None = None
        self.samples: int = 0
        self._nvml = None
        self._handle = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._max_used_bytes = 0
        self._baseline_bytes = 0
        self._error: str | None = None

    def __enter__(self) -> NvmlSampler:
        self.peak_used_mib = None
        self.baseline_used_mib = None
        self.samples = 0
        self._error = None
        self._stop.clear()
        try:
            import pynvml
        except Exception as exc:
            self.status = nvml_missing(exc)
            return self
        try:
            pynvml.nvmlInit()
        except Exception as exc:
            self.status = f"unavailable: NVML init failed ({_one_line(exc)})"
            return self
        try:
            handle = nvml_handle(pynvml, self.device_index, self.uuid)
        except Exception as exc:
            self.status = f"unavailable: cannot tell which NVML device is cuda:{self.device_index} ({_one_line(exc)})"
            self._shutdown(pynvml)
            return self
        try:
            entry = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            baseline = entry if self.given_baseline_bytes is None else int(self.given_baseline_bytes)
        except Exception as exc:
            self.status = f"unavailable: NVML memory query failed ({_one_line(exc)})"
            self._shutdown(pynvml)
            return self
        self._nvml = pynvml
        self._handle = handle
        self._baseline_bytes = baseline
        self._max_used_bytes = entry
        self.baseline_used_mib = baseline / _MIB
        self.samples = 1
        self.status = "sampling"
        self._thread = threading.Thread(target=self._poll, name="NvmlSampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> bool:
        try:
            used = int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        except Exception as exc:
            self._error = _one_line(exc)
            return False
        self.samples += 1
        if used > self._max_used_bytes:
            self._max_used_bytes = used
        return True

    def _poll(self) -> None:
        while not self._stop.is_set():
            if not self._sample():
                return
            self._stop.wait(self.interval_s)

    @staticmethod
    def _shutdown(pynvml: object) -> None:
        try:
            pynvml.nvmlShutdown()  # type: ignore[attr-defined]
        except Exception:
            pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._nvml is None:
            return None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is None:
            self._sample()  # one final read so very short steps still get a sample after the work
        if self._error is not None:
            self.status = f"unavailable: NVML query failed while sampling ({self._error})"
            self.peak_used_mib = None
        else:
            self.status = "ok"
            self.peak_used_mib = (self._max_used_bytes - self._baseline_bytes) / _MIB
        self._shutdown(self._nvml)
        self._nvml = None
        self._handle = None
        return None
