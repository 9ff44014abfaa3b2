"""Bad input to the regression gate, the A/B tool and the profiler (issue 12): one stderr line, exit 2,
no traceback, nothing written, and every refusal before anything is measured.

One table of cases. `argv[0]` names the command; placeholders in the rest are filled per test:
  {tmp}               this test's folder
  {file}              an existing plain file ({tmp}/file.txt), for "a parent that is a file"
  {baseline:KIND}     {tmp}/baseline.json written as CORRUPTIONS[KIND] of a valid one-model baseline
                      (the committed reports/baselines/cpu-tiny.json restricted to linrec)
  {csv:KIND}          {tmp}/ab.csv written as CSV_FILES[KIND]
The gate's cases run `--models linrec --no-time`: a baseline the gate did not refuse would be
measured (and pass), so a missed refusal fails the case rather than hiding.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from bench import ab, profile, regress
from tests.badinput import refused, refused_cli

COMMITTED = Path(regress.DEFAULT_BASELINE)
MAINS = {"bench.regress": regress.main, "bench.ab": ab.main, "bench.profile": profile.main}
TOO_MANY_THREADS = "99999"
LONG_NAME = "x" * 300


def valid_baseline() -> dict:
    """The committed baseline restricted to linrec: a real, valid file of this code's grid."""
    data = json.loads(COMMITTED.read_text())
    data["models"] = {"linrec": data["models"]["linrec"]}
    return data


def _set(path: tuple, value):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data
    return mutate


def _drop(path: tuple):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return data
    return mutate


def _text(make):
    """A corruption of the file's bytes rather than of its parsed content."""
    return lambda data: make(json.dumps(data, indent=1))


def _duplicate_model(text: str) -> bytes:
    # the same model twice in "models": Python's json keeps the last one silently
    entry = json.dumps(valid_baseline()["models"]["linrec"])
    return text.replace('"models": {', '"models": {"linrec": ' + entry + ", ", 1).encode()


def _duplicate_field(text: str) -> bytes:
    return text.replace('"tracked_peak_bytes": ', '"tracked_peak_bytes": 1, "tracked_peak_bytes": ', 1).encode()


TRAIN, INFER = ("models", "linrec", "train"), ("models", "linrec", "infer")
CORRUPTIONS = {
    "missing-peak": _drop((*TRAIN, "tracked_peak_bytes")),
    "missing-time-ratio": _drop((*INFER, "time_ratio")),
    "missing-params": _drop((*TRAIN, "params_total")),
    "time-ratio-infinity": _set((*TRAIN, "time_ratio"), float("inf")),  # json.dumps writes the literal Infinity
    "time-ratio-nan": _set((*INFER, "time_ratio"), float("nan")),
    "time-ratio-zero": _set((*TRAIN, "time_ratio"), 0.0),
    "time-ratio-negative": _set((*TRAIN, "time_ratio"), -2.5),
    "time-ratio-string": _set((*TRAIN, "time_ratio"), "2.5"),
    "time-ratio-bool": _set((*TRAIN, "time_ratio"), True),
    "flops-negative": _set((*TRAIN, "step_flops_flopcounter"), -1),
    "flops-float": _set((*TRAIN, "fwd_flops_fvcore"), 1.5e6),
    "peak-bool": _set((*INFER, "tracked_peak_bytes"), True),
    "peak-infinite": _text(lambda t: re.sub(r'"tracked_peak_bytes": \d+', '"tracked_peak_bytes": 1e400', t, count=1).encode()),
    "peak-null": _set((*TRAIN, "tracked_peak_bytes"), None),
    "analytic-null-for-ours": _set((*TRAIN, "fwd_flops_analytic"), None),
    "peak-4301-digits": _text(lambda t: re.sub(r'"tracked_peak_bytes": \d+', '"tracked_peak_bytes": ' + "9" * 4301,
                                               t, count=1).encode()),
    "median-ms-negative": _set((*TRAIN, "time_median_ms"), -1.0),
    "unknown-field": _set((*TRAIN, "tracked_peak_byte"), 1),
    "unknown-workload": _set(("models", "linrec", "warmup"), {}),
    "missing-workload": _drop(INFER),
    "status-error": _set((*TRAIN, "status"), "error"),
    "top-level-list": lambda data: [data],
    "top-level-number": lambda data: 42,
    "model-not-object": _set(("models", "linrec"), ["train", "infer"]),
    "workload-not-object": _set(TRAIN, "ok"),
    "models-not-object": _set(("models",), []),
    "grid-not-object": _set(("grid",), "tiny"),
    "environment-not-object": _set(("environment",), ["torch 2"]),
    "format-missing": _drop(("format",)),
    "unknown-top-level": _set(("notes",), "hand edited"),
    "other-grid": _set(("grid", "seq_len"), 64),
    "other-control": _set(("control", "d_hidden"), 512),
    "duplicate-model": _text(_duplicate_model),
    "duplicate-field": _text(_duplicate_field),
    "empty": lambda data: b"",
    "whitespace-only": lambda data: b" \n\n",
    "invalid-json": lambda data: b"{not json",
    "truncated": _text(lambda t: t[:300].encode()),
    "binary": lambda data: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
    "deeply-nested": lambda data: b"[" * 100_000 + b"]" * 100_000,
}

