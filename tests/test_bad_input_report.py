"""Bad input to `python -m bench.report` and `python -m bench.plots`: one stderr line, exit 2, no traceback,
nothing written (tests/badinput.py), and the line names the real cause. Good inputs are still drawn.

Every case starts from one valid results.csv holding every column of bench.results.COLUMNS (`valid_rows`)
and changes one thing: a cell, a column, the raw text, a neighbouring file, or the command line.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import results
from bench.report import plots, report
from tests.badinput import REPO_ROOT, refused, refused_cli

N_COLUMNS = len(results.COLUMNS)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every complete PNG
# columns a results.csv of an older schema may lack (read_rows accepts them absent)
ADDED_LATER = ("attention_ops", "flopcounter_device", "scan_flops_analytic", "flops_analytic_reason", "fvcore_reason",
               "perf_env_json", "official_substitutions", "flops_counted")


def _row(model: str, workload: str, seq_len: int, status: str = "ok", **cells) -> dict:
    """One results row with every column of bench.results.COLUMNS filled as a CPU sweep fills it."""
    ok = status == "ok"
    time_ms = 0.01 * seq_len * (2 if model == "sasrec" else 1)
    measured = {
        "params_total": 1000, "params_trainable": 1000, "attention_ops": "_safe_softmax",
        "time_median_ms": time_ms, "time_iqr_ms": 0.1, "time_p20_ms": 0.9 * time_ms, "time_p80_ms": 1.1 * time_ms,
        "time_min_ms": 0.8 * time_ms, "timer": "perf_counter", "tracked_peak_bytes": 1000 * seq_len,
        "tracked_peak_mib": round(1000 * seq_len / 2**20, 3), "tracked_activation_bytes": 500 * seq_len,
        "fwd_flops_fvcore": 10 * seq_len, "fwd_flops_flopcounter": 10 * seq_len, "step_flops_flopcounter": 30 * seq_len,
        "fwd_flops_analytic": 10 * seq_len, "step_flops_analytic": 30 * seq_len, "fvcore_skipped_ops": "aten::add",
        "flopcounter_device": "meta", "scan_flops_analytic": 0,
    } if ok else {}
    row = {"model": model, "variant": "default", "workload": workload, "status": status,
           "reason": "" if ok else f"{status} at L={seq_len}", "axis": "seq_len", "seq_len": seq_len, "batch_size": 8,
           "n_layers": 2, "n_heads": 2, "d_model": 64, "n_items": 100, "causal": True, "reconstruction": False,
           **measured, "time_repeats": 3, "time_warmup": 1, "nvml_status": "not applicable: cpu", "device": "cpu",
           "device_name": "Test CPU", "dtype": "float32", "threads": 1, "torch_version": "2.13.0",
           "python_version": "3.11.7", "git_commit": "abc123", "timestamp_utc": "2026-01-01T00:00:00Z",
           "mem_limit_gib": 21.2, "time_limit_s": 1800, "seed": 0, "perf_env_json": "{}", "faithful_to": "test",
           "config_json": "{}", "official_substitutions": "", "flops_counted": True}
    row.update(cells)
    return row


def valid_rows() -> list[dict]:
    """linrec and sasrec, train and infer, L = 64, 128, 256; sasrec's train step OOMs at 256."""
    return [_row(model, workload, L, status="oom" if (model, workload, L) == ("sasrec", "train", 256) else "ok")
            for workload in ("train", "infer") for model in ("linrec", "sasrec") for L in (64, 128, 256)]


def csv_text(columns: list[str], rows: list[dict]) -> str:
    return results.csv_text(columns, [{c: r.get(c) for c in columns} for r in rows])


# ---------------------------------------------------------------------- one change to the valid results.csv
# A mutation takes (columns, rows) and returns the file's bytes or text. Data rows start at line 2.


def cell(index: int, column: str, value: str):
    def change(columns, rows):
        rows[index][column] = value
        return csv_text(columns, rows)
    return change


def drop(column: str):
    return lambda columns, rows: csv_text([c for c in columns if c != column], rows)


def raw(edit):
    return lambda columns, rows: edit(csv_text(columns, rows))


def header(new_columns):
    """The rows written under other column names (`new_columns(columns)`), cell for cell."""
    def change(columns, rows):
        names = new_columns(list(columns))
        lines = csv_text(columns, rows).splitlines(keepends=True)
        return ",".join(names) + "\n" + "".join(lines[1:])
    return change


