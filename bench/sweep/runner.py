"""Run one point in a fresh process, so no model's caches, allocator state or crash reach the next.

The child (`python -m bench.sweep.point`) writes its row as JSON; the parent turns every way a child can
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

A point server (`PointServer`, used by a sweep on Linux) saves each point the ~2.5 s of starting
Python and importing torch, torch._dynamo (which torch.optim pulls in) and fvcore: one
`python -m bench.sweep.point --serve DIR` process imports them once and runs nothing else; for each point
it forks a child, which is that point's own process exactly as above (its own session and process
group, SIGKILL when its parent dies, the address-space limit, stderr to the point's file, its row
as JSON) and is reaped by the server, which reports how it ended. The server itself dies with the
sweep (parent-death signal) and its children with it. Nothing has run in the server before a fork
(no tensor op, so no thread pool and no allocator state to inherit), so every point starts from the
same state a fresh `python -m bench.sweep.point` reaches after its imports. Points under `--compile` (whose
empty compile caches are set in the environment before torch reads it) and any sweep with
BENCH_POINT_SERVER=0 start a fresh interpreter per point instead; a server that cannot start or
dies is replaced by that path for the rest of the sweep.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from bench.grid import Point
from bench.sweep.point import base_row

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    """SIGKILL the child's process group (and the child, in case it has not made its group yet);
    either may already be gone (an interrupt that lands just as the child was reaped), which is no
    error."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
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


