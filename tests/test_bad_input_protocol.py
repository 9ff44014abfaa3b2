"""`python -m bench.adapters.recbole_protocol` under bad input: one stderr line, exit 2, no traceback,
nothing written beside the data (the contract in tests/badinput.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput import refused

pytest.importorskip("recbole")

HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def _inter(folder: Path, name: str, body: str) -> Path:
    """A RecBole atomic file at folder/name/name.inter (the layout RecBole reads)."""
    path = folder / name / f"{name}.inter"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + body)
    return path


def _users(n_users: int, n_items: int) -> str:
    return "".join(f"{u}\t{(u * 5 + t) % 20 + 1}\t{u * 100 + t}\n" for u in range(1, n_users + 1) for t in range(n_items))


CASES = [
    ("no-data", lambda d: [], "--data"),
    ("missing-file", lambda d: ["--data", str(d / "nope" / "nope.inter")], "no such file"),
    ("a-folder", lambda d: ["--data", str(d)], "folder"),
    ("empty-file", lambda d: ["--data", str(_write(d / "e" / "e.inter", ""))], "empty"),
    ("header-only", lambda d: ["--data", str(_inter(d, "h", ""))], "no interaction rows"),
    ("not-a-recbole-header", lambda d: ["--data", str(_write(d / "b" / "b.inter", "a b c\n"))], "header"),
    ("too-few-items", lambda d: ["--data", str(_inter(d, "f", _users(5, 2)))], "at least 3"),
    ("no-training-sample", lambda d: ["--data", str(_inter(d, "t", _users(8, 3)))], "no training samples"),
    ("catalogue-of-ten", lambda d: ["--data", str(_inter(d, "c", "".join(
        f"{u}\t{t % 10 + 1}\t{t}\n" for u in range(1, 6) for t in range(6))))], "at least 11"),
    ("not-in-name-folder", lambda d: ["--data", str(_write(d / "x.inter", HEADER + _users(5, 5)))], "DATA_PATH/NAME"),
    ("max-len-zero", lambda d: ["--data", str(_inter(d, "m", _users(5, 5))), "--max-len", "0"], "positive integer"),
    ("max-len-huge", lambda d: ["--data", str(_inter(d, "m", _users(5, 5))), "--max-len", "99999999999"], "larger than"),
    ("seed-negative", lambda d: ["--data", str(_inter(d, "s", _users(5, 5))), "--seed", "-1"], "non-negative"),
    ("unknown-flag", lambda d: ["--data", str(_inter(d, "u", _users(5, 5))), "--epochs", "3"], "unrecognized"),
]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case,make_argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_protocol_input_is_refused_cleanly(case, make_argv, words, tmp_path):
    from bench.adapters import recbole_protocol

    argv = make_argv(tmp_path)
    line = refused(recbole_protocol.main, argv, watched=[tmp_path])
    assert words in line, line
