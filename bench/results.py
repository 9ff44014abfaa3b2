"""The tidy results table: its columns (units in the names), the environment stamped on every row,
and atomic row appends.

One row per (model, variant, workload, grid point). A row is appended by rewriting the file to a
temporary sibling and renaming it over the original (`os.replace`), so a sweep killed at any
moment leaves either the old or the new file, never a torn line; `--resume` reads it back.
Appends hold an OS file lock (`filelock`, on the sibling `.NAME.lock`, kept after use) around the
read-modify-rename, so writers in several processes never lose or duplicate each other's rows;
`remove_stale_temporaries` deletes what a writer killed mid-append left behind.
A measurement that could not be made is an empty cell, and `status`/`reason` say why.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import io
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path

from filelock import FileLock


@dataclasses.dataclass(frozen=True, kw_only=True)
class Shape:
    """The grid's sizes, declared once: a sweep point (bench.grid.Point), an A/B pair
    (bench.ab.ABResult), a profile (bench.profile.ProfileRequest) and the gate's grid
    (bench.regress) are each a Shape plus their own fields, and the CSV's key columns are these
    names in this order. Keyword-only, so a subclass's own fields keep their positions."""

    seq_len: int  # L, the padded length (the model's max_len)
    batch_size: int  # B
    n_layers: int
    n_heads: int
    d_model: int  # d, the width
    n_items: int  # N, item ids including padding id 0

    def model_config(self) -> dict:
        """The shape as model config keys (models.build)."""
        return dict(n_items=self.n_items, max_len=self.seq_len, d_model=self.d_model,
                    n_layers=self.n_layers, n_heads=self.n_heads)


SHAPE_COLUMNS = tuple(field.name for field in dataclasses.fields(Shape))


def spec_label(model: str, variant) -> str:
    """A model's one spelling everywhere (CLI specs, `bench.train`'s `model_spec`, legends, tables):
    `sasrec` or `sasrec:attention=math`, from a row's `model` and `variant` (`default`, empty or
    NaN: no overrides). bench.grid.ModelSpec.label is this of a parsed spec."""
    variant = "" if variant is None else str(variant).strip()
    return str(model) if variant in ("", "default", "nan") else f"{model}:{variant}"


COLUMNS = [
    # what was measured
    "model", "variant", "workload", "status", "reason",
    # the grid point (axis = the swept column)
    "axis", *SHAPE_COLUMNS,
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
    "flops_analytic_reason",  # why the analytic cells are empty (official twins have no formula)
    "fvcore_reason",  # why fwd_flops_fvcore is empty (the JIT trace could not follow the code)
    # environment
    "device", "device_name", "dtype", "threads", "torch_version", "python_version",
    "git_commit", "timestamp_utc", "mem_limit_gib", "time_limit_s", "seed",
    "perf_env_json",  # the PERF_ENV_VARS that were set for the measuring process ({} if none)
    "faithful_to", "config_json",
    # official twins (model official/NAME): imports replaced by stand-ins, e.g. Mamba's CUDA scan by
    # selective_scan_ref, so the time is not the official kernel's; empty for our own models
    "official_substitutions",
    "flops_counted",  # true: the FLOP counters ran in the child; false: --no-flops (their cells empty)
    # utilisation (bench.measure.peak): step FLOPs (FlopCounterMode's, else the analytic formula's) per
    # second of median step time, and that over the device's peak at the row's dtype (MFU)
    "achieved_tflops", "peak_tflops", "peak_source", "mfu",
    # the tracked peak's breakdown by MemTracker category (Parameter, Gradient, Optstate, Activation, ...)
    "tracked_categories_json",
    # status `predicted`: how (bench.measure.predict.prediction_method); empty for a measured row
    "prediction",
    # torch.compile: the backend ("" = eager), the first call's wall time (compilation + one step),
    # and the graph breaks dynamo reported
    "compile_backend", "compile_time_s", "graph_breaks",
    "tracked_reason",  # why the tracked cells are empty (under --compile)
    # the train step's objective (models/losses.py: ce, sampled:K, bce:K); empty for infer and stream
    "loss",
    # the stream workload (bench/workload.py): how the model takes one new event (models/base.py:
    # cache, state, recompute) and the bytes it keeps per user between events (0: recompute)
    "stream_mode", "state_bytes_per_user",
    "time_p99_ms",  # the 99th percentile of the timed steps (meaningful with ~100 repeats: the stream's)
    "node",  # the host name of the machine that measured the row (the report warns when a line mixes nodes)
]
KEY_COLUMNS = ["model", "variant", "workload", *SHAPE_COLUMNS, "device", "loss"]
# key columns a results file from an older schema may lack (`row_key` reads an empty loss of a train
# row as "ce", the only loss there was)
KEY_COLUMNS_ADDED_LATER = ("loss",)
STATUSES = ("ok", "oom", "timeout", "error", "predicted")  # predicted: --predict, nothing ran
# How a row was measured, beyond its key: rows that differ in any of these are not one series
# (a resumed sweep refuses to mix them; figures never join them into one line).
SETTINGS_COLUMNS = ["prediction", "compile_backend", "threads", "time_warmup", "time_repeats", "seed", "flops_counted",
                    "dtype", "torch_version", "device_name", "perf_env_json"]
