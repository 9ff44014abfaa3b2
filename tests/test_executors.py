"""`--executor local|ray` (bench.sweep.executors): the same rows whichever runs the points, a killed
Ray worker is an error row naming its node, and a killed driver resumes without losing or
duplicating a row. The Ray tests run a local Ray instance (all CPUs of this machine: 2 on CI)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bench import results
from bench.grid import Point
from bench.sweep import executors, sweep

REPO = Path(__file__).resolve().parents[1]
TINY = ["--axis", "seqlen", "--batch-size", "2", "--layers", "1", "--heads", "1", "--d-model", "8",
        "--warmup", "0", "--repeats", "1", "--threads", "1"]


def run_sweep_cli(argv: list[str], **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.sweep", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def keyed(csv_path: Path) -> dict:
    rows = results.read_rows(csv_path)
    keyed = {results.row_key(row): row for row in rows}
    assert len(keyed) == len(rows), "a point has two rows"
    return keyed


# ---------------------------------------------------------------------------------- without Ray


@pytest.mark.parametrize("argv, message", [
    (["--ray-address", "auto"], "--ray-address joins a Ray cluster; it needs --executor ray"),
    (["--executor", "ray", "--threads", "0"], "--executor ray needs --threads N (N >= 1)"),
    (["--executor", "dask"], "invalid choice: 'dask'"),
])
def test_executor_flags_are_checked_in_one_line(argv, message, tmp_path, capsys):
    base = ["--axis", "seqlen", "--values", "8", "--models", "sasrec", "--out", str(tmp_path / "out")]
    assert sweep.main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_ray_not_installed_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "ray_installed", lambda: False)
    code = sweep.main(["--axis", "seqlen", "--values", "8", "--models", "sasrec", "--threads", "1",
                       "--executor", "ray", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "bench.sweep: error: --executor ray needs Ray, which is not installed: pip install -e '.[ray]'"
    assert not (tmp_path / "out").exists()


def test_child_gets_the_drivers_performance_environment():
    driver = {"OMP_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "0,1"}
    environ = executors.child_environ(driver, on_gpu=False)
    assert set(environ) == set(results.PERF_ENV_VARS)
    assert environ["OMP_NUM_THREADS"] == "3" and environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert environ["MKL_NUM_THREADS"] is None  # removed if Ray set it: the driver has none
    assert "CUDA_VISIBLE_DEVICES" not in executors.child_environ(driver, on_gpu=True)  # Ray's GPU stays


def test_a_ray_gpu_point_does_not_record_its_assigned_gpu(monkeypatch):
    from bench.sweep.point import scheduler_assigned

    shape = dict(seq_len=8, batch_size=2, n_layers=1, n_heads=1, d_model=8, n_items=20)
    assert scheduler_assigned(Point("sasrec", (), "train", "seq_len", device="cuda", executor="ray", **shape)) == (
        "CUDA_VISIBLE_DEVICES",)
    assert scheduler_assigned(Point("sasrec", (), "train", "seq_len", device="cuda", **shape)) == ()
    assert scheduler_assigned(Point("sasrec", (), "train", "seq_len", device="cpu", executor="ray", **shape)) == ()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert results.perf_env(skip=("CUDA_VISIBLE_DEVICES",)) == {
        k: v for k, v in results.perf_env().items() if k != "CUDA_VISIBLE_DEVICES"}


def test_code_fingerprint_follows_every_source_file(tmp_path):
    for package in ("bench", "models"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("x = 1\n")
    first = executors.code_fingerprint(tmp_path)
    assert executors.code_fingerprint(tmp_path) == first
    (tmp_path / "models" / "a.py").write_text("x = 2\n")
    assert executors.code_fingerprint(tmp_path) != first
    assert len(executors.code_fingerprint(REPO)) == 16


def test_eta_is_shared_among_the_points_measured_at_once():
    shape = dict(batch_size=2, n_layers=1, n_heads=1, d_model=8, n_items=20)
    points = [Point("sasrec", (), "train", "seq_len", seq_len=n, **shape) for n in (8, 8, 8, 8, 8)]
    spent = [(points[0], 4.0)]
    assert sweep.estimate_remaining_s(spent, points[1:]) == pytest.approx(16.0)
    assert sweep.estimate_remaining_s(spent, points[1:], slots=2) == pytest.approx(8.0)
    assert sweep.estimate_remaining_s(spent, points[1:2], slots=4) == pytest.approx(4.0)  # one point: no sharing


def test_the_driver_writes_rows_as_points_finish_on_several_nodes(tmp_path, monkeypatch):
    """run_sweep over an executor that runs two points at once on two nodes and finishes them out
    of order: rows in the order they finished, each log line naming its node, the bar showing what
    still runs, a point lost before it started without a node."""
    import io

    from bench.sweep.executors import Finished, Started
    from bench.sweep.point import base_row

    monkeypatch.setenv("TERM", "xterm")
    shape = dict(batch_size=2, n_layers=1, n_heads=1, d_model=8, n_items=20)
    a, b, c = (Point("linrec", (), "train", "seq_len", seq_len=n, **shape) for n in (4, 8, 16))

    class TwoNodes:
        name, slots = "fake", 2

        def events(self, points):
            row = lambda p, node, status="ok": dict(base_row(p), node=node, status=status, time_median_ms=1.0)  # noqa: E731
            yield Started(a, "n1")
            yield Started(b, "n2")
            yield Finished(b, row(b, "n2"), 2.0)
            yield Finished(a, row(a, "n1"), 3.0)
            yield Finished(c, row(c, "", "error"), None)  # lost before it started

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    rows = sweep.run_sweep([a, b, c], tmp_path / "results.csv", False, progress=stream, executor=TwoNodes())
    assert [r["seq_len"] for r in rows] == [8, 4, 16]
    assert [r["seq_len"] for r in results.read_rows(tmp_path / "results.csv")] == ["8", "4", "16"]
    drawn = stream.getvalue()
    assert "now linrec train seq_len=4 on n1 (+1 more)" in drawn
    assert "[1/3] linrec train seq_len=8 on n2: ok 1.0 ms" in drawn and "[2/3] linrec train seq_len=4 on n1: ok" in drawn
    assert "[3/3] linrec train seq_len=16 on an unknown node: error" in drawn


def test_a_dead_drivers_ray_processes_are_stopped_and_no_other(tmp_path):
    """The record of a dead driver's local instance: its processes are killed only while their start
    time is the one recorded (a reused pid is never touched); a live driver's record is kept."""
    victim = subprocess.Popen(["sleep", "60"])
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        table = executors._process_table()
        dead_driver = max(table) + 100000  # no such process
        (tmp_path / f"bench-ray-{dead_driver}.json").write_text(
            f"[[{victim.pid}, \"{table[victim.pid][1]}\"], [{bystander.pid}, \"1\"]]")
        (tmp_path / f"bench-ray-{os.getpid()}.json").write_text(f"[[{bystander.pid}, \"{table[bystander.pid][1]}\"]]")
        assert executors.remove_orphaned_ray_instances(tmp_path) == [victim.pid]
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None
        assert [p.name for p in tmp_path.iterdir()] == [f"bench-ray-{os.getpid()}.json"]
    finally:
        for proc in (victim, bystander):
            proc.kill()
            proc.wait()