def _swap(columns, a, b):
    i, j = columns.index(a), columns.index(b)
    columns[i], columns[j] = columns[j], columns[i]
    return columns


def _last_line_torn(text: str) -> str:
    return text[: text.rstrip("\n").rfind(",")] + "\n"  # the last cell of the last row cut off


def _first_row_longer(text: str) -> str:
    lines = text.split("\n")
    lines[1] += ",spare"
    return "\n".join(lines)


RESULTS_MUTATIONS = [
    ("header-only", lambda columns, rows: csv_text(columns, []), "no rows to draw"),
    ("empty-file", lambda columns, rows: "", "empty"),
    ("time-nan", cell(0, "time_median_ms", "NaN"), "line 2, column time_median_ms"),
    ("time-text", cell(1, "time_median_ms", "fast"), "line 3, column time_median_ms: 'fast' is not a number"),
    ("time-inf", cell(2, "time_median_ms", "inf"), "not a finite number"),
    ("time-huge-overflows", cell(2, "time_median_ms", "1e400"), "not a finite number"),
    ("time-negative", cell(0, "time_median_ms", "-3.5"), "negative"),
    ("time-decimal-comma", cell(0, "time_median_ms", "1,5"), "'1,5' is not a number"),
    ("ok-row-without-time", cell(0, "time_median_ms", ""), "line 2, column time_median_ms: an ok row must have"),
    ("ok-row-without-memory", cell(1, "tracked_peak_mib", ""), "line 3, column tracked_peak_mib: an ok row must have"),
    ("bytes-with-unit", cell(0, "tracked_peak_bytes", "12kB"), "column tracked_peak_bytes"),
    ("flops-nan-text", cell(3, "step_flops_flopcounter", "nan"), "line 5, column step_flops_flopcounter"),
    ("params-negative", cell(0, "params_total", "-1"), "column params_total"),
    ("p80-text-in-failed-row", cell(5, "time_p80_ms", "n/a"), "line 7, column time_p80_ms"),
    ("nvml-infinite", cell(0, "nvml_peak_used_mib", "-inf"), "column nvml_peak_used_mib"),
    ("seq-len-zero", cell(0, "seq_len", "0"), "line 2, column seq_len: '0' is not a positive integer"),
    ("seq-len-fraction", cell(1, "seq_len", "12.5"), "column seq_len: '12.5' is not a positive integer"),
    ("batch-empty", cell(0, "batch_size", ""), "column batch_size: '' is not a positive integer"),
    ("heads-word", cell(0, "n_heads", "two"), "column n_heads"),
    ("items-negative", cell(4, "n_items", "-5"), "line 6, column n_items"),
    ("layers-too-big", cell(0, "n_layers", "99999999999"), "column n_layers"),
    ("status-unknown", cell(0, "status", "crashed"), "line 2, column status: 'crashed' is not one of ok, oom"),
    ("status-empty", cell(2, "status", ""), "column status"),
    ("workload-escapes-out", cell(0, "workload", "../../x"), "line 2, column workload: '../../x' is not one of"),
    ("workload-makes-folder", cell(1, "workload", "a/b"), "column workload"),
    ("workload-empty", cell(0, "workload", ""), "column workload"),
    ("workload-nul", cell(0, "workload", "tr\0ain"), "column workload"),
    ("axis-escapes-out", cell(0, "axis", "../evil"), "column axis: '../evil' is not one of"),
    ("model-empty", cell(0, "model", ""), "column model: empty"),
    ("device-empty", cell(0, "device", ""), "column device: empty"),
    ("threads-text", cell(0, "threads", "all"), "column threads"),
    ("repeats-negative", cell(0, "time_repeats", "-1"), "column time_repeats"),
    ("no-time-column", drop("time_median_ms"), "no column time_median_ms"),
    ("no-status-column", drop("status"), "no column status"),
    ("no-seq-len-column", drop("seq_len"), "no column seq_len"),
    ("foreign-column", header(lambda c: c[:-1] + ["colour"]), "column 'colour' is not a results column"),
    ("columns-out-of-order", header(lambda c: _swap(c, "time_p20_ms", "time_p80_ms")), "order"),
    ("column-twice", header(lambda c: c[:1] + c[:-1]), "'model' appears twice"),
    ("torn-last-line", raw(_last_line_torn), f"line 13 has {N_COLUMNS - 1} cells, the header {N_COLUMNS}"),
    ("extra-cell", raw(_first_row_longer), f"line 2 has {N_COLUMNS + 1} cells, the header {N_COLUMNS}"),
    ("not-utf8", lambda columns, rows: csv_text(columns, rows).encode() + b"\xff\xfe linrec\n", "not UTF-8"),
    ("a-png-not-a-csv", lambda columns, rows: PNG_SIGNATURE + b"\x00\x00\x00\rIHDR\xff", "not UTF-8"),
    ("a-metrics-csv", lambda columns, rows: "model,split,ndcg@10\nlinrec,test,0.2\n", "not a results column"),
]


