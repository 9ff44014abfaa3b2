"""bench.profile: a Chrome trace always, TensorBoard plugin files when asked, top operators as CSV."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from bench import profile

TINY = ["--batch-size", "2", "--seq-len", "16", "--layers", "1", "--heads", "2", "--d-model", "16",
        "--n-items", "50", "--device", "cpu"]


def _rows(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == profile.TOP_COLUMNS
        return list(reader)


def test_trace_tensorboard_files_and_top_operators(tmp_path):
    request = profile.ProfileRequest(model="recgrela", workload="train", batch_size=2, seq_len=16, n_layers=1,
                                     n_heads=2, d_model=16, n_items=50, wait=1, warmup=1, active=2, top=15,
                                     tensorboard=True)  # the handler writes plugin files without the plugin
    threads = torch.get_num_threads()
    result = profile.run_profile(request, tmp_path / "out", log=lambda line: None)
    assert torch.get_num_threads() == threads
    trace = json.loads(result.trace.read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert "aten::mm" in names or "aten::addmm" in names
    assert sum(name.startswith("ProfilerStep#") for name in names) == request.active  # only the active steps
    assert list(result.tensorboard_dir.glob("*.pt.trace.json"))
    by_time, by_memory = _rows(result.top_by_time), _rows(result.top_by_memory)
    assert 0 < len(by_time) <= 15 and 0 < len(by_memory) <= 15
    assert not any(row["op"].startswith("ProfilerStep") for row in by_time + by_memory)
    times = [float(row["self_cpu_time_us"]) for row in by_time]
    memory = [int(row["self_cpu_memory_bytes"]) for row in by_memory]
    assert times == sorted(times, reverse=True) and memory == sorted(memory, reverse=True) and min(memory) > 0
    info = json.loads(result.info.read_text())
    assert info["request"]["model"] == "recgrela" and info["steps_kept"] == 2
    assert not [p for p in (tmp_path).iterdir() if p.name.startswith(".out.")]  # the staging folder is gone


def test_cli_end_to_end_without_the_plugin(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(profile, "tb_plugin_installed", lambda: False)
    out = tmp_path / "p"
    assert profile.main(["--model", "sasrec:attention=math", "--workload", "infer", "--active", "1",
                         "--out", str(out)] + TINY) == 0
    text = capsys.readouterr().out
    assert "top operators by self time" in text and "torch-tb-profiler is not installed" in text
    assert sorted(p.name for p in out.iterdir()) == ["profile.json", "top_ops_by_memory.csv",
                                                     "top_ops_by_time.csv", "trace.json"]
    assert "python -m bench.profile --model sasrec:attention=math" in json.loads((out / "profile.json").read_text())["command"]


@pytest.mark.parametrize("argv,message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "recgrela:not_a_key=1"], "valid keys"),
    (["--model", "recgrela", "--heads", "3"], "does not divide"),
    (["--model", "recgrela", "--active", "0"], "positive integer"),
    (["--model", "recgrela", "--out", "{tmp}/file.txt"], "is a file"),
    (["--model", "recgrela", "--tensorboard", "yes"], "needs torch-tb-profiler"),
    (["--workload", "train"], "required"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(profile, "tb_plugin_installed", lambda: False)
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert profile.main(TINY + argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_help_shows_examples():
    text = profile.parser().format_help()
    assert "python -m bench.profile --model recgrela" in text and "ui.perfetto.dev" in text
