"""bench.ab: paired A/B timing of two model specs in one process."""
from __future__ import annotations

import csv

import pytest

from bench import ab
from bench.grid import parse_model_spec

TINY = dict(batch_size=2, seq_len=12, n_layers=1, n_heads=1, d_model=8, n_items=30, rounds=3, warmup=0)


def test_compare_measures_both_sides_in_alternating_order(monkeypatch):
    calls = []
    real_timed = ab.time_call_ms
    monkeypatch.setattr(ab, "time_call_ms", lambda step: calls.append(step) or real_timed(step))
    result = ab.compare(parse_model_spec("lrurec"), parse_model_spec("lrurec:scan=sequential"), **TINY)
    first, second = calls[0], calls[1]
    assert calls == [first, second, second, first, first, second]  # A B, B A, A B
    assert result.rounds == 3 and 0 <= result.rounds_b_slower <= 3


def test_ratios_and_the_slower_count_come_from_the_rounds_timed(monkeypatch):
    """Stand-in clock: A takes 10 ms every round, B 12, 8 and 15 ms: B is slower in 2 of 3 rounds,
    the median ratio is 1.2 and the medians are 10 and 12 ms."""
    sides = {}
    b_times = iter([12.0, 8.0, 15.0])

    def timed(step):
        side = sides.setdefault(step, len(sides) if len(sides) < 2 else None)
        return 10.0 if side == 0 else next(b_times)

    monkeypatch.setattr(ab, "time_call_ms", timed)
    result = ab.compare(parse_model_spec("lrurec"), parse_model_spec("lrurec:scan=sequential"), **TINY)
    assert result.rounds_b_slower == 2
    assert result.ratio_b_over_a_median == 1.2
    assert (result.time_a_median_ms, result.time_b_median_ms) == (10.0, 12.0)
    assert result.ratio_b_over_a_p10 <= result.ratio_b_over_a_median <= result.ratio_b_over_a_p90
    assert result.tracked_peak_a_bytes > 0 and result.tracked_peak_b_bytes > result.tracked_peak_a_bytes * 0.5
    assert result.model_b == "lrurec:scan=sequential"


def test_cli_appends_rows_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "ab.csv"
    argv = ["sasrec", "sasrec:attention=math", "--batch-size", "2", "--seq-len", "8", "--layers", "1",
            "--d-model", "8", "--n-items", "20", "--rounds", "2", "--warmup", "0", "--out", str(out)]
    assert ab.main(argv) == 0 and ab.main(argv) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and rows[0]["model_b"] == "sasrec:attention=math"
    assert b"\r" not in out.read_bytes()  # "\n" line ends, as every CSV the suite writes
    other = tmp_path / "other.csv"
    other.write_text("model,status\nx,ok\n")
    capsys.readouterr()
    for bad in (["nope", "sasrec"], ["sasrec", "sasrec:heads=3"], ["sasrec", "linrec", "--rounds", "0"],
                ["sasrec", "linrec", "--out", str(tmp_path)],
                ["sasrec", "linrec", "--rounds", "1000", "--out", str(other)]):  # refused before measuring
        assert ab.main(bad) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("bench.ab: error:")
    assert len(list(csv.DictReader(out.open()))) == 2
    assert other.read_text() == "model,status\nx,ok\n"


def test_sigterm_takes_the_interrupt_path():
    """bench.cli.run turns SIGTERM into KeyboardInterrupt, so commands clean up (kill the running
    child, keep finished rows) instead of dying and orphaning a measurement process."""
    import os
    import signal

    from bench import cli

    def main():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt:
            return 130
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.run(main)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exit_info.value.code == 130
