"""Data loaders (three formats, malformed files), the leave-one-out samples, the synthetic
generator and the MovieLens-1M conversion script, all on tiny files written here."""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest
import torch

from bench.train import data as seqdata
from bench.train import train as trainer

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- the three formats --------------------------------------------------------------------------

def test_pairs_keep_file_order_and_remap_items_densely(tmp_path):
    # user 7's lines are not contiguous; original item ids 10, 30, 20, 99 -> dense by ascending id
    path = write(tmp_path / "pairs.txt", "7 30\n7 10\n5 99\n5 20\n7 20\n5 10\n\n7 99\n")
    ds = seqdata.load_dataset(path)
    assert ds.fmt == "pairs" and ds.users == ["7", "5"] and ds.n_items == 5  # 4 items + padding
    assert ds.item_ids == ["10", "20", "30", "99"]
    assert ds.sequence(0) == [3, 1, 2, 4] and ds.sequence(1) == [4, 2, 1]
    assert ds.skipped_users == 0 and int(ds.items.min()) == 1


def test_inter_sorts_each_user_by_timestamp_ties_keep_file_order(tmp_path):
    text = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "1\t50\t4\t300\n2\t60\t3\t5\n1\t40\t5\t100\n1\t70\t1\t200\n1\t60\t2\t200\n2\t50\t1\t1\n2\t40\t2\t9\n")
    ds = seqdata.load_dataset(write(tmp_path / "toy.inter", text))
    assert ds.fmt == "inter" and ds.users == ["1", "2"] and ds.n_items == 5
    originals = lambda u: [ds.item_ids[i - 1] for i in ds.sequence(u)]  # noqa: E731
    assert originals(0) == ["40", "70", "60", "50"]  # 100, 200 (file order: 70 then 60), 200, 300
    assert originals(1) == ["50", "60", "40"]  # 1, 5, 9


def test_lines_format_and_auto_detection(tmp_path):
    path = write(tmp_path / "Toys.txt", "1 5 6 7 8\n2 6 7 9\n3 9 5 6 7 8 1\n")
    ds = seqdata.load_dataset(path)
    assert ds.fmt == "lines" and ds.n_users == 3 and ds.n_items == 7  # items 1, 5..9 -> 6 + padding
    assert ds.sequence(2) == [6, 2, 3, 4, 5, 1]
    assert seqdata.load_dataset(path, "lines").sequence(0) == ds.sequence(0)


def test_users_with_fewer_than_three_items_are_skipped_and_counted(tmp_path):
    ds = seqdata.load_dataset(write(tmp_path / "u.txt", "1 4 5 6\n2 4 5\n3 7\n4 8 9 10 11\n"))
    assert ds.users == ["1", "4"] and ds.skipped_users == 2
    assert ds.n_items == 8  # items 4, 5 of the skipped users survive only through user 1; 7 is gone


# --- malformed files: one clear line naming the file and line --------------------------------------

@pytest.mark.parametrize("name,text,fmt,message", [
    ("bad.txt", "1 2\n1 3\n1 4 5\n", "pairs", "bad.txt:3: expected 'user item', got 3 field(s)"),
    ("abc.txt", "1 2\n1 x3\n", "pairs", "abc.txt:2: item id 'x3' is not an integer"),
    ("user.txt", "u1 2 3 4\n", "lines", "user.txt:1: user id 'u1' is not an integer"),
    ("dup.txt", "1 2 3 4\n2 3 4 5\n1 6 7 8\n", "lines", "dup.txt:3: user 1 appears again (first at line 1)"),
    ("empty.txt", "", "auto", "empty.txt: no interactions (empty file)"),
    ("blank.txt", "\n\n", "pairs", "blank.txt: no interactions (empty file)"),
    ("short.txt", "1 2 3\n2 4\n", "lines", "no user has at least 3 items (2 user(s), all skipped)"),
    ("t.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnoon\n", "auto",
     "t.inter:2: timestamp 'noon' is not a number"),
    ("n.inter", "user_id:token\titem_id:token\n1\t2\n", "auto", "RecBole header has no 'timestamp' column"),
    ("f.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\n", "auto", "f.inter:2: expected 3 tab-separated"),
])
def test_malformed_files_raise_one_line(tmp_path, name, text, fmt, message):
    with pytest.raises(seqdata.DataError) as err:
        seqdata.load_dataset(write(tmp_path / name, text), fmt)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(seqdata.DataError, match="no such file"):
        seqdata.load_dataset(tmp_path / "nope.txt")
    with pytest.raises(seqdata.DataError, match="is a folder"):
        seqdata.load_dataset(tmp_path)