def _child_env(environ: dict[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with the repository on PYTHONPATH and `environ` applied (a None
    value removes the variable)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    for name, value in (environ or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_isolated(point: Point, server: PointServer | None = None, environ: dict[str, str | None] | None = None) -> dict:
    """Measure `point` in a child process and return its row (never raises for the child's fate).
    With a running `server` started with the same `environ` (and no --compile) the child is forked
    from it, else started afresh with `environ` applied to this process's environment (None removes
    a variable; bench.sweep.executors sets the driver's performance variables this way)."""
    with tempfile.TemporaryDirectory(prefix=f"{POINT_DIR_PREFIX}{os.getpid()}-") as tmp:
        spec_path, row_path, err_path = Path(tmp, "point.json"), Path(tmp, "row.json"), Path(tmp, "stderr")
        spec_path.write_text(point.to_json())
        if server is not None and server.alive and not point.compile and server.environ == environ:
            ended = server.run(spec_path, row_path, err_path, point.mem_limit_gib, point.time_limit_s)
            if ended is not None:
                returncode, timed_out = ended
                if row_path.exists() and not timed_out:
                    return json.loads(row_path.read_text())
                return failure_row(point, returncode, timed_out, err_path.read_text(errors="replace"))
            # the server could not take the point: it runs in a fresh interpreter below
        env = _child_env(environ)
        if point.compile:
            env.update(cold_compile_caches(Path(tmp)))
        with open(err_path, "w") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.sweep.point", str(spec_path), str(row_path)],
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


# --------------------------------------------------------------------------- point server

SERVER_ENV = "BENCH_POINT_SERVER"  # "0": every point starts a fresh interpreter
SERVER_START_TIMEOUT_S = 600  # its imports take seconds; far more only on a machine that is thrashing


def server_wanted() -> bool:
    """Whether a sweep forks its points from a PointServer: on Linux (fork after importing torch is
    not safe on macOS), unless BENCH_POINT_SERVER=0."""
    return sys.platform.startswith("linux") and os.environ.get(SERVER_ENV, "1") != "0"


class PointServer:
    """The parent's side of `python -m bench.sweep.point --serve DIR` (see the module docstring): one
    request per point, answered with the child's pid and then its exit code. `alive` turns False
    when the server cannot be used any more (it did not start, it died, a request failed); the
    caller then starts points afresh. Always `close()` it (or use `point_server()`)."""

    def __init__(self, log=None, environ: dict[str, str | None] | None = None):
        self.alive = False
        self.proc = None
        self.folder = Path(tempfile.mkdtemp(prefix=f"{POINT_DIR_PREFIX}{os.getpid()}-server-"))
        self._log = log
        self.environ = environ  # applied to its environment, which every forked point inherits (run_isolated)
        err = open(self.folder / "stderr", "w")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.sweep.point", "--serve", str(self.folder)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, bufsize=0, cwd=REPO_ROOT,
                env=_child_env(environ), start_new_session=True, preexec_fn=_child_setup(None, os.getpid()))
        except OSError as exc:
            self._give_up(f"could not start ({exc})")
            return
        finally:
            err.close()
        if self._read(SERVER_START_TIMEOUT_S) != {"ready": True}:
            self._give_up("did not start")
            return
        self.alive = True

    def _give_up(self, why: str) -> None:
        """Stop using the server; say why once (with the last line of its stderr, if any)."""
        detail = ""
        try:
            detail = _last_line((self.folder / "stderr").read_text(errors="replace"))
        except OSError:
            pass
        self.close()
        if self._log is not None:
            self._log(f"point server {why}{': ' + detail if detail else ''}; each point now starts a fresh interpreter")

    TIMEOUT = "timeout"

    def _read(self, timeout: float) -> dict | str | None:
        """The server's next reply line; TIMEOUT after `timeout` seconds without one; None when
        the server has ended (or wrote something else)."""
        if self.proc is None or self.proc.stdout is None:
            return None
        fd = self.proc.stdout.fileno()
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return self.TIMEOUT
            chunk = os.read(fd, 1)  # one byte at a time: never read past this reply
            if not chunk:
                return None
            line += chunk
        try:
            reply = json.loads(line)
        except ValueError:
            return None
        return reply if isinstance(reply, dict) else None

    def run(self, spec_path: Path, row_path: Path, err_path: Path, mem_limit_gib: float | None,
            time_limit_s: int) -> tuple[int, bool] | None:
        """Run one point in a child forked by the server: (returncode, timed_out) as for a fresh
        child (a negative returncode is the signal that ended it), or None if the server could not
        start the child (nothing ran; the caller starts it afresh)."""
        request = {"point": str(spec_path), "row": str(row_path), "stderr": str(err_path),
                   "mem_limit_gib": mem_limit_gib}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
        except (OSError, ValueError):
            self._give_up("stopped")
            return None
        started = self._read(60)
        if not isinstance(started, dict) or not isinstance(started.get("pid"), int):
            self._give_up("did not fork")
            return None
        pid = started["pid"]
        try:
            ended = self._read(time_limit_s)
            timed_out = ended == self.TIMEOUT
            if timed_out:
                _kill_group(pid)
                ended = self._read(60)
        except BaseException:  # Ctrl-C: never leave the point running
            _kill_group(pid)
            self.close()
            raise
        if not isinstance(ended, dict) or not isinstance(ended.get("returncode"), int):
            # the server died while the child ran (the child then died with it): report how the
            # server ended, as if it had been the child (SIGKILL: the kernel's out-of-memory killer)
            _kill_group(pid)
            code = self.proc.wait() if self.proc is not None else 1
            self._give_up("ended during a point")
            return (code if code < 0 else 1), timed_out
        return int(ended["returncode"]), timed_out

    def close(self) -> None:
        """End the server (closing its input ends its loop; SIGKILL if it does not) and remove its folder."""
        self.alive = False
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
            with contextlib.suppress(OSError, ValueError):
                proc.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def point_server(log=None) -> Iterator[PointServer | None]:
    """A PointServer for the duration of the block when `server_wanted()`, else None."""
    server = PointServer(log) if server_wanted() else None
    try:
        yield server if server is not None and server.alive else None
    finally:
        if server is not None:
            server.close()


def preload() -> None:
    """What every point imports, imported once by the server before it forks (nothing is run)."""
    import torch._dynamo  # torch.optim's first optimizer imports it (~1 s)
    import torch.distributed._tools.mem_tracker
    import torch.nn.attention
    import torch.utils.flop_counter  # noqa: F401

    import bench.measure.dispatch
    import bench.measure.memory
    import bench.measure.peak
    import bench.measure.predict
    import bench.measure.timing
    import bench.workload  # noqa: F401
    from bench.measure.flops import import_fvcore

    import_fvcore()


def serve(argv: list[str]) -> int:
    """`python -m bench.sweep.point --serve DIR`: the server's loop. Reads one JSON request per line on
    stdin (point, row, stderr paths, mem_limit_gib), forks the point's child, writes {"pid"} and,
    once the child has ended, {"returncode"} (negative: the signal), one JSON line each; ends when
    stdin closes. DIR (the server's scratch folder, removed by the sweep) is only named so that the
    process can be told apart; the server writes nothing there itself."""
    if len(argv) != 1:
        print("usage: python -m bench.sweep.point --serve DIR", file=sys.stderr)
        return 2
    preload()
    out = sys.stdout.buffer

    def reply(obj: dict) -> None:
        out.write((json.dumps(obj) + "\n").encode())
        out.flush()

    reply({"ready": True})
    server_pid = os.getpid()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _forked_point(request, server_pid)  # never returns
        reply({"pid": pid})
        _, status = os.waitpid(pid, 0)
        reply({"returncode": os.waitstatus_to_exitcode(status)})
    return 0


def _forked_point(request: dict, server_pid: int) -> None:
    """In the forked child: become the point's own process (as `_child_setup` and Popen's
    start_new_session make a fresh one), run it, and exit without returning to the server's loop."""
    code = 1
    try:
        os.setsid()
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != server_pid:  # the server died before the request took effect
                os._exit(1)
        gib = request.get("mem_limit_gib")
        if gib is not None:
            limit = int(gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        devnull = os.open(os.devnull, os.O_RDWR)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(err, 2)
        os.close(devnull)
        os.close(err)
        sys.stdin = open(os.devnull)  # the server's request pipe is not the point's
        from bench.sweep.point import main

        code = main([request["point"], request["row"]])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
