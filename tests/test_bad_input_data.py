"""Bad data and bad flags of `python -m bench.train` and `python -m bench.rank`: one table of inputs a
real export or a slip of the hand can produce, each refused by the house contract (tests/badinput.py:
exit 2, one stderr line naming the cause, no traceback, nothing written in --out or beside it),
and the odd-but-valid inputs that must be accepted (UTF-8 BOM, \\r\\n line ends, trailing blanks,
negative timestamps).

Every file is written small into tmp_path; refusals come before any model is built or trained, so
the table runs in milliseconds a case. The rank cases read one untrained checkpoint saved once.
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from bench.grid import parse_model_spec
from bench.train import data as seqdata
from bench.train import rank as ranking
from bench.train import train as trainer
from tests.badinput import refused, refused_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

MAINS = {"bench.train": trainer.main, "bench.rank": ranking.main}
TINY = ["--model", "sasrec", "--max-len", "8", "--d-model", "8", "--layers", "1", "--heads", "2", "--epochs", "1",
        "--batch-size", "16", "--device", "cpu"]


def pairs(n_users: int, per_user: int, n_items: int = 15) -> str:
    """`user item` lines: n_users users with per_user items each, drawn from items 1..n_items."""
    return "".join(f"{u} {(u + k) % n_items + 1}\n" for u in range(1, n_users + 1) for k in range(per_user))


GOOD = pairs(20, 6)  # 20 users x 6 items over a catalogue of 15: trainable
HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def inter(*rows: str, header: str = HEADER) -> str:
    """A RecBole .inter text: the header, then good rows (3 users x 5 items), then `rows`."""
    good = "".join(f"{u}\t{10 + (u * 3 + k) % 14}\t{100 * k + u}\n" for u in range(1, 4) for k in range(5))
    return header + good + "".join(row + "\n" for row in rows)


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n")
    return buffer.getvalue()


# name -> bytes of the file; argv below names them as {NAME}
FILES = {
    "good.txt": GOOD.encode(),
    "three_items.txt": pairs(30, 3, n_items=11).encode(),  # case 01: leave-one-out leaves no training prefix
    "two_items.txt": pairs(10, 2).encode(),
    "one_item.txt": pairs(10, 5, n_items=1).encode(),
    "five_items.txt": pairs(10, 6, n_items=5).encode(),
    "empty.txt": b"",
    "blank.txt": b"\n  \n\t\n",
    "header_only.inter": HEADER.encode(),
    "utf16.txt": GOOD.encode("utf-16"),  # with its byte-order mark
    "utf16le.txt": GOOD.encode("utf-16-le"),  # no mark: every other byte is NUL
    "utf32.txt": GOOD.encode("utf-32"),
    "latin1.txt": ("1 5\n1 7\n1 caf\xe9\n" + GOOD).encode("latin-1"),
    "binary.bin": bytes(range(256)) * 4,
    "highbytes.bin": bytes(range(128, 256)) * 8,  # no NUL, not UTF-8 either
    "gzipped.txt": gzip.compress(GOOD.encode()),
    "zipped.txt": _zip_bytes(),
    "zwsp.txt": ("1 5\n1 \u200b7\n" + GOOD).encode(),
    "nbsp.txt": ("1 5\n1 1\u00a07\n" + GOOD).encode(),
    "bom_inside.txt": ("1 5\n\ufeff1 7\n" + GOOD).encode(),
    "lone_cr.txt": GOOD.replace("\n", "\r").encode(),
    "formfeed.txt": ("1 5\n1\x0c7\n" + GOOD).encode(),
    "fullwidth.txt": ("1 5\n1 \uff17\n" + GOOD).encode(),
    "comma.txt": GOOD.replace(" ", ",").encode(),
    "csv_header.txt": ("user_id,item_id,timestamp\n" + GOOD.replace(" ", ",")).encode(),
    "semicolon.txt": GOOD.replace(" ", ";").encode(),
    "ratings.dat": "".join(f"{line.replace(' ', '::')}::5::97830076{i % 10}\n"
                           for i, line in enumerate(GOOD.splitlines())).encode(),
    "negative.txt": ("1 5\n1 -1\n" + GOOD).encode(),
    "float_id.txt": ("1 5\n1 7.0\n" + GOOD).encode(),
    "exp_id.txt": ("1 5\n1 1e3\n" + GOOD).encode(),
    "nan_id.txt": ("1 5\n1 nan\n" + GOOD).encode(),
    "huge_id.txt": ("1 5\n1 92233720368547758070\n" + GOOD).encode(),
    "plus_id.txt": ("1 5\n1 +7\n" + GOOD).encode(),
    "underscore_id.txt": ("1 5\n1 1_000\n" + GOOD).encode(),
    "header_pairs.txt": ("user item\n" + GOOD).encode(),
    "three_columns.txt": "".join(f"{line} 5\n" for line in GOOD.splitlines()).encode(),
    "short_pair.txt": ("1 5\n1 7\n1\n" + GOOD).encode(),
    "lines.txt": "".join(f"{u} 1 2 3 4 5 6\n" for u in range(1, 21)).encode(),
    "ts_inf.inter": inter("4\t11\tinf").encode(),
    "ts_nan.inter": inter("4\t11\tnan").encode(),
    "ts_minus_inf.inter": inter("4\t11\t-inf").encode(),
    "ts_text.inter": inter("4\t11\t2020-01-01").encode(),
    "ts_empty.inter": inter("4\t11\t").encode(),
    "ts_huge.inter": inter("4\t11\t1e400").encode(),
    "item_empty.inter": inter("4\t\t7").encode(),
    "item_null.inter": inter("4\tNULL\t7").encode(),
    "item_negative.inter": inter("4\t-1\t7").encode(),
    "item_float.inter": inter("4\t12.0\t7").encode(),
    "user_nbsp.inter": inter("4\u00a05\t12\t7").encode(),
    "user_space.inter": inter("4 5\t12\t7").encode(),
    "no_timestamp.inter": b"user_id:token\titem_id:token\n1\t2\n",
    "spaces.inter": HEADER.replace("\t", " ").encode() + b"1 2 3\n",
    "commas.inter": HEADER.replace("\t", ",").encode() + b"1,2,3\n",
    "no_header.inter": b"1\t2\t3\n2\t3\t4\n",
    "short_row.inter": inter("4\t12").encode(),
    "long_row.inter": inter("4\t12\t7\t9").encode(),
}

OUT = "{tmp}/run"
T = ["bench.train", *TINY, "--out", OUT]  # the train command minus --data
R = ["bench.rank", "--checkpoints", "{ckpt}", "--out", OUT]  # the rank command minus --data

# (id, argv, what the one error line must say); {NAME} is a file of FILES, {tmp} the test folder
CASES = [
    # --- the data file: what it is --------------------------------------------------------------
    ("missing-data", [*T, "--data", "{tmp}/nope.txt"], "nope.txt: no such file"),
    ("data-is-a-folder", [*T, "--data", "{tmp}"], "is a folder"),
    ("data-is-a-fifo", [*T, "--data", "{tmp}/fifo"], "not a regular file"),
    ("data-empty-path", [*T, "--data", ""], "not a usable path"),
    ("empty-file", [*T, "--data", "{empty.txt}"], "empty.txt: no interactions (empty file)"),
    ("only-blank-lines", [*T, "--data", "{blank.txt}"], "only blank lines"),
    ("header-only-inter", [*T, "--data", "{header_only.inter}"], "header_only.inter: a header and no interaction rows"),
    # --- encodings and binary files ---------------------------------------------------------------
    ("utf16-with-bom", [*T, "--data", "{utf16.txt}"], "utf16.txt: UTF-16 text"),
    ("utf16-without-bom", [*T, "--data", "{utf16le.txt}"], "utf16le.txt: UTF-16 text"),
    ("utf32", [*T, "--data", "{utf32.txt}"], "utf32.txt: UTF-32 text"),
    ("latin1-byte", [*T, "--data", "{latin1.txt}"], "latin1.txt:3: byte 0xE9 at column 6 is not UTF-8"),
    ("binary-with-nul", [*T, "--data", "{binary.bin}"], "binary.bin: a binary file"),
    ("binary-high-bytes", [*T, "--data", "{highbytes.bin}"], "highbytes.bin: a binary file"),
    ("gzip-given-uncompressed", [*T, "--data", "{gzipped.txt}"], "gzip-compressed"),
    ("zip-archive", [*T, "--data", "{zipped.txt}"], "a zip archive"),
    ("checkpoint-as-data", ["bench.rank", "--checkpoints", "{ckpt}", "--out", OUT, "--data", "{ckpt}"], "a zip archive"),
    # --- invisible and odd characters -----------------------------------------------------------------
    ("zero-width-space", [*T, "--data", "{zwsp.txt}"], "zwsp.txt:2: U+200B ZERO WIDTH SPACE at column 3"),
    ("no-break-space-in-id", [*T, "--data", "{nbsp.txt}"], "nbsp.txt:2: U+00A0 NO-BREAK SPACE at column 4"),
    ("bom-inside-the-file", [*T, "--data", "{bom_inside.txt}"], "bom_inside.txt:2: U+FEFF"),
    ("lone-cr-line-ends", [*T, "--data", "{lone_cr.txt}"], "carriage return"),
    ("form-feed-separator", [*T, "--data", "{formfeed.txt}"], "formfeed.txt:2: U+000C"),
    ("fullwidth-digit", [*T, "--data", "{fullwidth.txt}"], "fullwidth.txt:2: U+FF17 FULLWIDTH DIGIT SEVEN"),
    # --- separators and columns -------------------------------------------------------------------------
    ("comma-separated", [*T, "--data", "{comma.txt}"], "comma.txt:1: user id '1,2' holds ','"),
    ("csv-with-header", [*T, "--data", "{csv_header.txt}"], "holds ','"),
    ("semicolon-separated", [*T, "--data", "{semicolon.txt}"], "holds ';'"),
    ("movielens-ratings-dat", [*T, "--data", "{ratings.dat}"], "holds '::'"),
    ("header-line-in-pairs", [*T, "--data", "{header_pairs.txt}"], "header_pairs.txt:1: user id 'user' is not an integer"),
    ("pairs-with-rating-column", [*T, "--data", "{three_columns.txt}", "--format", "pairs"], "got 3 field(s)"),
    ("rating-column-auto-lines", [*T, "--data", "{three_columns.txt}"], "appears again"),
    ("pairs-with-a-one-field-line", [*T, "--data", "{short_pair.txt}"],
     "short_pair.txt:3: expected 'user item' like the other lines, got 1 field(s)"),
    ("inter-read-as-pairs", [*T, "--data", "{ts_inf.inter}", "--format", "pairs"], "a RecBole header: pass --format inter"),
    ("lines-file-read-as-pairs", [*T, "--data", "{lines.txt}", "--format", "pairs"], "lines.txt:1: expected 'user item', got 7"),
    ("pairs-file-read-as-inter", [*T, "--data", "{good.txt}", "--format", "inter"], "not a RecBole header"),
    # --- ids ------------------------------------------------------------------------------------------------
    ("negative-id", [*T, "--data", "{negative.txt}"], "negative.txt:2: item id '-1' is negative"),
    ("float-id", [*T, "--data", "{float_id.txt}"], "float_id.txt:2: item id '7.0' is a decimal number"),
    ("exponent-id", [*T, "--data", "{exp_id.txt}"], "item id '1e3' is a decimal number"),
    ("nan-id", [*T, "--data", "{nan_id.txt}"], "item id 'nan' is a missing value"),
    ("id-beyond-int64", [*T, "--data", "{huge_id.txt}"], "larger than the int64 maximum"),
    ("plus-signed-id", [*T, "--data", "{plus_id.txt}"], "item id '+7' is not a plain integer"),
    ("underscore-id", [*T, "--data", "{underscore_id.txt}"], "item id '1_000' is not a plain integer"),
    # --- RecBole .inter files ---------------------------------------------------------------------------------
    ("timestamp-inf", [*T, "--data", "{ts_inf.inter}"], "ts_inf.inter:17: timestamp 'inf' is not finite"),
    ("timestamp-nan", [*T, "--data", "{ts_nan.inter}"], "timestamp 'nan' is not finite"),
    ("timestamp-minus-inf", [*T, "--data", "{ts_minus_inf.inter}"], "timestamp '-inf' is not finite"),
    ("timestamp-overflows", [*T, "--data", "{ts_huge.inter}"], "timestamp '1e400' is not finite"),
    ("timestamp-a-date", [*T, "--data", "{ts_text.inter}"], "timestamp '2020-01-01' is not a number"),
    ("timestamp-empty", [*T, "--data", "{ts_empty.inter}"], "ts_empty.inter:17: empty timestamp"),
    ("item-empty", [*T, "--data", "{item_empty.inter}"], "item_empty.inter:17: empty item id"),
    ("item-null-marker", [*T, "--data", "{item_null.inter}"], "item id 'NULL' is a missing value"),
    ("item-negative-token", [*T, "--data", "{item_negative.inter}"], "item id '-1' is negative"),
    ("item-float-token", [*T, "--data", "{item_float.inter}"], "item id '12.0' is a decimal number"),
    ("user-no-break-space", [*T, "--data", "{user_nbsp.inter}"], "user_nbsp.inter:17: U+00A0 NO-BREAK SPACE"),
    ("user-inner-space", [*T, "--data", "{user_space.inter}"], "user id '4 5' holds a space"),
    ("no-timestamp-column", [*T, "--data", "{no_timestamp.inter}"], "no 'timestamp' column"),
    ("inter-space-separated", [*T, "--data", "{spaces.inter}"], "spaces.inter:1: the header is not tab-separated"),
    ("inter-comma-separated", [*T, "--data", "{commas.inter}"], "commas.inter:1: the header is not tab-separated"),
    ("inter-without-header", [*T, "--data", "{no_header.inter}"], "no_header.inter:1: not a RecBole header"),
    ("inter-short-row", [*T, "--data", "{short_row.inter}"], "short_row.inter:17: expected 3 tab-separated fields, got 2"),
    ("inter-long-row", [*T, "--data", "{long_row.inter}"], "long_row.inter:17: expected 3 tab-separated fields, got 4"),
    # --- data that parses but cannot train ----------------------------------------------------------------------
    ("no-training-samples", [*T, "--data", "{three_items.txt}"],
     "three_items.txt: no training samples: every kept user has exactly 3 items"),
    ("every-user-too-short", [*T, "--data", "{two_items.txt}"], "no user has at least 3 items (10 user(s), all skipped)"),
    ("catalogue-of-one-item", [*T, "--data", "{one_item.txt}"], "one_item.txt: only 1 distinct item"),
    ("catalogue-of-five-items", [*T, "--data", "{five_items.txt}"], "only 5 distinct items"),
    # --- flags of bench.train --------------------------------------------------------------------------------------
    ("out-is-a-file", ["bench.train", *TINY, "--data", "{good.txt}", "--out", "{good.txt}"], "is a file, not a folder"),
    ("out-parent-is-a-file", ["bench.train", *TINY, "--data", "{good.txt}", "--out", "{good.txt}/run"], "is a file, not a folder"),
    ("out-in-proc", ["bench.train", *TINY, "--data", "{good.txt}", "--out", "/proc/seqrec-run"], "cannot write in /proc"),
    ("out-name-too-long", ["bench.train", *TINY, "--data", "{good.txt}", "--out", "{tmp}/" + "x" * 300], "longer than"),
    ("out-holds-a-run", ["bench.train", *TINY, "--data", "{good.txt}", "--out", "{tmp}/done"], "already holds a run"),
    ("threads-beyond-cpus", [*T, "--data", "{good.txt}", "--threads", "100000"], "threads asked for"),
    ("threads-negative", [*T, "--data", "{good.txt}", "--threads", "-1"], "non-negative integer"),
    ("device-unknown", [*T, "--data", "{good.txt}", "--device", "tpu"], "--device"),
    ("device-meta", [*T, "--data", "{good.txt}", "--device", "meta"], "Supported device types"),
    ("d-model-beyond-memory", [*T, "--data", "{good.txt}", "--d-model", "1000000000", "--heads", "1"],
     "more than this machine's"),
    ("max-minutes-nan", [*T, "--data", "{good.txt}", "--max-minutes", "nan"], "non-negative number"),
    ("max-minutes-inf", [*T, "--data", "{good.txt}", "--max-minutes", "inf"], "non-negative number"),
    ("epochs-beyond-int32", [*T, "--data", "{good.txt}", "--epochs", "99999999999"], "larger than"),
    ("batch-size-zero", [*T, "--data", "{good.txt}", "--batch-size", "0"], "positive integer"),
    # --- bench.rank ------------------------------------------------------------------------------------------------------
    ("rank-missing-checkpoint", ["bench.rank", "--checkpoints", "{tmp}/none.pt", "--data", "{good.txt}", "--out", OUT],
     "none.pt: no such file"),
    ("rank-checkpoint-is-a-folder", ["bench.rank", "--checkpoints", "{tmp}", "--data", "{good.txt}", "--out", OUT],
     "is a folder"),
    ("rank-checkpoint-twice", ["bench.rank", "--checkpoints", "{ckpt}", "{ckpt}", "--data", "{good.txt}", "--out", OUT],
     "names ckpt.pt twice"),
    ("rank-junk-checkpoint", ["bench.rank", "--checkpoints", "{good.txt}", "--data", "{good.txt}", "--out", OUT],
     "not a readable checkpoint"),
    ("rank-empty-checkpoint", ["bench.rank", "--checkpoints", "{empty.txt}", "--data", "{good.txt}", "--out", OUT],
     "empty.txt: not a readable checkpoint: empty file"),
    ("rank-truncated-checkpoint", ["bench.rank", "--checkpoints", "{truncated.pt}", "--data", "{good.txt}", "--out", OUT],
     "truncated or corrupt"),
    ("rank-pickled-module", ["bench.rank", "--checkpoints", "{pickled.pt}", "--data", "{good.txt}", "--out", OUT],
     "pickled Python objects"),
    ("rank-state-dict-only", ["bench.rank", "--checkpoints", "{weights.pt}", "--data", "{good.txt}", "--out", OUT],
     "not a bench.train checkpoint"),
    ("rank-weights-do-not-fit", ["bench.rank", "--checkpoints", "{misfit.pt}", "--data", "{good.txt}", "--out", OUT],
     "does not fit model"),
    ("rank-other-catalogue-size", [*R, "--data", "{five_items.txt}"], "was trained on 16 item ids"),
    ("rank-same-size-other-items", [*R, "--data", "{shifted.txt}"], "other item ids"),
    ("rank-second-checkpoint-mismatch", ["bench.rank", "--checkpoints", "{ckpt}", "{other.pt}", "--data", "{good.txt}",
                                         "--out", OUT], "other.pt was trained on 7 item ids"),
    ("rank-bad-data", [*R, "--data", "{latin1.txt}"], "latin1.txt:3: byte 0xE9"),
    ("rank-missing-data", [*R, "--data", "{tmp}/nope.txt"], "no such file"),
    ("rank-out-is-a-file", ["bench.rank", "--checkpoints", "{ckpt}", "--data", "{good.txt}", "--out", "{good.txt}"],
     "is a file, not a folder"),
    ("rank-out-in-proc", ["bench.rank", "--checkpoints", "{ckpt}", "--data", "{good.txt}", "--out", "/proc/x"],
     "cannot write in /proc"),
    ("rank-device-meta", [*R, "--data", "{good.txt}", "--device", "meta"], "Supported device types"),
    ("rank-users-negative", [*R, "--data", "{good.txt}", "--users", "-1"], "non-negative integer"),
    ("rank-rtol-above-one", [*R, "--data", "{good.txt}", "--rtol", "2"], "relative tolerance"),
]
if not torch.cuda.is_available():
    CASES += [
        ("device-cuda-without-cuda", [*T, "--data", "{good.txt}", "--device", "cuda"], "CUDA is not available"),
        ("rank-device-cuda-without-cuda", [*R, "--data", "{good.txt}", "--device", "cuda"], "CUDA is not available"),
    ]


def _save_model_checkpoint(path: Path, n_items: int, item_ids: list | None = None) -> None:
    torch.manual_seed(0)
    model = trainer.build_model(parse_model_spec("sasrec"), n_items, 8, d_model=8, n_layers=1, n_heads=2)
    header = {"format": trainer.CHECKPOINT_FORMAT, "model": "sasrec", "model_spec": "sasrec", "variant": "default",
              "config": dict(vars(model.config)), "epoch": 1, "n_items": n_items}
    if item_ids is not None:
        header["item_fingerprint"] = seqdata.item_fingerprint(item_ids)
    trainer.save_checkpoint(path, model, header)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> dict:
    """Every file of FILES plus the checkpoints, written once; {name: path}."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {}
    for name, content in FILES.items():
        (root / name).write_bytes(content)
        paths[name] = root / name
    good = seqdata.load_dataset(root / "good.txt")
    shifted = root / "shifted.txt"  # the same number of items, other ids
    shifted.write_text(GOOD.replace(" ", " 10"))
    paths["shifted.txt"] = shifted
    paths["ckpt"] = root / "ckpt.pt"
    _save_model_checkpoint(paths["ckpt"], good.n_items, good.item_ids)
    paths["other.pt"] = root / "other.pt"
    _save_model_checkpoint(paths["other.pt"], 7)
    data = paths["ckpt"].read_bytes()
    paths["truncated.pt"] = root / "truncated.pt"
    paths["truncated.pt"].write_bytes(data[: len(data) // 2])
    paths["pickled.pt"] = root / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), paths["pickled.pt"])
    paths["weights.pt"] = root / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), paths["weights.pt"])
    blob = torch.load(paths["ckpt"], weights_only=True)
    blob["state_dict"] = {"nonsense": torch.zeros(3)}
    paths["misfit.pt"] = root / "misfit.pt"
    torch.save(blob, paths["misfit.pt"])
    return paths


