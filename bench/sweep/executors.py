"""Where a sweep's points run: one after another on this machine (`local`), or as Ray tasks on a
cluster (`ray`). Either way each point is the same isolated point process (bench.sweep.runner) and
the sweep's driver is the only writer of results.csv: an executor hands back rows, never writes.

An executor is a context manager whose `events(points)` yields, for every point, `Started` (it
began on a node) and then `Finished` (its row and the seconds it took, seen from the driver):

- `LocalExecutor`: today's loop, one point at a time, forked from the point server.
- `RayExecutor` (`--executor ray`): every point is one Ray task that runs `run_isolated` on the node
  Ray picks, a streaming generator: it yields its host name at once, then where it runs (device
  name, torch, Python, commit), then its row. The driver joins (or starts) Ray and checks that
  some node can hold a point before the sweep writes anything. Resources per task: `--threads`
  CPUs, plus one GPU on CUDA, so no two points share a GPU and a node runs at most CPUs / threads
  at once (Ray counts CPUs; it does not pin cores). No retries: a task whose worker dies (killed,
  its node lost) becomes an `error` row naming the node it ran on (`oom` when Ray's memory monitor
  killed it); one whose own code raised says so. An interrupt (Ctrl-C, SIGTERM) is the sweep's own
  at any moment, also while Ray starts (`RayExecutor.__enter__`).
  The child's performance environment (results.PERF_ENV_VARS) is the driver's, not what Ray sets in
  its workers (OMP_NUM_THREADS), so a row reads the same through either executor; on CUDA,
  CUDA_VISIBLE_DEVICES is Ray's choice of GPU and is not recorded (bench.grid.Point.executor).
  The device peak (bench.measure.peak) is taken once per node by a task pinned there.
  A node that runs other code than the driver's (`code_fingerprint`) gives `error` rows.

Ray (https://docs.ray.io) is an optional extra: `pip install -e '.[ray]'`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from bench import results
from bench.cli import UsageError, available_cpus

REPO_ROOT = Path(__file__).resolve().parents[2]
EXECUTORS = ("local", "ray")
RAY_INSTALL = "pip install -e '.[ray]'"


class Started(NamedTuple):
    point: object  # bench.grid.Point
    node: str


class Finished(NamedTuple):
    point: object
    row: dict
    seconds: float | None  # from Started to Finished, on the driver's clock (the ETA's unit of cost); None: never started


class LocalExecutor:
    """One point at a time on this machine, each forked from a point server (bench.sweep.runner)."""

    name = "local"
    slots = 1  # points measured at once

    def __init__(self, log=print):
        self._log = log

    def __enter__(self):
        from bench.sweep import runner

        self._server_block = runner.point_server(log=self._log)
        self._server = self._server_block.__enter__()
        return self

    def __exit__(self, *exc):
        return self._server_block.__exit__(*exc)

    def events(self, points) -> Iterator[Started | Finished]:
        from bench.sweep import runner

        for point in points:
            yield Started(point, results.node_name())
            began = time.monotonic()
            row = runner.run_isolated(point, self._server)
            yield Finished(point, row, time.monotonic() - began)


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def check_ray_usable(threads: int) -> None:
    """UsageError (one line) unless Ray is installed and `--threads` is at least 1: each point
    reserves that many CPUs of its node, so every node measures with the same thread count."""
    if not ray_installed():
        raise UsageError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}")
    if threads < 1:
        raise UsageError("--executor ray needs --threads N (N >= 1): each point reserves N CPUs of its node, "
                         "so every node measures with the same thread count")


def code_fingerprint(root: Path = REPO_ROOT) -> str:
    """sha256 over the Python sources of `bench/` and `models/` (paths and bytes): equal on two
    machines iff they would measure with the same code, whatever git says."""
    digest = hashlib.sha256()
    for path in sorted(p for package in ("bench", "models") for p in (root / package).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def where_cells(point) -> dict:
    """The row cells that say where a point ran, taken on that node (no CUDA context is made)."""
    import platform

    import torch

    from bench.sweep.point import point_device_name

    return {"node": results.node_name(), "device_name": point_device_name(point),
            "torch_version": torch.__version__, "python_version": platform.python_version(),
            "git_commit": results.git_commit()}


def child_environ(driver_perf_env: dict[str, str], on_gpu: bool) -> dict[str, str | None]:
    """The performance variables a Ray task's point process gets: exactly the driver's (None
    removes one Ray set, such as OMP_NUM_THREADS), except, on a GPU task, CUDA_VISIBLE_DEVICES,
    which is the GPU Ray gave the task."""
    environ = {name: driver_perf_env.get(name) for name in results.PERF_ENV_VARS}
    if on_gpu:
        environ.pop("CUDA_VISIBLE_DEVICES")
    return environ


_LATE_PEAKS: dict = {}  # in a Ray worker: the peaks it measured itself (node id, device, dtype, threads)


def sweep_point(point_json: str, peaks: dict, driver_perf_env: dict, fingerprint: str):
    """The Ray task of one point, a streaming generator of three items: {"node"} at once (before
    torch is imported, so a worker killed seconds later is still named), then `where_cells`, then
    the row."""
    yield {"node": results.node_name()}
    import ray

    from bench.grid import Point
    from bench.measure.peak import device_peak
    from bench.sweep import runner
    from bench.sweep.point import base_row

    point = Point.from_json(point_json)
    where = where_cells(point)
    yield where
    if fingerprint != code_fingerprint():
        row = dict(base_row(point), **where, status="error",
                   reason=f"node {where['node']} runs other code than the sweep's driver (bench/ and models/ differ); "
                          "install the driver's commit on every node")
        yield row
        return
    if not point.predict:
        node_id = ray.get_runtime_context().get_node_id()
        peak = peaks.get(node_id) or _LATE_PEAKS.get((node_id, point.device, point.dtype, point.threads))
        if peak is None:  # a node that joined after the sweep began: once per worker process
            peak = device_peak(point.device, where["device_name"], point.dtype, point.threads)
            _LATE_PEAKS[(node_id, point.device, point.dtype, point.threads)] = peak
        point = dataclasses.replace(point, peak_tflops=peak[0], peak_source=peak[1])
    on_gpu = point.device.startswith("cuda") and not point.predict
    environ = child_environ(driver_perf_env, on_gpu)
    # a CPU point forks from this worker's point server, as the local executor's do; a GPU point
    # starts afresh (Ray may give a reused worker another GPU, and the server's environment is fixed)
    server = None if on_gpu else worker_point_server(environ)
    yield runner.run_isolated(point, server, environ=environ)


_WORKER_SERVER: list = []  # in a Ray worker: its PointServer, kept for the tasks it runs next


def worker_point_server(environ: dict):
    """This Ray worker's point server (bench.sweep.runner.PointServer) for `environ`, started on its
    first point and kept while the worker lives (it dies with the worker: parent-death signal);
    None where the sweep would not use one (`runner.server_wanted`) or it cannot start."""
    from bench.sweep import runner

    if not runner.server_wanted():
        return None
    if _WORKER_SERVER and (_WORKER_SERVER[0].environ != environ or not _WORKER_SERVER[0].alive):
        _WORKER_SERVER.pop().close()
    if not _WORKER_SERVER:
        _WORKER_SERVER.append(runner.PointServer(environ=environ))
    return _WORKER_SERVER[0] if _WORKER_SERVER[0].alive else None


def device_peak_probe(device: str, dtype: str, threads: int):
    """(node id, (peak TFLOP/s, source)) of the node this task runs on (bench.measure.peak)."""
    import ray

    from bench.measure.device import device_name
    from bench.measure.peak import device_peak

    return ray.get_runtime_context().get_node_id(), device_peak(device, device_name(device, False), dtype, threads)


def init_holding_interrupts(ray, kwargs: dict, address: str | None, then=None) -> tuple[list[int], object]:
    """`ray.init(**kwargs)`, then `then()` (its result returned beside the signals held; the local
    instance's record), with the sweep's interrupts held: a Ctrl-C or SIGTERM that arrives while
    Ray starts is returned (the signals held) for the caller to take once Ray is up, so that it can
    stop it; a second one interrupts at once (Ray may be stuck). Without this, a Ctrl-C inside
    ray.init crashed the interpreter (exit 139) or left Ray's agents running unrecorded, and a
    SIGTERM met the handler ray.init installs (`sys.exit`: exit 15, or swallowed by one of its
    steps, the sweep running on). UsageError when Ray cannot start or be joined."""
    held: list[int] = []

    def hold(signum, frame):
        if held:
            raise KeyboardInterrupt(f"signal {signum}")
        held.append(signum)

    handlers = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    utils = getattr(getattr(ray, "_private", None), "utils", None)  # where ray.init sets its SIGTERM handler
    set_sigterm_handler = getattr(utils, "set_sigterm_handler", None)
    if set_sigterm_handler is not None:
        utils.set_sigterm_handler = lambda handler: None
    done = None
    try:
        ray.init(**kwargs)
        done = then() if then is not None else None
    except SystemExit:  # a Ray that set its handler elsewhere: its exit is the sweep's interrupt
        held.append(signal.SIGTERM)
    except (ConnectionError, RuntimeError, ValueError) as err:
        with contextlib.suppress(Exception):
            ray.shutdown()
        where = "start a local Ray instance" if address is None else f"connect to the Ray cluster at {address}"
        raise UsageError(f"could not {where}: {plain(err)}") from None
    finally:
        if set_sigterm_handler is not None:
            utils.set_sigterm_handler = set_sigterm_handler
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return held, done


PEAK_PROBE_TIMEOUT_S = 300  # a node too busy to run the calibration in this time gets no peak


def plain(err: BaseException | str) -> str:
    """An error's text on one line without the terminal colour codes Ray puts in task errors."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split())


class RayExecutor:
    """Points as Ray tasks on a local instance (`address` None: started here, stopped at the end)
    or a running cluster (`auto`, or HOST:PORT). See the module docstring."""

    name = "ray"

    def __init__(self, address: str | None, threads: int, device: str, dtype: str = "fp32", predict: bool = False,
                 log=print):
        check_ray_usable(threads)
        self.address, self.threads, self.device, self.dtype, self.predict = address, threads, device, dtype, predict
        self._log = log
        self.on_gpu = device.startswith("cuda") and not predict  # a predicted point runs on a CPU
        self.slots = 1
        self.peaks: dict = {}
        self._marker = None  # the local instance's record (record_local_instance)
        self._pending: list = []

    # ------------------------------------------------------------------ connect and check the cluster
    def __enter__(self):
        import logging

        # Ray's C++ failure handler would take SIGTERM from the sweep (printing a stack, then abort:
        # exit 134, no clean-up); read when ray is imported, so set before (the local instance's
        # processes inherit it: a crashing Ray process prints no stack)
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        import ray

        kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        if self.address is None:  # a local instance of this machine, stopped when the sweep ends
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            os.environ.setdefault("RAY_task_oom_retries", "0")  # a point killed for memory is an oom row, not rerun
            # the CPUs this process may use (its affinity mask, as the local executor), not all the machine's
            kwargs.update(address="local", num_cpus=available_cpus())
        else:
            check_reachable(self.address)
            kwargs.update(address=self.address)
        held, self._marker = init_holding_interrupts(
            ray, kwargs, self.address, then=record_local_instance if self.address is None else None)
        try:
            if held:
                raise KeyboardInterrupt(f"signal {held[0]}")
            self._check_capacity(ray)
            if not self.predict:  # nothing is timed, so no utilisation
                self.measure_peaks()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _fits(self, resources: dict) -> int:
        """How many points at once a node with `resources` holds."""
        fit = int(resources.get("CPU", 0) // self.threads)
        return min(fit, int(resources.get("GPU", 0))) if self.on_gpu else fit

    def _check_capacity(self, ray) -> None:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        fits = {n["NodeID"]: self._fits(n.get("Resources", {})) for n in nodes}
        self.slots = sum(fits.values())
        self.nodes = [n for n in nodes if fits[n["NodeID"]] > 0]
        if not self.nodes:
            need = f"{self.threads} CPUs" + (" and a GPU" if self.on_gpu else "")
            have = "; ".join(f"{n.get('NodeManagerHostname', '?')}: {n.get('Resources', {}).get('CPU', 0):g} CPUs, "
                             f"{n.get('Resources', {}).get('GPU', 0):g} GPUs" for n in nodes) or "no node"
            raise UsageError(f"no node of the Ray cluster can run a point: each needs {need} (--threads {self.threads}"
                             f"{', --device cuda' if self.on_gpu else ''}); the cluster has {have}")
        self._log(f"Ray: {len(self.nodes)} node(s) ({', '.join(n.get('NodeManagerHostname', '?') for n in self.nodes)}), "
                  f"{self.slots} point(s) at once ({self.threads} CPUs{' + 1 GPU' if self.on_gpu else ''} each)")

    def measure_peaks(self) -> None:
        """The device peak of every node, each measured by one task pinned to it (bench.measure.peak)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(device_peak_probe)
        refs = [task.options(num_cpus=self.threads, num_gpus=1 if self.on_gpu else 0, max_retries=0,
                             scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(self.device, self.dtype, self.threads) for n in self.nodes]
        for node, ref in zip(self.nodes, refs):
            name = node.get("NodeManagerHostname", "?")
            try:
                node_id, (peak, source) = ray.get(ref, timeout=PEAK_PROBE_TIMEOUT_S)
            except (ray.exceptions.RayError, ValueError) as err:  # its rows then say so (peak_source)
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                node_id, peak, source = node["NodeID"], None, f"not measured on {name}: {type(err).__name__}: {plain(err)[:150]}"
            self.peaks[node_id] = (peak, source)
            shown = "unknown" if peak is None else f"{peak:.3f} TFLOP/s"
            self._log(f"device peak on {name}: {shown} ({source})")

    # ------------------------------------------------------------------ run
    def events(self, points) -> Iterator[Started | Finished]:
        import ray

        task = ray.remote(sweep_point)
        perf_env, fingerprint = results.perf_env(), code_fingerprint()
        state = {}  # generator -> [point, where cells or None, monotonic start]
        for point in points:
            gen = task.options(num_cpus=self.threads, num_gpus=1 if self.on_gpu else 0,
                               num_returns="streaming", max_retries=0, retry_exceptions=False).remote(
                point.to_json(), self.peaks, perf_env, fingerprint)
            state[gen] = [point, None, None]
        self._pending = list(state)
        while self._pending:
            ready, self._pending = ray.wait(self._pending, num_returns=1, timeout=1.0)
            for gen in ready:
                point, where, began = state[gen]
                try:
                    value = ray.get(next(gen))
                except StopIteration:  # the task ended without a row (it always yields one)
                    value = ray.exceptions.RayError("the task ended without a row")
                except ray.exceptions.RayError as err:
                    value = err
                if isinstance(value, BaseException):
                    if where is None and len(self.nodes) == 1:  # it can only have run there
                        where = {"node": self.nodes[0].get("NodeManagerHostname", "")}
                    yield Finished(point, lost_row(point, where, value), None if began is None else time.monotonic() - began)
                elif "status" in value:  # the row
                    yield Finished(point, value, time.monotonic() - began)
                else:  # where it runs: the node at once, then the rest of where_cells
                    self._pending.append(gen)
                    state[gen][1] = value
                    if began is None:
                        state[gen][2] = time.monotonic()
                        yield Started(point, value["node"])

    def __exit__(self, *exc):
        import ray

        for gen in self._pending:  # an interrupted sweep: stop what still runs (its point process dies with it)
            with contextlib.suppress(Exception):  # already finished or gone
                ray.cancel(gen, force=True)
        self._pending = []
        ray.shutdown()  # stops a local instance started here; from a cluster it only disconnects
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)
        return False


# ---------------------------------------------------------------------- a killed driver's local instance
# Ray stops the local instance it started when the driver exits, but a SIGKILLed driver leaves some of
# its processes behind (Ray 2.60: the dashboard and runtime-env agents, ~170 MiB, reparented to init).
# So a driver records its instance's processes (pid and start time) in the temporary directory, and
# the next sweep on this machine kills those of drivers that are no longer alive.
RAY_MARKER_PREFIX = "bench-ray-"


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time in clock ticks) of every process (Linux /proc; {} elsewhere)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(stat.parent.name)] = (int(fields[1]), fields[19])  # ppid, starttime (stat fields 4, 22)
    return table


def record_local_instance(tmp_root: str | Path | None = None) -> Path | None:
    """Write `bench-ray-<pid>.json`: the processes this driver has started (its Ray instance)."""
    import json
    import tempfile

    table = _process_table()
    if not table:
        return None
    me, family, grew = os.getpid(), {os.getpid()}, True
    while grew:
        grown = family | {pid for pid, (ppid, _) in table.items() if ppid in family}
        family, grew = grown, len(grown) > len(family)
    marker = Path(tmp_root or tempfile.gettempdir()) / f"{RAY_MARKER_PREFIX}{me}.json"
    marker.write_text(json.dumps([[pid, table[pid][1]] for pid in sorted(family - {me})]))
    return marker


def remove_orphaned_ray_instances(tmp_root: str | Path | None = None) -> list[int]:
    """Kill what the local Ray instances of dead drivers left running (`record_local_instance`), each
    process only if it still has the start time recorded (never a reused pid). Returns the pids killed."""
    import json
    import signal
    import tempfile

    from bench.sweep.runner import _pid_alive

    killed = []
    table = None
    for marker in Path(tmp_root or tempfile.gettempdir()).glob(f"{RAY_MARKER_PREFIX}*.json"):
        try:
            driver = int(marker.stem.removeprefix(RAY_MARKER_PREFIX))
        except ValueError:
            continue
        if _pid_alive(driver):
            continue
        table = _process_table() if table is None else table
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError):
            recorded = []
        for pid, started in recorded:
            if table.get(pid, (None, None))[1] == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        marker.unlink(missing_ok=True)
    return killed


def lost_row(point, where: dict | None, err: BaseException) -> dict:
    """The row of a point whose Ray task died without a row: `oom` when Ray's memory monitor killed
    its worker, else `error`; either names the node it ran on (unknown if it had not started)."""
    import ray

    from bench.sweep.point import base_row

    row = base_row(point)
    node = "an unknown node (the task had not started)"
    if where is not None:
        row.update(where)
        node = f"node {where['node']}"
    else:
        row["node"] = ""
    detail = plain(err)[:200]
    if isinstance(err, ray.exceptions.OutOfMemoryError):
        row["status"], row["reason"] = "oom", f"killed by Ray's memory monitor on {node}"
    elif isinstance(err, ray.exceptions.RayTaskError):  # the task's own code raised (its worker lives)
        cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
        text = plain(cause)[:200]
        row["status"], row["reason"] = "error", f"the point's Ray task failed on {node}: {type(cause).__name__}: {text}"
    else:
        row["status"], row["reason"] = "error", f"Ray worker died on {node}: {type(err).__name__}: {detail}"
    return row


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """UsageError unless `address` is `auto` or a HOST:PORT (optionally ray://) that accepts a TCP
    connection within `timeout_s`: Ray itself retries an unanswered address for minutes (823 s
    for 127.0.0.1:1 with Ray 2.60), logging a warning every few seconds."""
    import socket

    if address == "auto":
        return
    if address.startswith("ray://"):
        raise UsageError(f"--ray-address {address}: Ray Client (ray://) is not supported; run the sweep on a node of the "
                         "cluster with --ray-address auto (or the head's HOST:PORT)")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r} is not `auto` or HOST:PORT (such as 10.0.0.1:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise UsageError(f"--ray-address {address}: nothing answers there ({err.strerror or err}); start the "
                         "cluster's head with `ray start --head`, or give its address") from None


def make_executor(name: str, address: str | None, threads: int, device: str, dtype: str = "fp32",
                  predict: bool = False, log=print):
    """The executor `--executor NAME` asks for (its context not yet entered)."""
    if name == "ray":
        return RayExecutor(address, threads, device, dtype, predict, log)
    return LocalExecutor(log)