def test_a_lost_task_is_an_error_row_naming_its_node():
    ray = pytest.importorskip("ray")
    point = Point("sasrec", (), "train", "seq_len", seq_len=8, batch_size=2, n_layers=1, n_heads=1, d_model=8, n_items=20)
    row = executors.lost_row(point, {"node": "gpu-node-7"}, ray.exceptions.WorkerCrashedError())
    assert row["status"] == "error" and row["node"] == "gpu-node-7"
    assert row["reason"].startswith("Ray worker died on node gpu-node-7: WorkerCrashedError")
    oom = executors.lost_row(point, {"node": "gpu-node-7"}, ray.exceptions.OutOfMemoryError("killed"))
    assert oom["status"] == "oom" and oom["reason"] == "killed by Ray's memory monitor on node gpu-node-7"
    try:
        raise ValueError("a bug in the task")
    except ValueError as cause:
        failed = executors.lost_row(point, {"node": "n1"}, ray.exceptions.RayTaskError("sweep_point", "tb", cause))
    assert failed["status"] == "error"
    assert failed["reason"] == "the point's Ray task failed on node n1: ValueError: a bug in the task"
    unknown = executors.lost_row(point, None, ray.exceptions.WorkerCrashedError())
    assert unknown["node"] == "" and "an unknown node" in unknown["reason"]