def metrics_csv(**cells) -> str:
    row = {"model": "linrec", "model_spec": "linrec", "variant": "default", "epoch": 3, "split": "test",
           "ndcg@10": 0.2, "hr@10": 0.3, "mrr@10": 0.1, "n_layers": 2, "n_heads": 2, "d_model": 64}
    valid = dict(row, split="valid", epoch=2)
    rows = [valid, dict(row, **cells)]
    return pd.DataFrame(rows).to_csv(index=False)


def rank_csv(single_sequence: bool = True, **cells) -> str:
    base = {"model": "linrec", "model_spec": "linrec", "checkpoint": "linrec/checkpoint.pt", "view": "per_user",
            "user": 0, "n_real": 4, "rank": 3, "max_rank": 4, "tolerance": 1e-6, "sigma_max": 1.0, "rows": 4,
            "d_model": 4, "max_len": 4, "dataset": "synthetic", "epoch": 1, "singular_values": "1 0.5 0.2 0.1",
            "features": ""}
    rows = [base]
    if single_sequence:
        rows.append(dict(base, view="single_sequence", features=" ".join(str(0.1 * i) for i in range(16))))
    rows[-1].update(cells)
    return pd.DataFrame(rows).to_csv(index=False)


# (id, command, change, expected words in the error line). A change is a mutation of results.csv (above),
# an argv (a list; {run}, {out}, {tmp} filled in), or a dict {file name in the run folder: its text} with
# optional "argv".
CASES = [
    *[(f"plots-{name}", "plots", edit, expected) for name, edit, expected in RESULTS_MUTATIONS],
    *[(f"report-{name}", "report", edit, expected) for name, edit, expected in RESULTS_MUTATIONS],
    # bench.plots: the command line
    ("plots-no-argument", "plots", [], "required"),
    ("plots-unknown-flag", "plots", ["{run}/results.csv", "--colour", "red"], "unrecognized arguments"),
    ("plots-csv-missing", "plots", ["{run}/missing.csv"], "does not exist"),
    ("plots-csv-is-a-folder", "plots", ["{run}"], "is a folder"),
    ("plots-out-is-a-file", "plots", ["{run}/results.csv", "--out", "{run}/results.csv"], "is a file"),
    ("plots-out-under-a-file", "plots", ["{run}/results.csv", "--out", "{run}/results.csv/figs"], "is a file"),
    ("plots-out-in-proc", "plots", ["{run}/results.csv", "--out", "/proc/figures"], "cannot write"),
    ("plots-out-name-too-long", "plots", ["{run}/results.csv", "--out", "{tmp}/" + "x" * 300], "longer than"),
    ("plots-out-empty", "plots", ["{run}/results.csv", "--out", ""], "not a usable path"),
    # bench.report: the command line and the folders
    ("report-no-argument", "report", [], "required"),
    ("report-unknown-flag", "report", ["{run}", "--colour"], "unrecognized arguments"),
    ("report-run-missing", "report", ["{tmp}/nope"], "is not a folder"),
    ("report-run-is-a-file", "report", ["{run}/results.csv"], "is not a folder"),
    ("report-run-empty", "report", ["{tmp}/empty"], "holds no results.csv"),
    ("report-out-is-a-file", "report", ["{run}", "--out", "{run}/results.csv"], "is a file"),
    ("report-out-under-a-file", "report", ["{run}", "--out", "{run}/command.txt/page"], "is a file"),
    ("report-out-in-proc", "report", ["{run}", "--out", "/proc/page"], "cannot write"),
    ("report-out-name-too-long", "report", ["{run}", "--out", "{tmp}/" + "y" * 300], "longer than"),
    ("report-out-empty", "report", ["{run}", "--out", ""], "not a usable path"),
    ("report-rank-csv-missing", "report", ["{run}", "--rank-csv", "{tmp}/ranks.csv"], "is not a file"),
    ("report-rank-csv-folder", "report", ["{run}", "--rank-csv", "{tmp}/empty"], "is not a file"),
    ("report-results-csv-is-a-folder", "report", {"results.csv/": ""}, "is a folder"),
    ("report-command-not-utf8", "report", {"command.txt": b"\xff\xfe python -m bench.sweep"}, "command.txt"),
    # metrics.csv of a training folder
    ("report-metrics-no-split", "report", {"metrics.csv": "model,ndcg@10\nlinrec,0.2\n"}, "no column split"),
    ("report-metrics-no-model", "report", {"metrics.csv": "split,ndcg@10\ntest,0.2\n"}, "no column model"),
    ("report-metrics-no-metric", "report", {"metrics.csv": "model,split,loss\nlinrec,test,3.2\n"}, "no metric column"),
    ("report-metrics-text", "report", {"metrics.csv": metrics_csv(**{"ndcg@10": "good"})},
     "line 3, column ndcg@10: 'good' is not a number"),
    ("report-metrics-nan", "report", {"metrics.csv": metrics_csv(**{"hr@10": "nan"})}, "column hr@10"),
    ("report-metrics-above-one", "report", {"metrics.csv": metrics_csv(**{"mrr@10": "1.5"})}, "column mrr@10"),
    ("report-metrics-layers-text", "report", {"metrics.csv": metrics_csv(n_layers="deep")}, "column n_layers"),
    ("report-metrics-no-test-rows", "report", {"metrics.csv": metrics_csv(split="valid")}, "no split=test rows"),
    ("report-metrics-empty", "report", {"metrics.csv": ""}, "empty"),
    # a rank CSV (found in the run folder, or given by --rank-csv)
    ("report-rank-no-columns", "report", {"ranks.csv": "model,rank\nlinrec,3\n"}, "no column"),
    ("report-rank-text", "report", {"ranks.csv": rank_csv(rank="full")}, "line 3, column rank"),
    ("report-rank-no-single-sequence", "report", {"ranks.csv": rank_csv(single_sequence=False)}, "no rows to draw"),
    ("report-rank-features-short", "report", {"ranks.csv": rank_csv(features="0.1 0.2")}, "column features"),
    ("report-rank-csv-flag-bad", "report", {"other/r.csv": rank_csv(rows="0"), "argv": ["{run}", "--rank-csv", "{run}/other/r.csv"]},
     "column rows"),
]