CSV_FILES = {
    "foreign-header": b"model,status\nx,ok\n",
    "binary": b"\xff\xfe\x00m\x00o\x00d\x00e\x00l",
    "empty": b"",
}

GATE = ["--models", "linrec", "--no-time", "--baseline"]
AB = ["sasrec", "linrec", "--batch-size", "2", "--seq-len", "8", "--layers", "1", "--heads", "2", "--d-model", "8",
      "--n-items", "20", "--rounds", "1", "--warmup", "0"]
PROFILE = ["--model", "sasrec", "--batch-size", "2", "--seq-len", "8", "--layers", "1", "--heads", "2",
           "--d-model", "8", "--n-items", "20", "--device", "cpu", "--active", "1", "--tensorboard", "no"]

CASES = [
    # --- bench.regress: a corrupt baseline is refused before anything is measured, naming model and field
    *[(f"regress-baseline-{kind}", ["bench.regress", *GATE, f"{{baseline:{kind}}}"], expected) for kind, expected in [
        ("missing-peak", "linrec train: tracked_peak_bytes is missing"),
        ("missing-time-ratio", "linrec infer: time_ratio is missing"),
        ("missing-params", "linrec train: params_total is missing"),
        ("time-ratio-infinity", "linrec train: time_ratio is inf"),
        ("time-ratio-nan", "linrec infer: time_ratio is nan"),
        ("time-ratio-zero", "linrec train: time_ratio is 0.0"),
        ("time-ratio-negative", "linrec train: time_ratio is -2.5"),
        ("time-ratio-string", "linrec train: time_ratio is '2.5'"),
        ("time-ratio-bool", "linrec train: time_ratio is True"),
        ("flops-negative", "linrec train: step_flops_flopcounter is -1"),
        ("flops-float", "linrec train: fwd_flops_fvcore is 1500000.0, not an integer"),
        ("peak-bool", "linrec infer: tracked_peak_bytes is True"),
        ("peak-infinite", "linrec train: tracked_peak_bytes is inf"),
        ("peak-null", "linrec train: tracked_peak_bytes is null"),
        ("analytic-null-for-ours", "linrec train: fwd_flops_analytic is null"),
        ("peak-4301-digits", "corrupt baseline"),
        ("median-ms-negative", "linrec train: time_median_ms is -1.0"),
        ("unknown-field", "linrec train: unknown field 'tracked_peak_byte'"),
        ("unknown-workload", "model 'linrec': unknown workload 'warmup'"),
        ("missing-workload", "model 'linrec' has no infer entry"),
        ("status-error", "linrec train: status is 'error'"),
        ("top-level-list", "the top level is a JSON array"),
        ("top-level-number", "the top level is a JSON number"),
        ("model-not-object", "model 'linrec' is a JSON array"),
        ("workload-not-object", "linrec train is a JSON string"),
        ("models-not-object", "'models' is a JSON array"),
        ("grid-not-object", "'grid' is a JSON string"),
        ("environment-not-object", "'environment' is a JSON array"),
        ("format-missing", "not a baseline file"),
        ("unknown-top-level", "unknown top-level field 'notes'"),
        ("other-grid", "another grid"),
        ("other-control", "another control workload"),
        ("duplicate-model", "'linrec' appears twice in 'models'"),
        ("duplicate-field", "'tracked_peak_bytes' appears twice in linrec train"),
        ("empty", "is empty"),
        ("whitespace-only", "is empty"),
        ("invalid-json", "not valid JSON"),
        ("truncated", "not valid JSON"),
        ("binary", "not UTF-8 text"),
        ("deeply-nested", "nested too deeply"),
    ]],
    # --- bench.regress: baseline paths, checked before measuring
    ("regress-baseline-missing", ["bench.regress", *GATE, "{tmp}/none.json"], "no baseline file"),
    ("regress-baseline-folder", ["bench.regress", *GATE, "{tmp}"], "is a folder"),
    ("regress-baseline-parent-file", ["bench.regress", *GATE, "{file}/b.json"], "is a file, not a folder"),
    ("regress-baseline-device", ["bench.regress", *GATE, "/dev/zero"], "not a regular file"),
    ("regress-baseline-proc", ["bench.regress", *GATE, "/proc/version"], "not valid JSON"),
    ("regress-update-folder", ["bench.regress", "--update", *GATE, "{tmp}"], "is a folder"),
    ("regress-update-parent-file", ["bench.regress", "--update", *GATE, "{file}/b.json"], "is a file, not a folder"),
    ("regress-update-proc", ["bench.regress", "--update", *GATE, "/proc/seqrec-baseline.json"], "cannot write"),
    ("regress-update-device", ["bench.regress", "--update", *GATE, "/dev/null"], "not a regular file"),
    ("regress-update-long-name", ["bench.regress", "--update", *GATE, "{tmp}/" + LONG_NAME], "longer than"),
    ("regress-update-not-a-baseline", ["bench.regress", "--update", *GATE, "{file}"], "not a regression baseline"),
    ("regress-update-models-corrupt", ["bench.regress", "--update", *GATE, "{baseline:missing-peak}"],
     "run --update without --models"),
    ("regress-update-models-other-grid", ["bench.regress", "--update", *GATE, "{baseline:other-grid}"], "another grid"),
    # --- bench.regress: --models and the time thresholds
    ("regress-models-duplicate", ["bench.regress", "--models", "linrec,linrec", "--baseline", "{baseline:valid}"], "twice"),
    ("regress-models-empty-item", ["bench.regress", "--models", "linrec,,sasrec", "--baseline", "{baseline:valid}"],
     "empty name"),
    ("regress-models-empty", ["bench.regress", "--models", "", "--baseline", "{baseline:valid}"], "names no model"),
    ("regress-models-comma", ["bench.regress", "--models", ",", "--baseline", "{baseline:valid}"], "empty name"),
    ("regress-models-unknown", ["bench.regress", "--models", "nope", "--baseline", "{baseline:valid}"], "unknown model 'nope'"),
    ("regress-models-spec", ["bench.regress", "--models", "linrec:n_heads=1", "--baseline", "{baseline:valid}"],
     "names, not specs"),
    ("regress-models-official-unknown", ["bench.regress", "--models", "official/elastic", "--baseline", "{baseline:valid}"],
     "unknown model 'official/elastic'"),
    *[(f"regress-{flag[2:]}-{name}", ["bench.regress", flag, value, *GATE, "{baseline:valid}"], "expected a finite factor >= 1")
      for flag in ("--time-fail", "--time-warn")
      for name, value in [("nan", "nan"), ("inf", "inf"), ("overflow", "1e999"), ("negative", "-2"), ("zero", "0"),
                          ("below-one", "0.5"), ("word", "x3")]],
    ("regress-warn-above-fail", ["bench.regress", "--time-warn", "4", "--time-fail", "3", *GATE, "{baseline:valid}"],
     "must not exceed"),
    # --- bench.ab: a config a model refuses, before anything is built
    ("ab-heads-do-not-divide-d", ["bench.ab", *AB, "--heads", "3"], "does not divide"),
    ("ab-n-items-1", ["bench.ab", *AB, "--n-items", "1"], "n_items"),
    ("ab-n-items-0", ["bench.ab", *AB, "--n-items", "0"], "positive integer"),
    ("ab-eulerformer-odd-head-dim", ["bench.ab", "eulerformer", "sasrec", *AB[2:], "--d-model", "6"], "must be even"),
    ("ab-recgrela-odd-d", ["bench.ab", "sasrec", "recgrela", *AB[2:], "--heads", "1", "--d-model", "7"], "must be even"),
    ("ab-elastic-odd-d", ["bench.ab", "elastic", "sasrec", *AB[2:], "--heads", "1", "--d-model", "9"], "d_model must be even"),
    ("ab-unknown-model", ["bench.ab", "nope", *AB[1:]], "unknown model 'nope'"),
    ("ab-unknown-key", ["bench.ab", "sasrec:nope=1", *AB[1:]], "unknown config key"),
    ("ab-bad-value", ["bench.ab", "sasrec", "lrurec:scan=bogus", *AB[2:]], "scan must be one of"),
    ("ab-spec-sets-grid", ["bench.ab", "sasrec:max_len=5", *AB[1:]], "grid dimension"),
    ("ab-missing-b", ["bench.ab", "sasrec"], "required"),
    ("ab-threads-too-many", ["bench.ab", *AB, "--threads", TOO_MANY_THREADS], "threads asked for"),
    ("ab-threads-negative", ["bench.ab", *AB, "--threads", "-1"], "non-negative integer"),
    ("ab-rounds-zero", ["bench.ab", *AB, "--rounds", "0"], "positive integer"),
    ("ab-seq-len-too-big", ["bench.ab", *AB, "--seq-len", str(2**31)], "larger than"),
    ("ab-workload", ["bench.ab", *AB, "--workload", "eval"], "invalid choice"),
    # --- bench.ab: --out, before measuring
    ("ab-out-folder", ["bench.ab", *AB, "--out", "{tmp}"], "is a folder"),
    ("ab-out-parent-file", ["bench.ab", *AB, "--out", "{file}/ab.csv"], "is a file, not a folder"),
    ("ab-out-proc", ["bench.ab", *AB, "--out", "/proc/ab.csv"], "cannot write"),
    ("ab-out-long-name", ["bench.ab", *AB, "--out", "{tmp}/" + LONG_NAME], "longer than"),
    ("ab-out-foreign-header", ["bench.ab", *AB, "--out", "{csv:foreign-header}"], "other columns"),
    ("ab-out-binary", ["bench.ab", *AB, "--out", "{csv:binary}"], "not UTF-8 text"),
    ("ab-out-empty", ["bench.ab", *AB, "--out", "{csv:empty}"], "is empty"),
    ("ab-out-device", ["bench.ab", *AB, "--out", "/dev/null"], "not a regular file"),
    # --- bench.profile
    ("profile-unknown-model", ["bench.profile", *PROFILE, "--model", "nope"], "unknown model 'nope'"),
    ("profile-unknown-key", ["bench.profile", *PROFILE, "--model", "recgrela:not_a_key=1"], "valid keys"),
    ("profile-spec-form", ["bench.profile", *PROFILE, "--model", "recgrela:position"], "expected NAME[:key=value"),
    ("profile-bad-value", ["bench.profile", *PROFILE, "--model", "lrurec:scan=bogus"], "scan must be one of"),
    ("profile-dropout-out-of-range", ["bench.profile", *PROFILE, "--model", "sasrec:hidden_dropout=1.5"], "[0, 1)"),
    ("profile-spec-sets-grid", ["bench.profile", *PROFILE, "--model", "sasrec:max_len=10"], "grid dimension"),
    ("profile-heads-do-not-divide-d", ["bench.profile", *PROFILE, "--heads", "3"], "does not divide"),
    ("profile-eulerformer-odd-head-dim", ["bench.profile", *PROFILE, "--model", "eulerformer", "--d-model", "6"],
     "must be even"),
    ("profile-n-items-1", ["bench.profile", *PROFILE, "--n-items", "1"], "n_items"),
    ("profile-seq-len-0", ["bench.profile", *PROFILE, "--seq-len", "0"], "positive integer"),
    ("profile-d-model-too-big", ["bench.profile", *PROFILE, "--d-model", str(2**31)], "larger than"),
    ("profile-threads-too-many", ["bench.profile", *PROFILE, "--threads", TOO_MANY_THREADS], "threads asked for"),
    ("profile-threads-negative", ["bench.profile", *PROFILE, "--threads", "-1"], "non-negative integer"),
    ("profile-active-0", ["bench.profile", *PROFILE, "--active", "0"], "positive integer"),
    ("profile-top-0", ["bench.profile", *PROFILE, "--top", "0"], "positive integer"),
    ("profile-preset", ["bench.profile", *PROFILE, "--preset", "huge"], "invalid choice"),
    ("profile-out-file", ["bench.profile", *PROFILE, "--out", "{file}"], "is a file, not a folder"),
    ("profile-out-parent-file", ["bench.profile", *PROFILE, "--out", "{file}/p"], "is a file, not a folder"),
    ("profile-out-proc", ["bench.profile", *PROFILE, "--out", "/proc/seqrec-profile"], "cannot write"),
    ("profile-out-long-name", ["bench.profile", *PROFILE, "--out", "{tmp}/" + LONG_NAME], "longer than"),
]