# ---------------------------------------------------------------------------------- on a local Ray instance

needs_ray = pytest.mark.skipif(not executors.ray_installed(), reason="Ray is not installed (pip install -e '.[ray]')")


@needs_ray
@pytest.mark.slow
def test_both_executors_measure_the_same_rows(tmp_path):
    """The same sweep (two models, two workloads) through both executors: every cell equal apart
    from the clocks, the timestamp and the node (results.RUN_VARYING_COLUMNS)."""
    argv = TINY + ["--values", "16", "--models", "sasrec,lrurec", "--workload", "train,infer"]
    local = run_sweep_cli(argv + ["--out", str(tmp_path / "local")])
    out_local = local.communicate(timeout=600)[0]
    assert local.returncode == 0, out_local
    ray_run = run_sweep_cli(argv + ["--out", str(tmp_path / "ray"), "--executor", "ray"])
    out_ray = ray_run.communicate(timeout=600)[0]
    assert ray_run.returncode == 0, out_ray
    assert "[4/4]" in out_ray and " on " in out_ray and "Ray: 1 node(s)" in out_ray
    a, b = (results.read_rows(tmp_path / run / "results.csv") for run in ("local", "ray"))
    assert len(a) == 4 and all(row["status"] == "ok" for row in a)
    differing, compared = results.differing_cells(a, b)
    assert differing == {} and compared == 4 * (len(results.COLUMNS) - len(results.RUN_VARYING_COLUMNS))
    assert {row["node"] for row in b} == {results.node_name()}


def test_differing_cells_counts_what_two_runs_disagree_on():
    shape = dict(seq_len=8, batch_size=2, n_layers=1, n_heads=1, d_model=8, n_items=20)
    rows = [{**{c: "" for c in results.COLUMNS}, "model": "sasrec", "workload": "train", **{k: str(v) for k, v in shape.items()},
             "seq_len": str(n), "status": "ok", "time_median_ms": "1.0", "tracked_peak_bytes": "100"} for n in (8, 16)]
    other = [dict(row) for row in rows]
    other[0]["time_median_ms"], other[1]["node"] = "2.0", "elsewhere"  # run-varying: not counted
    assert results.differing_cells(rows, other)[0] == {}
    other[1]["tracked_peak_bytes"] = "101"
    assert results.differing_cells(rows, other)[0] == {"tracked_peak_bytes": 1}
    with pytest.raises(ValueError, match="other points"):
        results.differing_cells(rows, other[:1])
    with pytest.raises(ValueError, match="two rows"):
        results.differing_cells(rows + rows[:1], other)


