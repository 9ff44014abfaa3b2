"""`python -m bench.sweep` under bad input: every case is one stderr line, exit 2, no traceback, and
nothing created or changed in `--out` or beside it (the contract in tests/badinput.py). Among them
the outside case 05 (`--resume` over rows measured with other settings) and a busy folder."""
from __future__ import annotations

import csv
import fcntl
from pathlib import Path

import pytest

from bench import results
from bench.sweep import sweep
from tests.badinput import refused

TINY = ["--models", "linrec", "--batch-size", "2", "--layers", "1", "--heads", "1", "--d-model", "8",
        "--n-items", "20", "--warmup", "0", "--repeats", "1", "--no-flops", "--device", "cpu"]
LONG_NAME = "x" * 300

# (id, argv after `--axis seqlen` unless it names its own axis, words the error line must hold)
CASES = [
    ("no-axis", ["--values", "8"], "--axis"),
    ("unknown-axis", ["--axis", "time"], "invalid choice"),
    ("unknown-preset", ["--preset", "huge"], "invalid choice"),
    ("unknown-flag", ["--bogus"], "unrecognized"),
    ("values-empty", ["--values", ""], "--values is empty"),
    ("values-blank", ["--values", "  "], "--values is empty"),
    ("values-repeated", ["--values", "8,8"], "twice"),
    ("values-repeated-spaced", ["--values", "8, 16 ,8"], "twice"),
    ("values-empty-item", ["--values", "8,,16"], "positive integers"),
    ("values-trailing-comma", ["--values", "8,"], "positive integers"),
    ("values-zero", ["--values", "0"], "positive integers"),
    ("values-negative", ["--values", "-8"], "positive integers"),
    ("values-float", ["--values", "8.5"], "positive integers"),
    ("values-exponent", ["--values", "1.5e3"], "positive integers"),  # 1e3 is 1000 (--axis items); a fraction is not
    ("values-text", ["--values", "abc"], "positive integers"),
    ("values-arabic-digit", ["--values", "\u0668"], "positive integers"),
    ("values-superscript", ["--values", "8\u00b2"], "positive integers"),
    ("values-int32-overflow", ["--values", "2147483648"], "larger than"),
    ("values-int64-overflow", ["--values", "99999999999999999999"], "larger than"),
    ("values-semicolons", ["--values", "8;16"], "positive integers"),
    ("models-empty", ["--models", ""], "names no model"),
    ("models-blank", ["--models", "  "], "names no model"),
    ("models-repeated", ["--models", "linrec,linrec"], "twice"),
    ("models-repeated-reordered", ["--models", "sasrec:attention=math:attn_dropout=0,sasrec:attn_dropout=0:attention=math"],
     "twice"),
    ("models-empty-item", ["--models", "linrec,,sasrec"], "empty name"),
    ("models-unknown", ["--models", "nosuch"], "unknown model"),
    ("models-unknown-official", ["--models", "official/nosuch"], "nosuch"),
    ("models-unknown-key", ["--models", "linrec:nosuchkey=1"], "valid keys"),
    ("models-official-unknown-key", ["--models", "official/sasrec:nosuch=1"], "valid keys"),
    ("models-pair-without-value", ["--models", "linrec:hidden_dropout"], "expected NAME"),
    ("models-pair-without-key", ["--models", "linrec:=1"], "expected NAME"),
    ("models-key-twice", ["--models", "sasrec:attention=math:attention=sdpa"], "twice"),
    ("models-grid-key", ["--models", "linrec:n_layers=2"], "grid dimension"),
    ("models-grid-key-d", ["--models", "recgrela:d_model=8"], "grid dimension"),
    ("models-bad-choice", ["--models", "sasrec:attention=nosuch"], "attention must be"),
    ("models-nan", ["--models", "linrec:hidden_dropout=nan"], "finite"),
    ("models-inf", ["--models", "linrec:hidden_dropout=inf"], "finite"),
    ("models-huge-int", ["--models", "linrec:d_inner=99999999999"], "larger than"),
    ("workload-unknown", ["--workload", "serve"], "is not a workload"),
    ("batch-zero", ["--batch-size", "0"], "positive integer"),
    ("batch-negative", ["--batch-size", "-1"], "positive integer"),
    ("batch-float", ["--batch-size", "1.5"], "positive integer"),
    ("batch-overflow", ["--batch-size", "2147483648"], "larger than"),
    ("batch-hex", ["--batch-size", "0x10"], "positive integer"),
    ("seq-len-zero", ["--axis", "heads", "--seq-len", "0"], "positive integer"),
    ("layers-zero", ["--layers", "0"], "positive integer"),
    ("heads-zero", ["--heads", "0"], "positive integer"),
    ("heads-not-dividing", ["--heads", "3"], "does not divide"),
    ("heads-axis-not-dividing", ["--axis", "heads", "--values", "3", "--d-model", "8"], "does not divide"),
    ("d-model-zero", ["--d-model", "0"], "positive integer"),
    ("n-items-zero", ["--n-items", "0"], "positive integer"),
    ("n-items-one", ["--n-items", "1"], "n_items"),
    ("axis-also-fixed-seqlen", ["--seq-len", "50"], "swept axis"),
    ("axis-also-fixed-layers", ["--axis", "layers", "--layers", "2"], "swept axis"),
    ("axis-also-fixed-batch", ["--axis", "batch", "--batch-size", "4"], "swept axis"),
    ("device-unknown", ["--device", "tpu"], "invalid choice"),
    ("device-cuda-absent", ["--device", "cuda"], "no CUDA device"),
    ("threads-huge", ["--threads", "100000"], "CPUs"),
    ("threads-negative", ["--threads", "-1"], "non-negative integer"),
    ("threads-float", ["--threads", "1.5"], "non-negative integer"),
    ("warmup-negative", ["--warmup", "-1"], "non-negative integer"),
    ("repeats-zero", ["--repeats", "0"], "positive integer"),
    ("time-limit-zero", ["--time-limit", "0"], "positive integer"),
    ("time-limit-nan", ["--time-limit", "nan"], "positive integer"),
    ("mem-limit-nan", ["--mem-limit-gib", "nan"], "positive number"),
    ("mem-limit-inf", ["--mem-limit-gib", "inf"], "positive number"),
    ("mem-limit-negative", ["--mem-limit-gib", "-1"], "positive number"),
    ("mem-limit-zero", ["--mem-limit-gib", "0"], "positive number"),
    ("mem-limit-too-small", ["--mem-limit-gib", "0.5"], "cannot even start"),
    ("mem-limit-text", ["--mem-limit-gib", "lots"], "positive number"),
]