# The limits decide only whether a point fails (oom, timeout), not the value it measures: figures may
# join rows of other limits, but a resumed sweep keeps them equal too (a point that failed under one
# limit would never be retried under the other).
LIMIT_COLUMNS = ["mem_limit_gib", "time_limit_s"]
# The cells two measurements of one point with the same settings may differ in: clocks (and what is
# computed from them, the CPU peak being a calibration matmul), when, and on which machine. Every other
# cell is the same whichever executor ran the point (tests/test_executors.py).
RUN_VARYING_COLUMNS = ["time_median_ms", "time_iqr_ms", "time_p20_ms", "time_p80_ms", "time_min_ms", "time_p99_ms",
                       "achieved_tflops", "peak_tflops", "mfu", "compile_time_s", "timestamp_utc", "node"]


# Environment variables that change what a step costs without changing the code: threading,
# the CPU kernels' instruction set, how large host tensors get their pages (glibc tunables, a
# preloaded allocator, PyTorch's transparent-huge-page option), and the CUDA allocator/launch.
# On this project's VM, THP_MEM_ALLOC_ENABLE=1 made filling a fresh 64 MiB tensor 5.6x faster
# (reports/cpu-lrurec-scan-paths/README.md), so a row must say which of these were set.
PERF_ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY",
    "KMP_AFFINITY", "KMP_BLOCKTIME",
    "ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA",
    "THP_MEM_ALLOC_ENABLE", "LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_CONF",
    "CUDA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING", "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_NO_CUDA_MEMORY_CACHING", "CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE",
)