def _kill_first_worker():
    """scripts/compare_executors.py's killer, which the closing figures used too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_executors", REPO / "scripts" / "compare_executors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.kill_first_worker


@needs_ray
@pytest.mark.slow
def test_a_killed_worker_is_an_error_row_and_the_sweep_finishes(tmp_path):
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_worker(), args=(killed, stop), daemon=True)
    killer.start()
    run = run_sweep_cli(TINY + ["--values", "8,16", "--models", "sasrec,lrurec", "--executor", "ray",
                                "--out", str(tmp_path / "out")])
    out = run.communicate(timeout=600)[0]
    stop.set()
    killer.join()
    assert run.returncode == 0, out
    assert len(killed) == 1, out
    rows = keyed(tmp_path / "out" / "results.csv")
    statuses = Counter(row["status"] for row in rows.values())
    assert len(rows) == 4 and statuses == Counter(ok=3, error=1), out
    (error,) = [row for row in rows.values() if row["status"] == "error"]
    assert error["node"] == results.node_name()
    assert error["reason"].startswith(f"Ray worker died on node {results.node_name()}: ")


@needs_ray
@pytest.mark.slow
def test_resume_after_killing_the_driver_loses_and_duplicates_nothing(tmp_path):
    argv = TINY + ["--values", "8,16,32", "--models", "sasrec,lrurec", "--executor", "ray", "--out", str(tmp_path / "out")]
    csv_path = tmp_path / "out" / "results.csv"
    driver = run_sweep_cli(argv)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (csv_path.exists() and len(results.read_rows(csv_path)) >= 1):
        time.sleep(0.1)
    driver.kill()  # SIGKILL: no clean-up of its own
    driver.communicate()
    before = keyed(csv_path)
    assert 1 <= len(before) < 6
    resumed = run_sweep_cli(argv + ["--resume"])
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert f"resuming: {len(before)} of 6 points already in" in out
    after = keyed(csv_path)  # keyed() fails on a duplicated point
    assert len(after) == 6 and all(row["status"] == "ok" for row in after.values())
    assert all(after[key] == row for key, row in before.items())  # the rows measured before the kill are kept as they were
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"bench-ray-{driver.pid}.json"))


@needs_ray
@pytest.mark.slow
def test_a_cluster_that_cannot_hold_a_point_is_refused_before_anything_is_written(tmp_path):
    threads = str((os.cpu_count() or 1) + 1)  # more CPUs than the local instance's one node has
    run = run_sweep_cli(TINY[:-1] + [threads, "--values", "8", "--models", "sasrec", "--executor", "ray",
                                     "--out", str(tmp_path / "out")])
    out = run.communicate(timeout=300)[0]
    assert run.returncode == 2, out
    assert out.strip().splitlines()[-1].startswith("bench.sweep: error: no node of the Ray cluster can run a point: "
                                                  f"each needs {threads} CPUs (--threads {threads}); the cluster has ")
    assert not (tmp_path / "out").exists()


def test_an_address_where_nothing_answers_is_refused_at_once():
    """Ray would retry an unanswered address for minutes (823 s for 127.0.0.1:1 here)."""
    import socket

    from bench.cli import UsageError

    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    executors.check_reachable(f"127.0.0.1:{port}")  # something answers
    with pytest.raises(UsageError, match=r"Ray Client \(ray://\) is not supported"):
        executors.check_reachable(f"ray://127.0.0.1:{port}")
    executors.check_reachable("auto")  # Ray finds it (or says in one line that it cannot)
    listening.close()
    began = time.monotonic()
    with pytest.raises(UsageError, match=f"--ray-address 127.0.0.1:{port}: nothing answers there"):
        executors.check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - began < 10
    for bad in ("", "head-node", "head:port"):
        with pytest.raises(UsageError, match="is not `auto` or HOST:PORT"):
            executors.check_reachable(bad)


@needs_ray
@pytest.mark.slow
@pytest.mark.parametrize("moment, sig", [("while Ray starts", signal.SIGTERM), ("while points run", signal.SIGINT)])
def test_an_interrupted_ray_sweep_exits_130_and_stops_its_instance(moment, sig, tmp_path):
    """ray.init installs its own SIGTERM handler and Ray's C++ one aborts (exit 134 or 15 before the
    fix, 139 for a Ctrl-C inside ray.init): the sweep must keep its own interrupt path."""
    csv_path = tmp_path / "out" / "results.csv"
    driver = run_sweep_cli(TINY + ["--values", "8,16", "--models", "sasrec,lrurec", "--executor", "ray",
                                   "--out", str(tmp_path / "out")])
    if moment == "while Ray starts":
        time.sleep(2.5)
    else:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (csv_path.exists() and results.read_rows(csv_path)):
            time.sleep(0.1)
    driver.send_signal(sig)
    out = driver.communicate(timeout=120)[0]
    assert driver.returncode == 130, out
    assert "Traceback" not in out and "SIGTERM received" not in out
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"bench-ray-{driver.pid}.json"))