def _fill(argv: list[str], tmp: Path) -> list[str]:
    """Replace the placeholders (module docstring) by files made in `tmp`."""
    (tmp / "file.txt").write_text("not a baseline, not a CSV\n")
    filled = []
    for arg in argv:
        if arg.startswith("{baseline:"):
            kind = arg[len("{baseline:"):-1]
            data = valid_baseline()
            content = data if kind == "valid" else CORRUPTIONS[kind](copy.deepcopy(data))
            path = tmp / "baseline.json"
            path.write_bytes(content if isinstance(content, bytes) else json.dumps(content, indent=1).encode())
            arg = str(path)
        elif arg.startswith("{csv:"):
            path = tmp / "ab.csv"
            path.write_bytes(CSV_FILES[arg[len("{csv:"):-1]])
            arg = str(path)
        filled.append(arg.replace("{tmp}", str(tmp)).replace("{file}", str(tmp / "file.txt")))
    return filled


def _watched(argv: list[str], tmp: Path) -> list[Path]:
    """The output or baseline path and its folder (only the path itself under /proc and /dev; only
    the folder for a name too long to stat, which tests.badinput.snapshot cannot look at)."""
    watched = [tmp]
    for flag in ("--out", "--baseline"):
        if flag in argv:
            path = Path(argv[argv.index(flag) + 1])
            if path.parts[1:2] in (("proc",), ("dev",)):
                watched.append(path)
            elif len(path.name) > 255:
                watched.append(path.parent)
            else:
                watched += [path, path.parent]
    return watched