def perf_env(environ: dict | None = None, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """The PERF_ENV_VARS set in `environ` (default: this process), sorted by name, less `skip`."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in sorted(PERF_ENV_VARS) if name in environ and name not in skip}


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


def node_name() -> str:
    """This machine's host name (`socket.gethostname()`), the `node` cell of the rows it measures."""
    import socket

    return socket.gethostname()


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def row_key(row: dict) -> tuple:
    return tuple(str(row.get(c, "")) if c != "loss" else row_loss(row) for c in KEY_COLUMNS)


def differing_cells(rows_a: list[dict], rows_b: list[dict]) -> tuple[dict[str, int], int]:
    """Two measurements of the same points (results files read by `read_rows`): per column, how many
    points differ in a cell outside RUN_VARYING_COLUMNS, and how many such cells were compared.
    ValueError when the two do not hold the same points, each once."""
    a, b = ({row_key(row): row for row in rows} for rows in (rows_a, rows_b))
    if len(a) != len(rows_a) or len(b) != len(rows_b):
        raise ValueError("a point has two rows")
    if a.keys() != b.keys():
        raise ValueError(f"the files hold other points: {len(a.keys() - b.keys())} only in the first, "
                         f"{len(b.keys() - a.keys())} only in the second")
    compared = [c for c in COLUMNS if c not in RUN_VARYING_COLUMNS]
    counts: dict[str, int] = {}
    for key in a:
        for column in compared:
            if a[key][column] != b[key][column]:
                counts[column] = counts.get(column, 0) + 1
    return counts, len(a) * len(compared)


def row_loss(row: dict) -> str:
    """A row's train objective: its `loss` cell; a train row from before the column is `ce`; "" for
    infer and stream rows (they score the whole catalogue)."""
    loss = str(row.get("loss", "") or "")
    return loss or ("ce" if row.get("workload") == "train" else "")


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


def lock_for(path: str | Path) -> FileLock:
    """The inter-process lock of the file `path` (its sibling `.NAME.lock`; blocking by default)."""
    path = Path(os.path.realpath(path))  # one lock per file, whatever link it is reached through
    return FileLock(path.with_name(f".{path.name}.lock"))


# what `atomic_output` names its temporaries: "." + the file's name + "." + mkstemp's 8 characters + ".tmp"
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(folder: str | Path, names=None) -> list[Path]:
    """Delete the temporaries that a writer of `folder`'s files killed between creating and renaming
    its copy left behind: only files named as `atomic_output` names them, and, when `names` (a
    predicate on the target's file name) is given, only those of the files it accepts; a user's own
    `.notes.tmp` is never touched. Call it only while no writer can be running there (a sweep holds
    its folder's lock). Returns what was removed."""
    removed = []
    for stale in sorted(Path(folder).glob(".*.tmp")):
        match = _TEMPORARY.fullmatch(stale.name)
        if match and stale.is_file() and (names is None or names(match["name"])):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "w"):
    """Open a unique temporary sibling of `path` (`.NAME.XXXX.tmp`) for writing (`mode` "w" or
    "wb"); when the block ends, flush and fsync it and rename it over `path`. Readers see the old
    file or the whole new one, never a torn one; an error or interrupt inside the block removes the
    temporary and leaves `path` as it was. A symbolic link is written through (its target is
    replaced, the link kept). The one atomic writer of every command's files."""
    path = Path(os.path.realpath(path))  # through a symbolic link to its target, never replacing the link
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a whole text file atomically (see `atomic_output`)."""
    with atomic_output(path) as handle:
        handle.write(text)


def csv_text(columns: list[str], rows: list[dict]) -> str:
    """A whole CSV file ("\\n" line ends, header first); None becomes an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return buffer.getvalue()


def read_csv(path: Path) -> list[dict]:
    """Rows of any CSV file as dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def check_csv_columns(path: Path, columns: list[str]) -> None:
    """Raise ValueError when `path` exists with another header than `columns` (checked before
    any work whose result would be appended there)."""
    path = Path(path)
    if path.exists():
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), None)
        if header != list(columns):
            raise ValueError(f"{path} has other columns than this command writes; give a new file")


def append_csv_row(path: Path, columns: list[str], row: dict) -> None:
    """Append one row to a CSV file of `columns` atomically (the file rewritten through a
    temporary and renamed over the original), creating it with a header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock_for(path):
        check_csv_columns(path, columns)
        rows = read_csv(path) if path.exists() else []
        write_text_atomic(path, csv_text(columns, rows + [row]))


def append_row(path: Path, row: dict) -> None:
    """Append one row atomically (a rewritten copy renamed over the original). A file written by
    an older schema (a subset of today's columns, see `read_rows`) is rewritten under today's
    header first, its old rows with empty cells for the new columns. Holds `lock_for(path)`, so
    concurrent appenders in other processes each keep every row."""
    path = Path(path)
    line = _line(row)  # validates before anything is touched
    with lock_for(path):
        if not path.exists():
            old = header_line()
        else:
            old = path.read_text()
            if not old.startswith(header_line()):
                old = csv_text(COLUMNS, read_rows(path))  # read_rows refuses a foreign file
        write_text_atomic(path, old + line)


def read_rows(path: Path) -> list[dict]:
    """Rows of a results CSV as dicts of strings over today's COLUMNS. A file from an older schema
    (its header is today's columns minus some added since, in today's order, with every key
    column and `status`) reads with those cells empty; any other header is an error."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if header != COLUMNS:
            older = (header == [c for c in COLUMNS if c in header]
                     and set(KEY_COLUMNS + ["status"]) - set(KEY_COLUMNS_ADDED_LATER) <= set(header))
            if not older:
                raise ValueError(f"{path} was written with a different column set; use a new --out folder")
        return [{c: row.get(c) or "" for c in COLUMNS} for row in reader]
