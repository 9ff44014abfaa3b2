"""The sweep CLI end to end on tiny grids, its input validation, the CSV and the isolated runner."""
from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench import results
from bench.grid import PRESETS, GridRequest, Point, build_grid, parse_model_spec, parse_values
from bench.sweep import sweep
from bench.sweep.runner import failure_row, run_isolated

REPO = Path(__file__).resolve().parent.parent
TINY = ["--batch-size", "2", "--layers", "1", "--heads", "2", "--d-model", "16", "--n-items", "40",
        "--warmup", "0", "--repeats", "2", "--device", "cpu"]


def without(argv: list[str], flag: str) -> list[str]:
    """`argv` less `flag` and its value (the swept axis cannot also be fixed)."""
    i = argv.index(flag)
    return argv[:i] + argv[i + 2:]


@pytest.mark.parametrize("argv,message", [
    (["--axis", "bogus"], "invalid choice"),
    (["--axis", "seqlen", "--preset", "huge"], "invalid choice"),
    (["--axis", "seqlen", "--models", "nope"], "unknown model 'nope'"),
    (["--axis", "seqlen", "--models", "recgrela:not_a_key=1"], "valid keys"),
    (["--axis", "seqlen", "--models", "sasrec:attention"], "expected NAME"),
    (["--axis", "seqlen", "--values", "0,64"], "positive integers"),
    (["--axis", "seqlen", "--values", "6.5"], "positive integers"),
    (["--axis", "seqlen", "--batch-size", "-3"], "positive integer"),
    (["--axis", "heads", "--values", "3"], "does not divide"),
    (["--axis", "seqlen", "--heads", "5"], "does not divide"),
    (["--axis", "seqlen", "--models", "recgrela:d_model=8"], "grid dimension"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert sweep.main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert sweep.main(["--axis", "seqlen", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "x"


def test_help_shows_examples():
    out = subprocess.run([sys.executable, "-m", "bench.sweep", "--help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert "python -m bench.sweep --axis seqlen --preset long" in out and "--resume" in out


def test_dry_run_prints_grid_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert sweep.main(["--axis", "layers", "--values", "1,3", "--models", "sasrec,recgrela:gate=false",
                       "--workload", "both", "--dry-run", "--out", str(out)] + without(TINY, "--layers")) == 0
    text = capsys.readouterr().out
    assert text.startswith("8 points") and "recgrela:gate=false infer n_layers=3" in text
    assert not out.exists()


def test_eta_scales_each_spec_by_point_size():
    def point(model, seq_len, variant=()):
        return Point(model, variant, "train", "seq_len", seq_len=seq_len, batch_size=2, n_layers=1,
                     n_heads=1, d_model=8, n_items=10)

    spent = [(point("a", 50), 1.0), (point("b", 50), 3.0), (point("b", 50, (("x", 1),)), 10.0)]
    assert sweep.estimate_remaining_s(spent, []) == 0.0 and sweep.estimate_remaining_s([], [point("a", 50)]) == 0.0
    # a: 1 s at L=50 -> 2 s at 100; b: 3 s -> 6 s; an unseen spec: all 14 s over three L=50 points -> 28/3 s at 100
    eta = sweep.estimate_remaining_s(spent, [point("a", 100), point("b", 100), point("c", 100)])
    assert eta == pytest.approx(2.0 + 6.0 + 28.0 / 3)


def test_grid_and_specs():
    spec = parse_model_spec("recgrela:local_shortcut=false:position=ape:drop_path=0.2")
    assert spec.variant == "drop_path=0.2:local_shortcut=false:position=ape"
    assert dict(spec.overrides) == {"local_shortcut": False, "position": "ape", "drop_path": 0.2}
    assert parse_values("64, 128") == (64, 128)
    points = build_grid(GridRequest(axis="seqlen", preset=PRESETS["long"], specs=[spec, parse_model_spec("sasrec")],
                                    workloads=("train", "infer")))
    assert len(points) == 6 * 2 * 2 and points[0].seq_len == 256 and points[-1].seq_len == 8192
    assert {p.batch_size for p in points} == {PRESETS["long"].batch_size}
    assert Point.from_json(points[0].to_json()) == points[0]


@pytest.mark.slow
def test_sweep_writes_rows_pngs_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")  # a cost-changing setting the rows must record
    out = tmp_path / "run"
    argv = ["--axis", "seqlen", "--values", "8,16", "--models", "sasrec:attention=math,recgrela",
            "--out", str(out)] + TINY
    assert sweep.main(argv) == 0
    log = capsys.readouterr().out
    assert "[4/4]" in log and "ETA" in log
    rows = results.read_rows(out / "results.csv")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        assert row["device"] == "cpu" and row["torch_version"] and row["timestamp_utc"] and row["threads"]
        assert float(row["time_median_ms"]) > 0 and int(row["tracked_peak_bytes"]) > 0
        assert int(row["fwd_flops_fvcore"]) == int(row["fwd_flops_flopcounter"]) == int(row["fwd_flops_analytic"])
        assert int(row["step_flops_flopcounter"]) == int(row["step_flops_analytic"])
        env = json.loads(row["perf_env_json"])
        assert env["THP_MEM_ALLOC_ENABLE"] == "1" and env == results.perf_env()
    math_rows = [r for r in rows if r["variant"] == "attention=math"]
    assert all("_softmax" in r["attention_ops"] for r in math_rows)
    for name in ("time_train.png", "memory_train.png", "command.txt"):
        assert (out / name).stat().st_size > 0
    # a second run without --resume refuses; with --resume it skips all four rows
    assert sweep.main(argv) == 2
    assert sweep.main(argv + ["--resume"]) == 0
    assert "4 of 4 points already" in capsys.readouterr().out
    assert len(results.read_rows(out / "results.csv")) == 4


@pytest.mark.slow
def test_runner_records_timeout_and_oom(tmp_path):
    small = dict(axis="seq_len", seq_len=16, batch_size=2, n_layers=1, n_heads=2, d_model=16, n_items=40,
                 warmup=0, repeats=1, flops=False)
    row = run_isolated(Point("linrec", (), "train", time_limit_s=1, **small))
    assert row["status"] == "timeout" and "time limit" in row["reason"]
    big = dict(small, seq_len=2048, batch_size=32)
    row = run_isolated(Point("sasrec", (("attention", "math"),), "train", mem_limit_gib=3.0, **big))
    assert row["status"] == "oom" and "allocate" in row["reason"]
    point = Point("linrec", (), "train", **small)
    assert failure_row(point, -signal.SIGKILL, False, "")["status"] == "oom"
    crashed = failure_row(point, 1, False, "Traceback...\nValueError: boom\n")
    assert crashed["status"] == "error" and "ValueError: boom" in crashed["reason"]


def test_csv_append_is_whole_rows(tmp_path):
    path = tmp_path / "results.csv"
    results.append_row(path, {"model": "a", "status": "ok", "reason": 'with "quotes", commas\nand newline'})
    results.append_row(path, {"model": "b", "status": "oom"})
    rows = results.read_rows(path)
    assert [r["model"] for r in rows] == ["a", "b"] and rows[0]["reason"].startswith("with")
    with open(path) as handle:
        assert next(csv.reader(handle)) == results.COLUMNS
    with pytest.raises(ValueError, match="outside the schema"):
        results.append_row(path, {"not_a_column": 1})
    assert not list(tmp_path.glob(".*.tmp"))


def test_older_schema_files_resume_and_foreign_files_are_refused(tmp_path):
    older = [c for c in results.COLUMNS if c != "perf_env_json"]  # the schema before that column
    path = tmp_path / "results.csv"
    path.write_text(",".join(older) + "\n" + ",".join("x" if c == "model" else "ok" if c == "status" else ""
                                                      for c in older) + "\n")
    (old_row,) = results.read_rows(path)
    assert old_row["model"] == "x" and old_row["perf_env_json"] == "" and list(old_row) == results.COLUMNS
    results.append_row(path, {"model": "y", "status": "ok", "perf_env_json": "{}"})
    with open(path) as handle:
        assert next(csv.reader(handle)) == results.COLUMNS  # rewritten under today's header
    assert [(r["model"], r["perf_env_json"]) for r in results.read_rows(path)] == [("x", ""), ("y", "{}")]
    foreign = tmp_path / "foreign.csv"
    for header in ("model,status\n", ",".join(reversed(older)) + "\n"):
        foreign.write_text(header)
        with pytest.raises(ValueError, match="different column set"):
            results.read_rows(foreign)
        with pytest.raises(ValueError, match="different column set"):
            results.append_row(foreign, {"model": "z"})
        assert foreign.read_text() == header


@pytest.mark.slow
@pytest.mark.parametrize("axis", ["seq_len", "n_heads", "n_layers"])
def test_every_model_measures_on_every_axis(axis):
    """Each registered model, both workloads, off the base value of the axis (in-process, tiny shapes)."""
    import models
    from bench.sweep.point import run

    base = dict(seq_len=12, batch_size=2, n_layers=1, n_heads=2, d_model=16, n_items=40)
    values = {"seq_len": (8,), "n_heads": (1,), "n_layers": (2,)}[axis]
    for name in models.available():
        for workload in ("train", "infer"):
            for value in values:
                point = Point(name, (), workload, axis, warmup=0, repeats=1, **dict(base, **{axis: value}))
                row = run(point)
                assert row["status"] == "ok", (name, workload, axis, value, row.get("reason"))
                assert row["fwd_flops_fvcore"] == row["fwd_flops_flopcounter"] == row["fwd_flops_analytic"]
                assert row["step_flops_flopcounter"] == row["step_flops_analytic"]
                assert row["tracked_peak_bytes"] > 0 and row["time_median_ms"] > 0


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def fake_sweep(tmp_path, monkeypatch, stream, term="xterm-256color"):
    """run_sweep over three stand-in points (no child processes): (log lines, what `stream` got)."""
    import contextlib

    from bench.sweep import runner
    from bench.sweep.point import base_row

    def measured(point, server=None):
        return dict(base_row(point), status="ok", reason="", time_median_ms=1.5, tracked_peak_mib=2.0)

    monkeypatch.setattr(runner, "run_isolated", measured)
    monkeypatch.setattr(runner, "point_server", lambda log=None: contextlib.nullcontext())
    monkeypatch.setenv("TERM", term)
    points = [Point("linrec", (), "train", "seq_len", seq_len=n, batch_size=2, n_layers=1, n_heads=1, d_model=8,
                    n_items=20) for n in (4, 8, 16)]
    lines = []
    rows = sweep.run_sweep(points, tmp_path / "results.csv", False, log=lines.append, progress=stream)
    assert len(rows) == len(results.read_rows(tmp_path / "results.csv")) == 3
    return lines, stream.getvalue()


def test_progress_bar_is_drawn_only_on_a_terminal(tmp_path, monkeypatch):
    """Not a terminal (a pipe, a log file, CI), or TERM=dumb: no bar and not one control character;
    the log lines are the ones tests and users grep ([i/n] ... ETA ...)."""
    for stream, term in ((io.StringIO(), "xterm"), (Terminal(), "dumb")):
        lines, drawn = fake_sweep(tmp_path / term, monkeypatch, stream, term)
        assert drawn == ""
        assert [line.split(":")[0] for line in lines] == [f"[{i}/3] linrec train seq_len={n}"
                                                         for i, n in ((1, 4), (2, 8), (3, 16))]
        assert all("ok 1.5 ms, 2.0 MiB tracked (elapsed" in line and "ETA" in line for line in lines)
        assert not any(ch in "".join(lines) for ch in "\r\x1b")


def test_progress_bar_on_a_terminal_shows_points_the_current_one_and_eta(tmp_path, monkeypatch):
    lines, drawn = fake_sweep(tmp_path, monkeypatch, Terminal())
    assert lines == []  # the log lines are written above the bar, on the terminal
    assert "0/3 points" in drawn and "2/3 points" in drawn and "ETA ?, now linrec train seq_len=4" in drawn
    assert "now linrec train seq_len=16" in drawn and "ETA 0:00:0" in drawn
    for i, n in ((1, 4), (2, 8), (3, 16)):
        assert f"[{i}/3] linrec train seq_len={n}: ok 1.5 ms" in drawn
