"""The tidy results table: its columns (units in the names), the environment stamped on every row,
and atomic row appends.

One row per (model, variant, workload, grid point). A row is appended by rewriting the file to a
temporary sibling and renaming it over the original (`os.replace`), so a sweep killed at any
moment leaves either the old or the new file, never a torn line; `--resume` reads it back.
A measurement that could not be made is an empty cell, and `status`/`reason` say why.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import os
import platform
import subprocess
import tempfile
from pathlib import Path

COLUMNS = [
    # what was measured
    "model", "variant", "workload", "status", "reason",
    # the grid point (axis = the swept column)
    "axis", "seq_len", "batch_size", "n_layers", "n_heads", "d_model", "n_items",
    # model facts
    "params_total", "params_trainable", "causal", "reconstruction",
    "attention_ops",  # attention kernels that actually ran (fused SDPA, its math fallback, softmax)
    # wall time of one step (train: forward + loss + backward + Adam; infer: forward + scores)
    "time_median_ms", "time_iqr_ms", "time_p20_ms", "time_p80_ms", "time_min_ms",
    "time_repeats", "time_warmup", "timer",
    # peak memory of one step: exact tensor accounting (any device), CUDA allocator, NVML
    "tracked_peak_bytes", "tracked_peak_mib", "tracked_activation_bytes",
    "cuda_peak_alloc_mib", "cuda_peak_reserved_mib", "nvml_peak_used_mib", "nvml_status",
    # FLOPs = 2 x multiply-adds of matrix-product ops, whole batch; counter named in the column
    "fwd_flops_fvcore", "fwd_flops_flopcounter", "step_flops_flopcounter",
    "fwd_flops_analytic", "step_flops_analytic", "fvcore_skipped_ops", "flopcounter_device",
    "scan_flops_analytic",  # element-wise recurrence work no counter sees (whole step; not in the above)
    # environment
    "device", "device_name", "dtype", "threads", "torch_version", "python_version",
    "git_commit", "timestamp_utc", "mem_limit_gib", "time_limit_s", "seed",
    "faithful_to", "config_json",
]
KEY_COLUMNS = ["model", "variant", "workload", "seq_len", "batch_size", "n_layers", "n_heads",
               "d_model", "n_items", "device"]
STATUSES = ("ok", "oom", "timeout", "error")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: Path | None = None) -> str:
    """HEAD's short hash, '-dirty' when the tree has uncommitted changes, '' outside git."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}-dirty" if head and dirty else head


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def row_key(row: dict) -> tuple:
    return tuple(str(row.get(c, "")) for c in KEY_COLUMNS)


def _line(row: dict) -> str:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"row has columns outside the schema: {sorted(unknown)}")
    buffer = io.StringIO()
    csv.DictWriter(buffer, COLUMNS, lineterminator="\n").writerow(
        {c: "" if row.get(c) is None else row.get(c) for c in COLUMNS})
    return buffer.getvalue()


def header_line() -> str:
    return ",".join(COLUMNS) + "\n"


def publish(tmp: str | Path, path: Path) -> None:
    """Move a finished temporary file over `path` with the permissions a plain open() would give
    (mkstemp creates files readable by the owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a whole file through a temporary sibling (fsync, then rename): readers see the old
    file or the new one, never a torn one; an interrupted write leaves no temporary behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_row(path: Path, row: dict) -> None:
    """Append one row atomically (a rewritten copy renamed over the original)."""
    path = Path(path)
    line = _line(row)  # validates before anything is touched
    old = path.read_text() if path.exists() else header_line()
    write_text_atomic(path, old + line)


def read_rows(path: Path) -> list[dict]:
    """Rows of a results CSV as dicts of strings; a header from another schema is an error."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != COLUMNS:
            raise ValueError(f"{path} was written with a different column set; use a new --out folder")
        return list(reader)
