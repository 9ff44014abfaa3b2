"""Run one point in a fresh process, so no model's caches, allocator state or crash reach the next.

The child (`python -m bench.point`) writes its row as JSON; the parent turns every way a child can
end into a row:
- the child's own row: status `ok`, or `oom` / `error` for exceptions it caught;
- killed by SIGKILL (the kernel's OOM killer on a machine without swap): `oom`;
- past the point's time limit: the process group is killed, status `timeout`;
- any other exit without a row: `error`, with the last line of its stderr.
On the CPU an address-space limit (`mem_limit_gib`) makes an over-large allocation fail inside the
child (recorded as `oom`) before the kernel has to kill anything.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.grid import Point
from bench.point import base_row

REPO_ROOT = Path(__file__).resolve().parent.parent


def _limit_address_space(gib: float | None):
    if gib is None:
        return None

    def apply():
        limit = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


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


def run_isolated(point: Point) -> dict:
    """Measure `point` in a child process and return its row (never raises for the child's fate)."""
    with tempfile.TemporaryDirectory(prefix="bench-point-") as tmp:
        spec_path, row_path, err_path = Path(tmp, "point.json"), Path(tmp, "row.json"), Path(tmp, "stderr")
        spec_path.write_text(point.to_json())
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        with open(err_path, "w") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.point", str(spec_path), str(row_path)],
                stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO_ROOT, env=env,
                start_new_session=True, preexec_fn=_limit_address_space(point.mem_limit_gib))
            try:
                returncode = child.wait(timeout=point.time_limit_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                returncode = child.wait()
                timed_out = True
            except BaseException:  # Ctrl-C: never leave an orphan child running
                os.killpg(child.pid, signal.SIGKILL)
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
