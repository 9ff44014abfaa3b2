"""RecBole's own data pipeline and evaluator against bench.data / bench.metrics on ML-100K.

Data: ../shared/data/ml-100k beside the project. Missing data or a missing `recbole` skips, except
under CI=true, where it fails. One RecBole split (about 6 s) is shared by the module.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from bench.train import data as seqdata
from bench.train import metrics as ourmetrics

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k" / "ml-100k.inter"
MAX_LEN = 50


def _require(ok: bool, what: str):
    if not ok:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the RecBole protocol tests: {what}")
        pytest.skip(what)


@pytest.fixture(scope="module")
def rp():
    try:
        from bench.adapters import recbole_protocol

        recbole_protocol.import_recbole()
    except ImportError as err:
        _require(False, f"recbole cannot be imported: {err}")
    return recbole_protocol


@pytest.fixture(scope="module")
def ml100k(rp, tmp_path_factory):
    """RecBole's split run from an empty working folder, which must stay empty, as the data folder."""
    _require(DATA.is_file(), f"{DATA} is missing")
    data_listing = sorted(os.listdir(DATA.parent))
    work = tmp_path_factory.mktemp("recbole-cwd")
    before = os.getcwd()
    os.chdir(work)
    try:
        config, dataset, split_data = rp.recbole_split(DATA, MAX_LEN)
    finally:
        os.chdir(before)
    assert os.listdir(work) == [], "RecBole wrote into its working folder"
    assert sorted(os.listdir(DATA.parent)) == data_listing, "RecBole wrote into the data folder"
    exact = seqdata.load_dataset(DATA, "inter")
    return {"config": config, "dataset": dataset, "split_data": split_data, "exact": exact,
            "ordered": rp.recbole_event_order(DATA, config),
            "theirs": rp.recbole_samples(dataset, split_data)}


@pytest.mark.slow
def test_same_samples_given_recbole_event_order(rp, ml100k):
    """Same users, items, and every train/valid/test sample (user, input tokens, target)."""
    ours, dataset = ml100k["ordered"], ml100k["dataset"]
    assert (ours.n_users, ours.n_items) == (dataset.user_num - 1, dataset.item_num)
    counts = rp.compare_samples(rp.our_samples(ours, MAX_LEN), ml100k["theirs"])
    assert counts["train"]["ours"] == int((ours.lengths - 3).sum())
    for split, row in counts.items():
        assert row["ours"] == row["recbole"] and row["mismatches"] == 0, (split, row)


def test_exact_timestamps_differ_only_where_float32_merges_them(rp, ml100k):
    """bench.data sorts by exact timestamps; RecBole by float32 ones. Samples differ only for users
    whose event order differs between the two keys (the finding: such users exist on ML-100K)."""
    reordered = set(rp.reordered_users(ml100k["exact"], ml100k["ordered"]))
    assert reordered
    ours = rp.our_samples(ml100k["exact"], MAX_LEN)

    def others(samples):
        return Counter(sample for sample in samples if sample[0] not in reordered)

    for split in rp.SPLITS:
        assert others(ours[split]) == others(ml100k["theirs"][split]), split
        assert len(ours[split]) == len(ml100k["theirs"][split])


def test_same_metrics_for_one_score_matrix(rp, ml100k):
    ours = ml100k["ordered"]
    scores = torch.rand(ours.n_users, ours.n_items, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    for split in ("valid", "test"):
        a = rp.our_metrics(ours, split, scores)
        b = rp.recbole_metrics(ml100k["config"], ml100k["dataset"], ml100k["split_data"][split], ours, scores)
        assert set(b) == set(ourmetrics.METRICS)
        for key in ourmetrics.METRICS:
            assert abs(a[key] - b[key]) < rp.TOLERANCE, (split, key, a[key], b[key])


def test_tie_rules(rp):
    """Ours: rank = #{real items scored >= target} - 1 (ties against the model). RecBole: the
    target's position in torch.topk's output (tie order is the kernel's), a miss outside it."""
    example = rp.tie_example()
    scores, target = example["scores"], example["target"]
    real = scores[:, 1:]
    documented = (real >= scores.gather(1, target[:, None])).sum(1) - 1
    assert torch.equal(example["our_rank"], documented)
    assert example["ours"] == ourmetrics.ranking_metrics(documented)
    assert example["our_rank"][2] == real.shape[1] - 1  # a constant scorer ranks the target last

    masked = scores.clone()
    masked[:, 0] = float("-inf")
    top = torch.topk(masked, max(ourmetrics.KS), dim=-1).indices
    position = torch.tensor([row.tolist().index(t) if t in row else 10**9 for row, t in zip(top, target)])
    expected = ourmetrics.ranking_metrics(position)
    for key in ourmetrics.METRICS:
        assert abs(example["recbole"][key] - expected[key]) < 1e-9, key

    in_top = position < 10**9
    assert torch.all(position[in_top] <= example["our_rank"][in_top])  # RecBole never ranks a hit lower
    assert position[0] == example["our_rank"][0]  # no tie at the target: the same rank
    assert torch.any(position != example["our_rank"])  # ties: the rules differ on this matrix


def test_cli_bad_input_is_one_line_exit_2(rp, tmp_path, capsys):
    assert rp.main(["--data", str(tmp_path / "missing.inter")]) == 2
    misplaced = tmp_path / "toy.inter"  # RecBole needs DATA_PATH/toy/toy.inter
    misplaced.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t1\t1\n1\t2\t2\n1\t3\t3\n")
    assert rp.main(["--data", str(misplaced)]) == 2
    assert rp.main(["--data", str(misplaced), "--max-len", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("bench.adapters.recbole_protocol: error:") for line in err)