@pytest.mark.parametrize("argv,expected", [pytest.param(argv, expected, id=case) for case, argv, expected in CASES])
def test_bad_input_is_refused_before_anything_is_measured(argv, expected, tmp_path, monkeypatch):
    def no_measuring(*args, **kwargs):
        raise AssertionError("measured before refusing")

    for module, name in [(regress, "measure_grid"), (ab, "compare"), (profile, "run_profile")]:
        monkeypatch.setattr(module, name, no_measuring)
    command, *args = argv
    args = _fill(args, tmp_path)
    if command == "bench.profile" and "--out" not in args:
        args += ["--out", str(tmp_path / "p")]
    line = refused(MAINS[command], args, watched=_watched(args, tmp_path))
    assert line.startswith(f"{command}: error: ")
    assert expected in line, line


def test_there_are_enough_distinct_cases():
    assert len(CASES) >= 50 and len({case for case, _, _ in CASES}) == len(CASES)
    assert len({tuple(argv) for _, argv, _ in CASES}) == len(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("module,argv,expected", [
    ("bench.regress", [*GATE, "{baseline:time-ratio-infinity}"], "time_ratio is inf"),
    ("bench.ab", [*AB, "--heads", "3", "--out", "{tmp}/ab.csv"], "does not divide"),
    ("bench.profile", [*PROFILE, "--out", "/proc/seqrec-profile"], "cannot write"),
])
def test_bad_input_through_the_real_entry_point(module, argv, expected, tmp_path):
    argv = _fill(argv, tmp_path)
    assert expected in refused_cli(module, argv, watched=_watched(argv, tmp_path))


# ------------------------------------------------------------------ the baseline schema, no measurement


def test_valid_baselines_pass_the_validation():
    regress.validate_baseline(valid_baseline())
    regress.validate_baseline(json.loads(COMMITTED.read_text()))  # the gate's committed file, every model
    regress.load_baseline(COMMITTED)


def test_an_official_twin_may_have_no_analytic_flops_and_no_fvcore_count():
    """An official twin has no analytic formula and fvcore may not trace it (the row says why): those
    cells are legitimately empty; every other gated field is still required."""
    data = valid_baseline()
    twin = copy.deepcopy(data["models"]["linrec"])
    for entry in twin.values():
        entry.update(fwd_flops_analytic=None, step_flops_analytic=None, scan_flops_analytic=None, fwd_flops_fvcore=None)
    data["models"]["official/linrec"] = twin
    regress.validate_baseline(data)
    twin["train"]["step_flops_analytic"] = 5  # one analytic count without the others: not what the gate writes
    with pytest.raises(regress.CorruptBaseline, match="analytic"):
        regress.validate_baseline(data)
    twin["train"]["step_flops_analytic"] = None
    twin["infer"]["tracked_peak_bytes"] = None
    with pytest.raises(regress.CorruptBaseline, match="official/linrec infer: tracked_peak_bytes is null"):
        regress.validate_baseline(data)


def test_every_corruption_is_caught_by_the_schema_itself(tmp_path):
    """The same corruptions through `load_baseline` alone (grid and control are the caller's check)."""
    for kind, corrupt in CORRUPTIONS.items():
        if kind in ("other-grid", "other-control"):
            continue
        path = tmp_path / f"{kind}.json"
        content = corrupt(valid_baseline())
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        with pytest.raises(regress.UsageError, match="corrupt baseline|no baseline|not a baseline"):
            regress.load_baseline(path)
