"""bench.regress: the gate passes on an unchanged tree, fails on a planted regression and names the
model, and treats a missing or corrupt baseline as an error. Baselines are made here, in tmp dirs."""
from __future__ import annotations

import copy
import json

import pytest
import torch

import models
from bench import regress
from models.linrec import LinRec


@pytest.fixture(scope="module")
def linrec_baseline(tmp_path_factory):
    path = tmp_path_factory.mktemp("baselines") / "cpu-tiny.json"
    threads = torch.get_num_threads()
    assert regress.main(["--update", "--models", "linrec", "--baseline", str(path)]) == 0
    assert torch.get_num_threads() == threads  # the gate pins 1 thread only while it measures
    return path


def _args(path, *extra):
    # --no-time: these tests assert deterministic counts only, never wall-clock outcomes
    return ["--models", "linrec", "--baseline", str(path), "--no-time", *extra]


def test_baseline_file_holds_every_quantity(linrec_baseline):
    data = json.loads(linrec_baseline.read_text())
    assert data["format"] == regress.FORMAT and data["grid"] == regress.GRID
    for workload in ("train", "infer"):
        entry = data["models"]["linrec"][workload]
        assert entry["status"] == "ok" and entry["time_ratio"] > 0
        for column in ("tracked_peak_bytes", "fwd_flops_fvcore", "fwd_flops_flopcounter", "step_flops_flopcounter",
                       "fwd_flops_analytic", "params_total"):
            assert isinstance(entry[column], int) and entry[column] > 0, column
    train, infer = data["models"]["linrec"]["train"], data["models"]["linrec"]["infer"]
    assert train["step_flops_flopcounter"] > train["fwd_flops_flopcounter"] == infer["fwd_flops_flopcounter"]


def test_unchanged_tree_passes(linrec_baseline, capsys):
    assert regress.main(_args(linrec_baseline)) == 0
    assert "bench.regress: OK: 2 points" in capsys.readouterr().out


def test_planted_regression_fails_and_names_the_model(linrec_baseline, monkeypatch, capsys):
    original = LinRec.forward

    def forward_with_an_extra_matmul(self, item_seq):
        hidden = original(self, item_seq)
        square = hidden.new_ones(512, 512)
        extra = square @ square  # the planted regression: 2 x 512^3 FLOPs and a 1 MiB temporary
        return hidden + 0 * extra.mean()

    monkeypatch.setattr(LinRec, "forward", forward_with_an_extra_matmul)
    assert regress.main(_args(linrec_baseline)) == 1
    out = capsys.readouterr().out
    assert "FAILED: linrec regressed" in out
    lines = [line for line in out.splitlines() if line.startswith("linrec")]
    moved = {(line.split()[1], line.split()[2]) for line in lines if "FAIL" in line}
    for workload in ("train", "infer"):
        assert (workload, "fwd_flops_fvcore") in moved and (workload, "fwd_flops_flopcounter") in moved
        assert (workload, "tracked_peak_bytes") in moved
    assert ("train", "step_flops_flopcounter") in moved
    assert not any("params_total" in line for line in lines)  # no parameter was added