def _write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    _write(run / "results.csv", csv_text(list(results.COLUMNS), valid_rows()))
    _write(run / "command.txt", "2026-01-01T00:00:00Z  python -m bench.sweep --axis seqlen\n")
    (tmp_path / "empty").mkdir()
    return run


@pytest.mark.parametrize("case_id,command,change,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused(case_id, command, change, expected, run_dir, tmp_path):
    out = tmp_path / "out"
    main = plots.main if command == "plots" else report.main
    argv = ["{run}/results.csv"] if command == "plots" else ["{run}", "--out", "{out}"]
    if callable(change):
        _write(run_dir / "results.csv", change(list(results.COLUMNS), valid_rows()))
    elif isinstance(change, dict):
        for name, content in change.items():
            if name == "argv":
                argv = content
            elif name.endswith("/"):
                (run_dir / name).unlink()
                (run_dir / name).mkdir()
            else:
                _write(run_dir / name, content)
    else:
        argv = change
    argv = [a.format(run=run_dir, out=out, tmp=tmp_path) for a in argv]
    line = refused(main, argv, watched=[run_dir, out])
    assert line.startswith(f"bench.{command}: error: ")
    assert expected in line, line


# ---------------------------------------------------------------------- good inputs are still drawn


def test_valid_results_are_drawn_by_both_commands(run_dir, tmp_path, capsys):
    assert plots.main([str(run_dir / "results.csv"), "--out", str(tmp_path / "figs")]) == 0
    drawn = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert drawn == ["memory_infer.png", "memory_train.png", "time_infer.png", "time_train.png"]
    assert report.main([str(run_dir), "--out", str(tmp_path / "page")]) == 0
    assert (tmp_path / "page" / "index.md").is_file() and (tmp_path / "page" / "fig3_memory_flops_ndcg.png").is_file()
    assert not list(tmp_path.rglob("*.tmp"))


def test_older_schema_without_later_columns_is_drawn(tmp_path):
    run = tmp_path / "old"
    older = [c for c in results.COLUMNS if c not in ADDED_LATER]
    _write(run / "results.csv", csv_text(older, valid_rows()))
    assert len(results.read_rows(run / "results.csv")) == len(valid_rows())  # the schema's own reader accepts it
    written = plots.plot_results_csv(run / "results.csv")
    assert {p.name for p in written} == {"memory_infer.png", "memory_train.png", "time_infer.png", "time_train.png"}
    page, figures = report.build_report([run], tmp_path / "page")
    assert next(f for f in figures if f.key == "fig3_memory_flops_ndcg").missing is None


def test_training_and_rank_folders_are_read(run_dir, tmp_path):
    train, rank = tmp_path / "train", tmp_path / "rank"
    _write(train / "metrics.csv", metrics_csv())
    _write(rank / "ranks.csv", rank_csv())
    page, figures = report.build_report([run_dir, train, rank], tmp_path / "page")
    fig3 = next(f for f in figures if f.key == "fig3_memory_flops_ndcg")
    assert fig3.table.set_index("line").loc["linrec", "ndcg@10"] == pytest.approx(0.2)


def test_sweep_entry_point_raises_one_line_value_error(tmp_path):
    """bench.sweep calls plot_results_csv(csv) at its end: a bad CSV is a ValueError with one line."""
    csv = tmp_path / "results.csv"
    _write(csv, cell(0, "workload", "a/b")(list(results.COLUMNS), valid_rows()))
    with pytest.raises(ValueError) as caught:
        plots.plot_results_csv(csv)
    assert "\n" not in str(caught.value) and "column workload" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


# ---------------------------------------------------------------------- the real entry points


@pytest.mark.parametrize("module,mutation,expected", [
    ("bench.plots", None, "does not exist"),
    ("bench.plots", cell(0, "workload", "../../x"), "column workload"),
    ("bench.report", cell(0, "time_median_ms", "NaN"), "column time_median_ms"),
])
def test_cli_entry_points_refuse_in_one_line(module, mutation, expected, tmp_path):
    """Through `python -m` (cli.run's net): the same one line, exit 2, nothing written."""
    run = tmp_path / "run"
    run.mkdir()
    if mutation is not None:
        _write(run / "results.csv", mutation(list(results.COLUMNS), valid_rows()))
    argv = [str(run / "results.csv")] if module == "bench.plots" else [str(run), "--out", str(tmp_path / "out")]
    line = refused_cli(module, argv, watched=[run, tmp_path / "out"])
    assert line.startswith(f"{module}: error: ") and expected in line


def _complete_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END)