def test_train_cli_on_malformed_data_is_one_line_exit_2_nothing_written(tmp_path, capsys):
    path = write(tmp_path / "bad.txt", "1 2\n1 zz\n")
    out = tmp_path / "run"
    assert trainer.main(["--model", "recgrela", "--data", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.txt:2: item id 'zz' is not an integer" in err and err.count("\n") == 1
    assert "Traceback" not in err and not out.exists()


# --- samples and padded inputs ---------------------------------------------------------------------

@pytest.fixture
def tiny():
    return seqdata.from_sequences({"a": [1, 2, 3, 4, 5, 6], "b": [7, 8, 9], "c": [2, 4, 6, 8]})


def test_leave_one_out_and_every_training_prefix(tiny):
    train = seqdata.train_samples(tiny)
    # a: n=6 -> targets at 1, 2, 3; b: n=3 -> none; c: n=4 -> target at 1
    assert train.user.tolist() == [0, 0, 0, 2] and train.end.tolist() == [1, 2, 3, 1]
    item_seq, target = seqdata.padded_inputs(tiny, train, max_len=4)
    assert item_seq.tolist() == [[1, 0, 0, 0], [1, 2, 0, 0], [1, 2, 3, 0], [2, 0, 0, 0]]
    assert target.tolist() == [2, 3, 4, 4]  # never the validation (s_{n-2}) or test item
    valid, test = seqdata.split_samples(tiny, "valid"), seqdata.split_samples(tiny, "test")
    item_seq, target = seqdata.padded_inputs(tiny, valid, max_len=4)
    assert item_seq.tolist() == [[1, 2, 3, 4], [7, 0, 0, 0], [2, 4, 0, 0]] and target.tolist() == [5, 8, 6]
    item_seq, target = seqdata.padded_inputs(tiny, test, max_len=3)  # the LAST 3 items are kept
    assert item_seq.tolist() == [[3, 4, 5], [7, 8, 0], [2, 4, 6]] and target.tolist() == [6, 9, 8]


def test_sample_prefixes_per_user(tiny):
    ds = seqdata.from_sequences({str(u): list(range(1, 3 + u)) for u in range(1, 30)})  # n = 3 .. 31
    every = seqdata.train_samples(ds)
    picked = seqdata.sample_prefixes(every, 2, torch.Generator().manual_seed(0))
    counts = torch.bincount(picked.user, minlength=ds.n_users)
    assert counts.tolist() == [min(2, n - 3) for n in ds.lengths.tolist()]
    pairs = set(zip(picked.user.tolist(), picked.end.tolist()))
    assert len(pairs) == len(picked) and pairs <= set(zip(every.user.tolist(), every.end.tolist()))
    again = seqdata.sample_prefixes(every, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again.end, picked.end)
    assert len(seqdata.sample_prefixes(every, 0, torch.Generator())) == len(every)


def test_choose_users_is_a_fixed_subset(tiny):
    ds = seqdata.synthetic_dataset(n_users=50, n_items=40, mean_len=10, seed=3)
    subset = seqdata.choose_users(ds, 10, seed=1)
    assert len(subset) == 10 and torch.equal(subset, seqdata.choose_users(ds, 10, seed=1))
    assert torch.equal(seqdata.choose_users(ds, 0, 1), torch.arange(50))


def test_synthetic_generator_has_interests_and_bursts(tmp_path):
    ds = seqdata.synthetic_dataset(n_users=100, n_items=60, mean_len=20, n_topics=4, seed=7)
    again = seqdata.synthetic_dataset(n_users=100, n_items=60, mean_len=20, n_topics=4, seed=7)
    assert torch.equal(ds.items, again.items) and ds.n_users == 100
    assert int(ds.items.min()) >= 1 and int(ds.items.max()) == ds.n_items - 1
    assert int(ds.lengths.min()) >= seqdata.MIN_ITEMS
    steps = torch.cat([torch.tensor(ds.sequence(u)).diff() for u in range(ds.n_users)])
    assert (steps == 1).float().mean() > 0.1  # bursts walk item -> item + 1 (random pairs: ~1/60)
    seqdata.write_lines_file(ds, tmp_path / "syn.txt")
    assert torch.equal(seqdata.load_dataset(tmp_path / "syn.txt").items, ds.items)


# --- scripts/download_ml1m.py on a tiny zip -----------------------------------------------------------

def _script():
    spec = importlib.util.spec_from_file_location("download_ml1m", REPO / "scripts" / "download_ml1m.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ml1m_conversion_filters_sorts_and_remaps(tmp_path):
    script = _script()
    ratings = []
    for user in (1, 2, 3, 4, 5):  # movies 100..104 rated by everyone; movie 7 by one user only
        ratings += [f"{user}::{100 + j}::4::{1000 - 10 * j + user}" for j in range(5)]
    ratings += ["1::7::5::1", "9::100::3::5", "9::101::3::6"]  # user 9 has only 2 ratings
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "\n".join(ratings) + "\n")
        zf.writestr("ml-1m/README", "GroupLens terms")
    out = tmp_path / "ml"
    assert script.main(["--from-zip", str(archive), "--out", str(out)]) == 0
    ds = seqdata.load_dataset(out / "ml-1m.txt")
    assert ds.users == ["1", "2", "3", "4", "5"] and ds.n_items == 6  # movie 7 and user 9 filtered
    assert ds.sequence(0) == [5, 4, 3, 2, 1]  # later movies were rated earlier
    assert (out / "item_map.txt").read_text().splitlines()[1] == "1 100"
    assert (out / "GROUPLENS_README.txt").exists()
    assert script.main(["--from-zip", str(tmp_path / "missing.zip"), "--out", str(out)]) == 2