def _argv(argv: list[str], library: dict, tmp: Path) -> list[str]:
    """argv with {tmp} and every {NAME} of `library` replaced by its path."""
    out = []
    for arg in argv:
        for name, path in [("tmp", tmp), *library.items()]:
            arg = arg.replace("{" + name + "}", str(path))
        out.append(arg)
    return out


@pytest.mark.parametrize("argv,expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_refused_before_anything_is_written(argv, expected, library, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "metrics.csv").write_text("model\nsasrec\n")
    command, *rest = _argv(argv, library, tmp_path)
    line = refused(MAINS[command], rest, watched=[tmp_path / "run", tmp_path, library["ckpt"].parent])
    assert expected in line, line


def test_the_table_holds_real_different_inputs():
    ids = [case[0] for case in CASES]
    argvs = [tuple(case[1]) for case in CASES]
    assert len(set(ids)) == len(ids) and len(set(argvs)) == len(argvs) and len(CASES) >= 50


# --- case 01 through the real entry point, and the pickled checkpoint's warning ------------------------

def test_case01_no_training_samples_through_the_cli(tmp_path):
    """30 users of exactly 3 items (the case of /work/shared/cases/01, generated here): one line naming the
    file and the real cause, exit 2, and --out never created; no word of a time budget."""
    data = tmp_path / "three_items.txt"
    data.write_text(pairs(30, 3, n_items=11))
    out = tmp_path / "case01"
    line = refused_cli("bench.train", ["--model", "sasrec", "--data", str(data), "--max-len", "5", "--epochs", "2",
                                       "--batch-size", "8", "--d-model", "16", "--layers", "1", "--heads", "1",
                                       "--threads", "1", "--out", str(out)], watched=[out, tmp_path])
    assert f"{data}: no training samples: every kept user has exactly 3 items" in line
    assert "at least 4" in line and "max-minutes" not in line and not out.exists()


def test_pickled_checkpoint_is_one_line_through_the_cli(library, tmp_path):
    """torch.load warns on stderr about the pickle protocol of a plain pickle: the warning must not
    reach the user beside the error line."""
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(argparse.Namespace(a=1), protocol=4))
    line = refused_cli("bench.rank", ["--checkpoints", str(raw), "--data", str(library["good.txt"]), "--out",
                                      str(tmp_path / "run")], watched=[tmp_path])
    assert "not a readable checkpoint" in line