# Loaded by the report's interpreter (a `sitecustomize` on its PYTHONPATH): every savefig after the
# first waits a minute inside the temporary-file write, so the signal always lands mid-figure
# instead of racing a fast machine to the end of the report.
_SECOND_SAVE_WAITS = """
import time
import matplotlib.figure
_savefig = matplotlib.figure.Figure.savefig
_calls = []
def savefig(self, *args, **kwargs):
    _calls.append(1)
    if len(_calls) > 1:
        time.sleep(60)
    return _savefig(self, *args, **kwargs)
matplotlib.figure.Figure.savefig = savefig
"""


def _many_lines_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    rows = [_row(f"model{m}", "train", L, axis="seq_len") for m in range(40) for L in (256, 512, 1024, 2048)]
    _write(run / "results.csv", csv_text(list(results.COLUMNS), rows))
    return run


def test_forty_lines_draw_without_a_warning(tmp_path):
    """Forty models in the log-log figure: its slope legends go below the panels; stderr stays silent."""
    run = _many_lines_run(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, "-m", "bench.report", str(run), "--out", str(tmp_path / "out")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert _complete_png(tmp_path / "out" / "long_seq_loglog.png")


def test_sigterm_while_drawing_leaves_only_complete_files(tmp_path):
    """SIGTERM once the first figure is on disk: exit 130, one stderr line, no temporary left, every PNG whole."""
    run = _many_lines_run(tmp_path)
    out = tmp_path / "out"
    hook = tmp_path / "hook"
    _write(hook / "sitecustomize.py", _SECOND_SAVE_WAITS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(REPO_ROOT)]))
    env.pop("SEQREC_TRACEBACK", None)
    proc = subprocess.Popen([sys.executable, "-m", "bench.report", str(run), "--out", str(out)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.png")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"finished before the signal: {proc.returncode}"
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], stderr
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    pngs = list(out.glob("*.png"))
    assert pngs and all(_complete_png(p) for p in pngs)
    assert not (out / "index.md").exists()  # the page comes last: no page vouching for figures not drawn
