"""Run one point in a fresh process, so no model's caches, allocator state or crash reach the next.

The child (`python -m bench.point`) writes its row as JSON; the parent turns every way a child can
end into a row:
- the child's own row: status `ok`, or `oom` / `error` for exceptions it caught;
- killed by SIGKILL (the kernel's OOM killer on a machine without swap): `oom`;
- past the point's time limit: the process group is killed, status `timeout`;
- any other exit without a row: `error`, with the last line of its stderr.
On the CPU an address-space limit (`mem_limit_gib`) makes an over-large allocation fail inside the
child (recorded as `oom`) before the kernel has to kill anything.

A child never outlives the sweep: on Linux it asks the kernel for SIGKILL when its parent dies
(`prctl(PR_SET_PDEATHSIG)`), so even a SIGKILLed sweep leaves no point running; Ctrl-C and SIGTERM
kill its process group. Each point's scratch folder is named after the sweep's pid
(`bench-point-<pid>-*` in the temporary directory); `remove_orphaned_point_dirs` deletes those of
sweeps that are no longer alive.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.grid import Point
from bench.point import base_row

REPO_ROOT = Path(__file__).resolve().parent.parent


POINT_DIR_PREFIX = "bench-point-"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc() if sys.platform.startswith("linux") else None


def _child_setup(gib: float | None, parent_pid: int):
    """What the child runs between fork and exec: die with the parent (Linux), then the
    address-space limit. Async-signal-safe enough for preexec_fn: no allocation-heavy Python."""

    def apply():
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before the request took effect
                os._exit(1)
        if gib is not None:
            limit = int(gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_point_dirs(tmp_root: str | Path | None = None) -> list[Path]:
    """Delete the `bench-point-<pid>-*` scratch folders whose sweep (pid) is no longer running
    (left by a SIGKILLed sweep). Returns what was removed."""
    root = Path(tmp_root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{POINT_DIR_PREFIX}*"):
        match = re.match(rf"{POINT_DIR_PREFIX}(\d+)-", folder.name)
        if match and folder.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def default_mem_limit_gib(device: str) -> float | None:
    """90% of physical memory on the CPU; none on CUDA (its driver maps huge address ranges)."""
    if device.startswith("cuda"):
        return None
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return round(0.9 * pages * page_size / 2**30, 1)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _kill_group(pid: int) -> None:
    """SIGKILL the child's process group; it may already be gone (an interrupt that lands just as
    the child was reaped), which is no error."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# torch.compile's on-disk caches (inductor's FX graph and kernel caches, Triton's kernels): a second
# compile of the same graph loaded from them took 5.5 s where the first took 28 s (RecGRELA, B=64, L=200,
# this CPU), so a point compiles with empty ones in its scratch folder: `compile_time_s` is always a cold
# compile, whatever ran before on the machine.
COMPILE_CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def cold_compile_caches(scratch: Path) -> dict[str, str]:
    """The environment that points torch.compile's caches at new empty folders under `scratch`."""
    return {var: str(scratch / var.lower()) for var in COMPILE_CACHE_VARS}


def run_isolated(point: Point) -> dict:
    """Measure `point` in a child process and return its row (never raises for the child's fate)."""
    with tempfile.TemporaryDirectory(prefix=f"{POINT_DIR_PREFIX}{os.getpid()}-") as tmp:
        spec_path, row_path, err_path = Path(tmp, "point.json"), Path(tmp, "row.json"), Path(tmp, "stderr")
        spec_path.write_text(point.to_json())
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        if point.compile:
            env.update(cold_compile_caches(Path(tmp)))
        with open(err_path, "w") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.point", str(spec_path), str(row_path)],
                stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO_ROOT, env=env,
                start_new_session=True, preexec_fn=_child_setup(point.mem_limit_gib, os.getpid()))
            try:
                returncode = child.wait(timeout=point.time_limit_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_group(child.pid)
                returncode = child.wait()
                timed_out = True
            except BaseException:  # Ctrl-C: never leave an orphan child running
                _kill_group(child.pid)
                child.wait()
                raise
        if row_path.exists() and not timed_out:
            return json.loads(row_path.read_text())
        return failure_row(point, returncode, timed_out, err_path.read_text(errors="replace"))


def failure_row(point: Point, returncode: int, timed_out: bool, stderr: str) -> dict:
    """The row of a child that left no row of its own: timeout, SIGKILL (oom) or a crash."""
    row = base_row(point)
    if timed_out:
        row["status"], row["reason"] = "timeout", f"exceeded the {point.time_limit_s} s time limit"
    elif returncode == -signal.SIGKILL:
        row["status"], row["reason"] = "oom", "killed by SIGKILL (the kernel's out-of-memory killer)"
    else:
        detail = _last_line(stderr) or "no message"
        row["status"], row["reason"] = "error", f"child exited with code {returncode}: {detail}"
    return row