# --- odd but valid: accepted ------------------------------------------------------------------------

def _load(tmp_path: Path, name: str, content: bytes, fmt: str = "auto") -> seqdata.SequenceDataset:
    path = tmp_path / name
    path.write_bytes(content)
    return seqdata.load_dataset(path, fmt)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    plain = _load(tmp_path, "plain.txt", GOOD.encode())
    with_bom = _load(tmp_path, "bom.txt", b"\xef\xbb\xbf" + GOOD.encode())
    assert with_bom.users == plain.users and torch.equal(with_bom.items, plain.items)
    inter_bom = _load(tmp_path, "bom.inter", b"\xef\xbb\xbf" + inter().encode())
    assert inter_bom.n_users == 3 and inter_bom.fmt == "inter"


def test_crlf_line_ends_trailing_blanks_and_mixed_tabs_are_accepted(tmp_path):
    plain = _load(tmp_path, "plain.txt", GOOD.encode())
    odd = GOOD.replace(" ", " \t ").replace("\n", "  \t\r\n")
    crlf = _load(tmp_path, "crlf.txt", odd.encode())
    assert crlf.users == plain.users and torch.equal(crlf.items, plain.items)
    lines = _load(tmp_path, "lines.txt", b"1 5 6 7 8  \r\n2\t6 7 9\t\r\n")
    assert lines.fmt == "lines" and lines.lengths.tolist() == [4, 3]
    text = inter().replace("\n", "\r\n").replace("\t1\r\n", "\t1  \r\n")
    assert _load(tmp_path, "crlf.inter", text.encode()).n_users == 3
    trailing_tab = inter().replace("\n", "\t\n")  # an empty last column on every line: dropped
    assert _load(tmp_path, "tab.inter", trailing_tab.encode()).n_users == 3


