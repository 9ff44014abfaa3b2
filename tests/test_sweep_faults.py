"""The sweep under faults: SIGKILL of the sweep at random moments, concurrent writers of one
results file, two sweeps on one folder. Counts are written to the test's log (run with `-s`):
kills / rows lost / duplicated / orphans / stray files; concurrent appends written / kept."""
from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import results
from bench.sweep import sweep

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and /proc are Linux's")

TINY = ["--models", "linrec", "--workload", "both", "--batch-size", "2", "--layers", "1", "--heads", "1",
        "--d-model", "8", "--n-items", "20", "--warmup", "0", "--repeats", "1", "--no-flops", "--threads", "1"]
VALUES = "4,6,8,10"


def _env(scratch: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(scratch))


def _point_children(scratch: Path) -> list[int]:
    """Pids of live `bench.sweep.point` processes whose point files lie under `scratch`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if b"bench.sweep.point" in cmdline and any(str(scratch).encode() in part for part in cmdline) and state != "Z":
            pids.append(int(entry.name))
    return pids


def _rows(csv_path: Path) -> list[tuple]:
    if not csv_path.exists():
        return []
    return [results.row_key(row) + (row["timestamp_utc"],) for row in results.read_rows(csv_path)]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_loses_and_duplicates_nothing(tmp_path):
    """20 SIGKILLs of the sweep process at random moments, each followed by `--resume`: no row
    that was in the file is ever lost, no point is written twice, no point's child outlives its
    sweep (parent-death signal), and the final resume leaves no temporary file and no scratch
    folder behind."""
    rng = random.Random(20261203)
    out, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    argv = [sys.executable, "-m", "bench.sweep", "--axis", "seqlen", "--values", VALUES, *TINY,
            "--out", str(out), "--resume"]
    kills, lost, orphans = 0, 0, 0
    seen: set = set()
    for _ in range(20):
        proc = subprocess.Popen(argv, cwd=REPO, env=_env(scratch), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 5.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        deadline = time.monotonic() + 3.0  # the kernel delivers the parent-death signal at once
        while _point_children(scratch) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = _point_children(scratch)
        orphans += len(alive)
        for pid in alive:  # do not leave them to the next test
            os.kill(pid, signal.SIGKILL)
        now = set(_rows(out / "results.csv"))
        lost += len(seen - now)
        seen |= now
    final = subprocess.run(argv, cwd=REPO, env=_env(scratch), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    keys = [row[:-1] for row in _rows(out / "results.csv")]
    duplicated = sum(n - 1 for n in collections.Counter(keys).values())
    expected = 2 * len(VALUES.split(","))
    stray = [p.name for p in out.glob(".*.tmp")] + [p.name for p in scratch.glob("bench-point-*")]
    print(f"\nkill test: kills {kills}, rows {len(keys)} of {expected}, lost {lost}, duplicated {duplicated}, "
          f"orphans {orphans}, stray files {len(stray)}")
    assert kills >= 10  # most moments fall inside the sweep
    assert (lost, duplicated, orphans, stray) == (0, 0, 0, [])
    assert len(set(keys)) == len(keys) == expected
    assert {r["status"] for r in results.read_rows(out / "results.csv")} == {"ok"}


APPENDER = """
import sys
from bench import results
path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    results.append_row(path, {"model": who, "variant": "default", "workload": "train", "seq_len": i, "status": "ok"})
"""


def test_two_processes_appending_keep_every_row(tmp_path):
    """Two processes appending 150 rows each through `results.append_row` to one file: all 300
    are kept, none twice (the append holds the file's lock around its read-rewrite-rename)."""
    path = tmp_path / "results.csv"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(path), who, "150"], cwd=REPO, env=env)
             for who in ("a", "b")]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    rows = results.read_rows(path)
    keys = [(r["model"], r["seq_len"]) for r in rows]
    print(f"\nconcurrent appends: written 300, kept {len(rows)}, distinct {len(set(keys))}")
    assert len(rows) == len(set(keys)) == 300
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_a_second_sweep_on_a_busy_folder_is_refused_and_the_first_finishes(tmp_path):
    out, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    argv = [sys.executable, "-m", "bench.sweep", "--axis", "seqlen", "--values", VALUES, *TINY, "--out", str(out)]
    first = subprocess.Popen(argv, cwd=REPO, env=_env(scratch), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not (out / "command.txt").exists() and time.monotonic() < deadline:  # written under the lock
        time.sleep(0.05)
    second = subprocess.run(argv[:-2] + ["--out", str(out), "--resume"], cwd=REPO, env=_env(scratch),
                            capture_output=True, text=True, timeout=300)
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    assert second.returncode == 2 and "another running sweep" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    keys = [row[:-1] for row in _rows(out / "results.csv")]
    assert len(keys) == len(set(keys)) == 2 * len(VALUES.split(","))
    assert len((out / "command.txt").read_text().splitlines()) == 1  # the refused sweep wrote nothing


@pytest.mark.slow
def test_resumed_sweep_of_other_threads_measures_nothing_and_says_why(tmp_path):
    """Outside case 05 end to end: a one-point 1-thread sweep, then `--resume --threads 2` (with a
    new value) is refused before measuring, and the file keeps its one row."""
    out = tmp_path / "run"
    common = ["--axis", "seqlen", *TINY[:2], "--batch-size", "2", "--layers", "1", "--heads", "1", "--d-model", "8",
              "--n-items", "50", "--no-flops", "--out", str(out)]
    assert sweep.main(common + ["--values", "8", "--threads", "1", "--repeats", "2", "--warmup", "0"]) == 0
    before = (out / "results.csv").read_bytes()
    from tests.badinput import refused

    line = refused(sweep.main, common + ["--values", "8,16", "--threads", "2", "--repeats", "5", "--warmup", "3",
                                         "--resume"], watched=[out])
    assert "--threads = 1" in line and "this command measures with 2" in line
    assert (out / "results.csv").read_bytes() == before


def test_a_restart_removes_only_its_own_temporaries(tmp_path):
    """The breaker's finding: a restart deleted every `.*.tmp` in --out, a user's file included."""
    mine = [".results.csv.ab12cd_x.tmp", ".time_train.png.abcdefgh.tmp", ".memory_infer.png.0a1b2c3d.tmp"]
    theirs = [".draft.tmp", ".notes.txt.abcdefgh.tmp", ".results.csv.tmp", "results.csv.abcdefgh.tmp"]
    for name in mine + theirs:
        (tmp_path / name).write_text("x")
    removed = results.remove_stale_temporaries(tmp_path, sweep.sweep_writes)
    assert sorted(p.name for p in removed) == sorted(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_rows_are_appended_through_a_symbolic_link(tmp_path):
    """The breaker's finding: appending replaced a linked results.csv by a plain file."""
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "results.csv").symlink_to(store / "results.csv")
    for i in range(2):
        results.append_row(tmp_path / "results.csv", {"model": "m", "workload": "train", "seq_len": i, "status": "ok"})
    assert (tmp_path / "results.csv").is_symlink() and len(results.read_rows(store / "results.csv")) == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_command_starts_is_one_line(signum, tmp_path):
    """The breaker's finding: Ctrl-C while torch was being imported printed an import traceback,
    and SIGTERM ended the process silently with 143."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bench.sweep", "--axis", "seqlen", "--values", "8", *TINY,
                             "--out", str(out)], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # bench is imported at once; torch takes seconds more
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines() == ["bench.sweep: interrupted while starting; nothing was written"]
    assert not out.exists()


@pytest.mark.slow
def test_a_closed_stdout_does_not_stop_the_sweep(tmp_path):
    """The breaker's finding: `bench.sweep ... | head -1` stopped after the first point, exit 0."""
    out, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "bench.sweep", "--axis", "seqlen", "--values", "4,6", *TINY,
                             "--out", str(out)], cwd=REPO, env=_env(scratch), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    assert len(results.read_rows(out / "results.csv")) == 4