def test_update_of_one_model_keeps_the_others_and_says_what_changed(linrec_baseline, tmp_path, capsys):
    data = json.loads(linrec_baseline.read_text())
    data["models"]["sasrec"] = copy.deepcopy(data["models"]["linrec"])  # another model's entry to keep
    data["models"]["linrec"]["train"]["tracked_peak_bytes"] += 1000  # an older, hungrier baseline
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    assert regress.main(["--update", "--models", "linrec", "--baseline", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tracked_peak_bytes" in out and "better" in out
    new = json.loads(path.read_text())
    assert new["models"]["sasrec"] == data["models"]["sasrec"]
    assert new["models"]["linrec"]["train"]["tracked_peak_bytes"] == data["models"]["linrec"]["train"]["tracked_peak_bytes"] - 1000


def test_registered_model_without_a_baseline_is_an_error(linrec_baseline, capsys):
    assert regress.main(["--baseline", str(linrec_baseline)]) == 2  # every registered model, only linrec stored
    err = capsys.readouterr().err
    missing = [name for name in models.available() if name != "linrec"]
    assert all(name in err for name in missing) and "--update" in err and err.count("\n") == 1


@pytest.mark.parametrize("content,message", [
    (None, "no baseline file"),
    ("{not json", "corrupt baseline"),
    (json.dumps({"format": "something else"}), "corrupt baseline"),
    ("TRUNCATE", "corrupt baseline"),
    ("STRING_BYTES", "tracked_peak_bytes is '375040', not an integer"),
    ("OTHER_GRID", "another grid"),
])
def test_missing_or_corrupt_baseline_is_an_error(content, message, linrec_baseline, tmp_path, capsys):
    path = tmp_path / "b.json"
    good = json.loads(linrec_baseline.read_text())
    if content == "TRUNCATE":
        content = linrec_baseline.read_text()[:200]
    elif content == "STRING_BYTES":
        good["models"]["linrec"]["infer"]["tracked_peak_bytes"] = "375040"
        content = json.dumps(good)
    elif content == "OTHER_GRID":
        good["grid"] = dict(good["grid"], seq_len=64)
        content = json.dumps(good)
    if content is not None:
        path.write_text(content)
    assert regress.main(_args(path)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def _entry(**changes):
    entry = {"status": "ok", "reason": "", "time_ratio": 2.0, **dict.fromkeys(regress.EXACT, 1000)}
    entry.update(changes)
    return entry


@pytest.mark.parametrize("now,quantity,verdict", [
    (_entry(tracked_peak_bytes=1001), "tracked_peak_bytes", "FAIL"),  # one byte more is a regression
    (_entry(tracked_peak_bytes=999), "tracked_peak_bytes", "better"),
    (_entry(step_flops_flopcounter=1002), "step_flops_flopcounter", "FAIL"),
    (_entry(params_total=1001), "params_total", "FAIL"),
    (_entry(time_ratio=2.0 * 2.5), "time_ratio", "WARN"),  # slower than x2, within x3
    (_entry(time_ratio=2.0 * 3.5), "time_ratio", "FAIL"),
    (_entry(time_ratio=2.0 * 1.9), None, None),  # within the noise band: not listed
    ({"status": "error", "reason": "RuntimeError: boom"}, "status", "FAIL"),
    (_entry(fwd_flops_fvcore=None), "fwd_flops_fvcore", "FAIL"),  # a counter that stopped counting
])
def test_compare_rules(now, quantity, verdict):
    changes = regress.compare({"m": {"train": _entry()}}, {"m": {"train": now}})
    assert [(c.quantity, c.verdict) for c in changes] == ([] if quantity is None else [(quantity, verdict)])


def test_a_count_measured_for_the_first_time_is_listed_not_failed():
    changes = regress.compare({"m": {"train": _entry(fwd_flops_fvcore=None)}}, {"m": {"train": _entry()}})
    assert [(c.quantity, c.verdict) for c in changes] == [("fwd_flops_fvcore", "changed")]


def test_no_time_never_judges_time():
    changes = regress.compare({"m": {"train": _entry()}}, {"m": {"train": _entry(time_ratio=100.0)}}, check_time=False)
    assert changes == []


@pytest.mark.parametrize("argv,message", [
    (["--models", "nope"], "unknown model"),
    (["--time-fail", "0.5"], "factor >= 1"),
    (["--time-warn", "4", "--time-fail", "3"], "must not exceed"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert regress.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_help_shows_examples():
    text = regress.parser().format_help()
    assert "python -m bench.regress --update" in text and "tracked_peak_bytes" in text


def test_update_repairs_a_corrupt_baseline_but_never_overwrites_another_file(tmp_path, capsys):
    """What --update would replace is read before measuring: a corrupt baseline (it names the format)
    is replaced with a note, unless --models would keep its other models; a file that is no
    baseline at all is refused, so a mistyped --baseline loses nothing."""
    committed = json.loads(regress.DEFAULT_BASELINE.read_text())
    corrupt = tmp_path / "corrupt.json"
    committed["models"]["linrec"]["train"]["time_ratio"] = float("inf")
    corrupt.write_text(json.dumps(committed))
    assert regress.previous_baselines(corrupt, keep_others=False) == {}
    assert "replacing an unreadable baseline" in capsys.readouterr().out
    with pytest.raises(regress.UsageError, match="linrec train: time_ratio is inf.*without --models"):
        regress.previous_baselines(corrupt, keep_others=True)
    notes = tmp_path / "notes.json"
    notes.write_text('{"todo": "not a baseline"}\n')
    with pytest.raises(regress.UsageError, match="not a regression baseline"):
        regress.previous_baselines(notes, keep_others=False)
    committed["models"]["linrec"]["train"]["time_ratio"] = 1.5
    committed["grid"]["seq_len"] = 64
    corrupt.write_text(json.dumps(committed))
    assert regress.previous_baselines(corrupt, keep_others=False) == {}  # no comparison across grids
    with pytest.raises(regress.UsageError, match="another grid.*two grids"):
        regress.previous_baselines(corrupt, keep_others=True)
    committed["grid"]["seq_len"] = regress.GRID["seq_len"]
    corrupt.write_text(json.dumps(committed))
    assert set(regress.previous_baselines(corrupt, keep_others=True)) == set(committed["models"])