def test_negative_and_fractional_timestamps_are_accepted(tmp_path):
    """Pre-1970 dates are negative Unix times: they sort like any other number."""
    text = HEADER + "1\t10\t-200.5\n1\t11\t-3e2\n1\t12\t0\n1\t13\t1.5e9\n1\t14\t-1000\n"
    ds = _load(tmp_path, "old.inter", text.encode())
    assert [ds.item_ids[i - 1] for i in ds.sequence(0)] == ["14", "11", "10", "12", "13"]


def test_a_recbole_header_without_the_inter_suffix_is_read_as_inter(tmp_path):
    ds = _load(tmp_path, "ml.tsv", inter().encode())
    assert ds.fmt == "inter" and ds.n_users == 3


def test_unicode_tokens_and_extra_columns_of_an_inter_file_are_accepted(tmp_path):
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\treview:token_seq\n"
    rows = "".join(f"u\u00e9{u}\tB00{k}\t5\t{k}\tgr\u00e4at  movie \u200b!\n" for u in range(2) for k in range(4))
    ds = _load(tmp_path, "tokens.inter", (header + rows).encode())
    assert ds.users == ["u\u00e90", "u\u00e91"] and ds.n_items == 5


def test_a_time_budget_that_falls_before_the_first_step_still_trains_one_step(tmp_path, library, capsys):
    """--max-minutes so small that the deadline passes before the first step: the run is not an
    error; one step is always taken, validated and tested, and the rows say the budget cut it."""
    out = tmp_path / "run"
    assert trainer.main(["--data", str(library["good.txt"]), "--out", str(out), "--max-minutes", "1e-9", *TINY]) == 0
    assert capsys.readouterr().err == ""
    rows = trainer.read_csv(out / "metrics.csv")
    assert [r["split"] for r in rows] == ["valid", "test"]
    assert rows[0]["train_steps"] == "1" and rows[-1]["stop_reason"] == "max_minutes"
