"""The sweep's point server (bench.sweep.runner.PointServer): each point still runs in its own process,
forked from a server that has imported torch once, and ends the same ways as a fresh child
(row, timeout, out-of-memory, crash); the server never outlives its user, nor its children it."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.grid import Point
from bench.sweep import runner

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the server is used on Linux only")

SMALL = dict(axis="seq_len", seq_len=16, batch_size=2, n_layers=1, n_heads=2, d_model=16, n_items=40,
             warmup=0, repeats=2, threads=1)
FOREVER = dict(SMALL, repeats=10**9, flops=False)  # timed steps until it is stopped


def processes_naming(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_until(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.fixture
def server():
    with runner.point_server() as started:
        assert started is not None and started.alive
        yield started


@pytest.mark.slow
def test_a_forked_point_measures_what_a_fresh_one_does(server):
    """Every counter but time gives the same figure in a forked child as in a fresh interpreter."""
    for model, overrides in (("sasrec", (("attention", "math"),)), ("mamba4rec", ())):
        point = Point(model, overrides, "train", **SMALL)
        forked, fresh = runner.run_isolated(point, server), runner.run_isolated(point)
        assert forked["status"] == fresh["status"] == "ok", (forked.get("reason"), fresh.get("reason"))
        for column in ("params_total", "fwd_flops_fvcore", "fwd_flops_flopcounter", "step_flops_flopcounter",
                       "fwd_flops_analytic", "tracked_peak_bytes", "tracked_categories_json", "attention_ops",
                       "flopcounter_device", "threads", "time_repeats"):
            assert forked[column] == fresh[column], column
        assert forked["time_median_ms"] > 0
    assert server.alive and len(processes_naming(str(server.folder))) == 1  # the server; no child left


def test_a_forked_point_times_out_and_is_killed(server):
    row = runner.run_isolated(Point("linrec", (), "train", time_limit_s=2, **FOREVER), server)
    assert row["status"] == "timeout" and "time limit" in row["reason"]
    assert wait_until(lambda: len(processes_naming(str(server.folder))) == 1)  # the child is gone
    assert server.alive  # and the server takes the next point
    assert runner.run_isolated(Point("linrec", (), "train", **SMALL), server)["status"] == "ok"


def test_a_forked_point_has_the_address_space_limit(server):
    big = dict(SMALL, seq_len=2048, batch_size=32, flops=False)
    row = runner.run_isolated(Point("sasrec", (("attention", "math"),), "train", mem_limit_gib=3.0, **big), server)
    assert row["status"] == "oom" and "allocate" in row["reason"]


def test_a_crashing_point_is_an_error_row(server, tmp_path):
    """A child that dies without a row (here: its point file is not valid JSON) is an error row
    with the last line of its stderr, and the server goes on."""
    bad = tmp_path / "point.json"
    bad.write_text("{not json")
    code, timed_out = server.run(bad, tmp_path / "row.json", tmp_path / "stderr", None, 60)
    assert (code, timed_out) == (1, False) and not (tmp_path / "row.json").exists()
    assert "JSONDecodeError" in (tmp_path / "stderr").read_text()
    row = runner.failure_row(Point("linrec", (), "train", **SMALL), code, False, (tmp_path / "stderr").read_text())
    assert row["status"] == "error" and "JSONDecodeError" in row["reason"]
    assert server.alive


@pytest.mark.slow
def test_a_server_killed_during_a_point_takes_its_child_and_the_next_point_runs_fresh(server):
    folder = str(server.folder)
    killer = threading.Timer(3.0, os.kill, (server.proc.pid, signal.SIGKILL))
    killer.start()
    try:
        row = runner.run_isolated(Point("linrec", (), "train", **FOREVER), server)
    finally:
        killer.cancel()
    assert row["status"] == "oom" and "SIGKILL" in row["reason"]  # as a SIGKILLed child would read
    assert wait_until(lambda: not processes_naming(folder))  # the child died with its server
    assert not server.alive and not Path(folder).exists()
    assert runner.run_isolated(Point("linrec", (), "train", **SMALL), server)["status"] == "ok"  # a fresh child


def test_the_server_ends_with_its_block_and_can_be_switched_off(monkeypatch):
    with runner.point_server() as started:
        folder = str(started.folder)
        assert len(processes_naming(folder)) == 1
    assert wait_until(lambda: not processes_naming(folder)) and not Path(folder).exists()
    monkeypatch.setenv(runner.SERVER_ENV, "0")
    with runner.point_server() as off:
        assert off is None