AXIS_FLAGS = {"seqlen": "--seq-len", "heads": "--heads", "layers": "--layers", "batch": "--batch-size",
              "dmodel": "--d-model"}


def _on_tiny_grid(case: str, argv: list[str]) -> list[str]:
    """The case's argv on the tiny grid: `--axis seqlen` unless it names an axis (or tests its
    absence), then each of TINY's flags the case does not set itself, except the swept axis's own."""
    full = list(argv)
    if "--axis" not in full and case != "no-axis":
        full = ["--axis", "seqlen"] + full
    axis = full[full.index("--axis") + 1] if "--axis" in full else None
    given = {a for a in full if a.startswith("--")} | {AXIS_FLAGS.get(axis)}
    i = 0
    while i < len(TINY):
        width = 1 if TINY[i] == "--no-flops" else 2
        if TINY[i] not in given:
            full += TINY[i:i + width]
        i += width
    return full


@pytest.mark.parametrize("case,argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_sweep_input_is_refused_cleanly(case, argv, words, tmp_path):
    out = tmp_path / "run"
    line = refused(sweep.main, _on_tiny_grid(case, argv) + ["--out", str(out)], watched=[tmp_path])
    assert words in line, line


# --out: where nothing can be written
def _out_cases(tmp_path: Path) -> dict[str, str]:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    return {
        "out-is-a-file": (str(afile), "is a file"),
        "out-parent-is-a-file": (str(afile / "run"), "is a file"),
        "out-grandparent-is-a-file": (str(afile / "a" / "b"), "is a file"),
        "out-under-proc": ("/proc/seqrec-bench-run", "cannot write"),
        "out-under-sys": ("/sys/seqrec-bench-run", "cannot write"),
        "out-empty": ("", "not a usable path"),
        "out-nul": ("run\0x", "not a usable path"),
        "out-name-too-long": (str(tmp_path / LONG_NAME), "longer than"),
    }


OUT_CASES = ["out-is-a-file", "out-parent-is-a-file", "out-grandparent-is-a-file", "out-under-proc",
             "out-under-sys", "out-empty", "out-nul", "out-name-too-long"]


@pytest.mark.parametrize("case", OUT_CASES)
def test_unwritable_out_is_refused(case, tmp_path):
    out, words = _out_cases(tmp_path)[case]
    line = refused(sweep.main, ["--axis", "seqlen", "--values", "8", *TINY, "--out", out], watched=[tmp_path])
    assert words in line, line


# --resume over a results file that cannot be continued
def _planned_row(tmp_path: Path, argv: list[str]) -> dict:
    """The row this command would write for its first point, settings included, without measuring."""
    args = sweep.parser().parse_args(argv)
    _, points, _, _ = sweep.plan(args)
    point = points[0]
    row = {c: "" for c in results.COLUMNS}
    row.update(sweep._key_row(point), status="error", reason="planted", axis=point.axis,
               **sweep.expected_settings(point))
    return row


SETTING_CHANGES = [
    ("threads", "99", "--threads"),
    ("time_warmup", "7", "--warmup"),
    ("time_repeats", "9", "--repeats"),
    ("seed", "5", "the seed"),
    ("mem_limit_gib", "3.5", "--mem-limit-gib"),
    ("time_limit_s", "17", "--time-limit"),
    ("flops_counted", "True", "--no-flops"),
    ("dtype", "bfloat16", "--dtype"),
    ("torch_version", "1.0.0", "torch"),
    ("device_name", "Another CPU", "device"),
    ("perf_env_json", '{"THP_MEM_ALLOC_ENABLE": "1"}', "environment"),
]


@pytest.mark.parametrize("column,value,words", SETTING_CHANGES, ids=[c[0] for c in SETTING_CHANGES])
def test_resume_refuses_rows_measured_with_other_settings(column, value, words, tmp_path):
    """Outside case 05: `--resume` over rows of another setting would join them into one line."""
    out = tmp_path / "run"
    argv = ["--axis", "seqlen", "--values", "8,16", *TINY, "--threads", "1", "--out", str(out), "--resume"]
    row = _planned_row(tmp_path, argv)
    out.mkdir()
    results.write_text_atomic(out / "results.csv", results.csv_text(results.COLUMNS, [dict(row, **{column: value})]))
    line = refused(sweep.main, argv, watched=[tmp_path])
    assert words in line and value.split('"')[1 if value.startswith("{") else 0] in line, line


def test_resume_accepts_rows_of_the_same_settings_and_older_files(tmp_path):
    """The check must not refuse what it should accept: the same settings, or empty cells."""
    out = tmp_path / "run"
    argv = ["--axis", "seqlen", "--values", "8,16", *TINY, "--threads", "1", "--out", str(out), "--resume",
            "--dry-run"]
    row = _planned_row(tmp_path, argv)
    out.mkdir()
    results.write_text_atomic(out / "results.csv", results.csv_text(results.COLUMNS, [row]))
    args = sweep.parser().parse_args(argv)
    args.dry_run = False
    sweep.plan(args)  # same settings: no UsageError
    blank = dict(row, **{c: "" for c in results.SETTINGS_COLUMNS + results.LIMIT_COLUMNS})
    results.write_text_atomic(out / "results.csv", results.csv_text(results.COLUMNS, [blank]))
    sweep.plan(args)


@pytest.mark.parametrize("content,words", [
    ("a,b,c\n1,2,3\n", "not a results column"),
    ("", "is empty"),
    ("\x00\x01\x02garbage\xff", "not UTF-8"),
])
def test_resume_refuses_a_foreign_results_file(content, words, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.csv").write_bytes(content.encode("latin-1"))
    line = refused(sweep.main, ["--axis", "seqlen", "--values", "8", *TINY, "--out", str(out), "--resume"],
                   watched=[tmp_path])
    assert words in line, line


def test_existing_results_without_resume_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.csv").write_text(results.header_line())
    line = refused(sweep.main, ["--axis", "seqlen", "--values", "8", *TINY, "--out", str(out)], watched=[tmp_path])
    assert "--resume" in line


def test_a_busy_folder_is_refused_without_writing(tmp_path):
    """A second sweep on a folder another sweep holds is one line, exit 2, and writes nothing."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.csv").write_text(results.header_line())
    lock = open(out / sweep.SWEEP_LOCK_NAME, "w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the other sweep's FileLock holds it
    try:
        line = refused(sweep.main, ["--axis", "seqlen", "--values", "8", *TINY, "--out", str(out), "--resume"],
                       watched=[tmp_path])
    finally:
        lock.close()
    assert "another running sweep" in line
    with open(out / "results.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [results.COLUMNS]


def _damaged(tmp_path: Path, damage: str) -> Path:
    """A results.csv of one planned row, then damaged the way a hand or a tool can damage it."""
    out = tmp_path / "run"
    argv = ["--axis", "seqlen", "--values", "8,16", *TINY, "--threads", "1", "--out", str(out), "--resume"]
    row = _planned_row(tmp_path, argv)
    out.mkdir()
    last = results.COLUMNS[-1]
    text = results.csv_text(results.COLUMNS, [row, dict(row, seq_len="16", **{last: "0.123456"})])
    if damage == "torn-last-line":
        text = text[:-20]
    elif damage == "torn-keeping-keys":  # every cell there, the last one cut short, no line end
        text = text[:-4]
    elif damage == "seq-len-edited":
        text = text.replace(",8,2,1,1,8,20,", ",8.0,2,1,1,8,20,", 1)
    elif damage == "cell-dropped":
        lines = text.splitlines(keepends=True)
        text = lines[0] + lines[1].replace(",", "", 1) + lines[2]
    elif damage == "status-unknown":
        text = text.replace(",error,planted,", ",fine,planted,", 1)
    (out / "results.csv").write_text(text)
    return out


@pytest.mark.parametrize("damage,words", [
    ("torn-last-line", "torn"),
    ("torn-keeping-keys", "no end"),
    ("seq-len-edited", "column seq_len"),
    ("cell-dropped", "cells"),
    ("status-unknown", "column status"),
])
def test_resume_refuses_a_damaged_results_file(damage, words, tmp_path):
    """The breaker's finding: a torn or hand-edited file was appended to (a row glued to a torn
    line, or an edited key measured again)."""
    out = _damaged(tmp_path, damage)
    argv = ["--axis", "seqlen", "--values", "8,16", *TINY, "--threads", "1", "--out", str(out), "--resume"]
    line = refused(sweep.main, argv, watched=[tmp_path])
    assert words in line, line


def test_results_csv_that_is_a_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    (out / "results.csv").mkdir(parents=True)
    line = refused(sweep.main, ["--axis", "seqlen", "--values", "8", *TINY, "--out", str(out), "--resume"],
                   watched=[tmp_path])
    assert "not a file" in line


def test_a_dangling_link_as_out_is_refused(tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere" / "x")
    line = refused(sweep.main, ["--axis", "seqlen", "--values", "8", *TINY, "--out", str(tmp_path / "gone")],
                   watched=[tmp_path])
    assert "does not exist" in line


@pytest.mark.parametrize("spec,words", [
    ("recgrela:local_shortcut=no", "true or false"),
    ("recgrela:gate=maybe", "true or false"),
    ("recgrela:layer_norm_eps=-1", ">= 0"),
    ("mamba4rec:d_state=abc", "integer"),
    ("mamba4rec:d_state=2.5", "integer"),
    ("sasrec:attention=1", "attention"),
    ("sasrec,sasrec:attention=sdpa", "same model config"),
])
def test_model_options_of_the_wrong_type_are_refused(spec, words, tmp_path):
    """The breaker's finding: `local_shortcut=no` was truthy text (the shortcut stayed on under a
    label saying it was off); `d_state=abc` ended in an internal error."""
    line = refused(sweep.main, _on_tiny_grid("spec", ["--models", spec]) + ["--out", str(tmp_path / "run")],
                   watched=[tmp_path])
    assert words in line, line
