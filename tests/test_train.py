"""Metrics against hand-computed rankings, training steps, checkpoints and the bench.train CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch

import models
from bench.grid import parse_model_spec
from bench.train import data as seqdata
from bench.train import train as trainer
from bench.train.metrics import METRICS, ranking_metrics, target_ranks

TINY = ["--max-len", "8", "--d-model", "8", "--layers", "1", "--heads", "2", "--batch-size", "32",
        "--threads", "1", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py



# --- metrics ---------------------------------------------------------------------------------------

def test_ranks_count_items_scored_above_ties_against_the_target_padding_excluded():
    scores = torch.tensor([
        [9.0, 0.1, 0.5, 0.3, 0.2],  # target 3 (0.3): only item 2 is above -> rank 1; padding 9.0 ignored
        [0.0, 0.4, 0.4, 0.4, 0.1],  # target 2 ties with items 1 and 3: it loses both -> rank 2
        [0.0, 0.7, 0.6, 0.5, 0.9],  # target 4 is the best -> rank 0
        [0.0, 1.0, 1.0, 1.0, 1.0],  # constant scores: last (rank 3), never first
        [0.0, 0.2, float("nan"), 0.1, 0.3],  # target 1: item 4 above, the NaN item counts above -> rank 2
        [0.0, 0.2, float("nan"), 0.1, 0.3],  # a NaN target ranks last -> rank N - 1 = 4
    ])
    target = torch.tensor([3, 2, 4, 1, 1, 2])
    assert target_ranks(scores, target).tolist() == [1, 2, 0, 3, 2, 4]
    assert scores[0, 0] == 9.0  # the caller's scores are not modified


def test_metrics_match_hand_computed_values():
    ranks = torch.tensor([0, 1, 4, 5, 9, 10])
    got = ranking_metrics(ranks)
    n = 6
    assert got["hr@5"] == pytest.approx(3 / n) and got["hr@10"] == pytest.approx(5 / n)
    assert got["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / n)
    assert got["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(7)
                                            + 1 / math.log2(11)) / n)
    assert got["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / n)
    assert got["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 6 + 1 / 10) / n)
    assert set(got) == set(METRICS)


def test_evaluate_matches_a_per_user_sort():
    ds = seqdata.synthetic_dataset(n_users=40, n_items=30, mean_len=10, seed=2)
    torch.manual_seed(0)
    model = models.build("sasrec", n_items=ds.n_items, max_len=8, d_model=8, n_layers=1, n_heads=2)
    samples = seqdata.split_samples(ds, "test")
    got = trainer.evaluate(model, ds, samples, 8, batch_size=7, device=torch.device("cpu"))
    item_seq, target = seqdata.padded_inputs(ds, samples, 8)
    with torch.no_grad():
        scores = model.full_scores(item_seq)
    ranks = []
    for row, t in zip(scores, target):  # the slow oracle: sort the catalogue, find the target
        order = [i for i in torch.argsort(row, descending=True, stable=True).tolist() if i != 0]
        ranks.append(order.index(int(t)))
    assert got["ndcg@10"] == pytest.approx(ranking_metrics(torch.tensor(ranks))["ndcg@10"])
    assert got["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(scores, target)), rel=1e-5)


# --- training ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic():
    return seqdata.synthetic_dataset(n_users=60, n_items=40, mean_len=12, seed=1)


def test_a_few_training_steps_reduce_the_loss(synthetic):
    torch.manual_seed(0)
    spec = parse_model_spec("recgrela")
    model = trainer.build_model(spec, synthetic.n_items, 8, d_model=16, n_layers=2, n_heads=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    samples = seqdata.train_samples(synthetic).subset(torch.arange(64))
    cpu = torch.device("cpu")
    before = trainer.evaluate(model, synthetic, samples, 8, 64, cpu)["loss"]
    for _ in range(4):  # 16 Adam steps
        result = trainer.train_epoch(model, optimizer, synthetic, samples, 8, 16, cpu, torch.Generator().manual_seed(0))
    after = trainer.evaluate(model, synthetic, samples, 8, 64, cpu)["loss"]
    assert result["train_samples"] == 64 and result["train_steps"] == 4 and after < before - 0.05


@pytest.mark.parametrize("name", models.available())
def test_every_registered_model_trains_and_evaluates(name, synthetic):
    torch.manual_seed(0)
    model = trainer.build_model(parse_model_spec(name), synthetic.n_items, 8, d_model=8, n_layers=2, n_heads=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    samples = seqdata.sample_prefixes(seqdata.train_samples(synthetic), 1, torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    result = trainer.train_epoch(model, optimizer, synthetic, samples, 8, 32, cpu, torch.Generator().manual_seed(0))
    metrics = trainer.evaluate(model, synthetic, seqdata.split_samples(synthetic, "valid", torch.arange(16)), 8, 64, cpu)
    assert math.isfinite(result["train_loss"]) and all(0 <= metrics[m] <= 1 for m in METRICS)


def test_checkpoint_round_trip_is_weights_only(tmp_path, synthetic):
    torch.manual_seed(0)
    model = trainer.build_model(parse_model_spec("recgrela:local_shortcut=false"), synthetic.n_items, 8,
                                d_model=8, n_layers=1, n_heads=2)
    header = {"format": trainer.CHECKPOINT_FORMAT, "model": "recgrela", "model_spec": "recgrela:local_shortcut=false",
              "config": dict(vars(model.config)), "epoch": 3}
    path = tmp_path / "checkpoint.pt"
    trainer.save_checkpoint(path, model, header)
    raw = torch.load(path, weights_only=True)  # plain containers and tensors only
    assert raw["header"]["epoch"] == 3 and json.dumps(raw["header"])
    loaded, got_header = trainer.load_checkpoint(path)
    assert got_header["config"]["local_shortcut"] is False and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    item_seq, _ = seqdata.padded_inputs(synthetic, seqdata.split_samples(synthetic, "test"), 8)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.full_scores(item_seq), loaded.full_scores(item_seq))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(trainer.CheckpointError, match="not a readable checkpoint"):
        trainer.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(trainer.CheckpointError, match="not a bench.train checkpoint"):
        trainer.load_checkpoint(tmp_path / "other.pt")


# --- the command line -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_file(tmp_path_factory, synthetic):
    path = tmp_path_factory.mktemp("data") / "syn.txt"
    seqdata.write_lines_file(synthetic, path)
    return path


def test_cli_writes_epoch_rows_test_row_checkpoint_and_config(tmp_path, data_file, capsys):
    out = tmp_path / "run"
    argv = ["--model", "recgrela:drop_path=0", "--data", str(data_file), "--epochs", "2", "--out", str(out),
            "--prefixes-per-user", "3", "--valid-users", "20", "--seed", "5"] + TINY
    assert trainer.main(argv) == 0
    text = capsys.readouterr().out
    assert "epoch 1/2" in text and "test (epoch" in text
    rows = trainer.read_csv(out / "metrics.csv")
    assert [(r["split"], r["epoch"]) for r in rows][:2] == [("valid", "1"), ("valid", "2")]
    test = rows[-1]
    assert test["split"] == "test" and test["epoch"] == test["best_epoch"] and test["eval_users"] == "60"
    required = ["model", "model_spec", "epoch", "split", "loss", *METRICS, "seconds", "max_epochs",
                "prefixes_per_user", "valid_users", "max_minutes", "seed", "max_len", "d_model", "n_layers",
                "n_heads", "dataset", "device", "torch_version", "git_commit"]
    assert set(required) <= set(rows[0])
    assert test["model"] == "recgrela" and test["model_spec"] == "recgrela:drop_path=0"
    assert rows[0]["eval_users"] == "20" and rows[0]["seed"] == "5" and rows[0]["prefixes_per_user"] == "3"
    assert int(rows[0]["train_samples"]) <= 3 * 60
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["drop_path"] == 0 and config["budget"]["max_epochs"] == 2
    _, header = trainer.load_checkpoint(out / "checkpoint.pt")
    assert header["epoch"] == int(test["best_epoch"])
    assert [r["model_spec"] for r in trainer.read_test_metrics([out])] == ["recgrela:drop_path=0"]
    # a second run into the same folder is refused without touching it
    assert trainer.main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err and len(trainer.read_csv(out / "metrics.csv")) == 3


def test_cli_early_stopping_on_patience(tmp_path, data_file, capsys):
    out = tmp_path / "run"
    # an update too small to move any ranking: validation NDCG@10 never strictly improves
    assert trainer.main(["--model", "linrec", "--data", str(data_file), "--epochs", "6", "--patience", "2",
                         "--lr", "1e-12", "--prefixes-per-user", "1", "--out", str(out)] + TINY) == 0
    rows = trainer.read_csv(out / "metrics.csv")
    assert [r["split"] for r in rows] == ["valid"] * 3 + ["test"]
    assert rows[-1]["stop_reason"] == "patience" and rows[-1]["best_epoch"] == "1"


def test_ctrl_c_keeps_completed_epochs(tmp_path, data_file, capsys, monkeypatch):
    calls = []
    real = trainer.train_epoch

    def interrupted_on_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", interrupted_on_second_epoch)
    out = tmp_path / "run"
    assert trainer.main(["--model", "sasrec", "--data", str(data_file), "--epochs", "5",
                         "--prefixes-per-user", "1", "--out", str(out)] + TINY) == 130
    assert "interrupted" in capsys.readouterr().err
    rows = trainer.read_csv(out / "metrics.csv")
    assert [(r["epoch"], r["split"]) for r in rows] == [("1", "valid")]
    assert trainer.load_checkpoint(out / "checkpoint.pt")[1]["epoch"] == 1
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("extra,message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "recgrela:bogus=1"], "valid keys"),
    (["--model", "recgrela:max_len=5"], "grid dimension"),
    (["--model", "recgrela", "--heads", "3"], "does not divide"),
    (["--model", "recgrela", "--epochs", "0"], "positive integer"),
    (["--model", "recgrela", "--lr", "-1"], "positive number"),
    (["--model", "recgrela", "--max-minutes", "soon"], "non-negative number"),
    (["--model", "recgrela", "--device", "meta"], "Supported device types"),
    (["--model", "recgrela", "--format", "csv"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, data_file, capsys, extra, message):
    out = tmp_path / "run"
    assert trainer.main(["--data", str(data_file), "--out", str(out)] + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_missing_data_and_out_that_is_a_file(tmp_path, data_file, capsys):
    assert trainer.main(["--model", "recgrela", "--data", str(tmp_path / "none.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert trainer.main(["--model", "recgrela", "--data", str(data_file), "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "x"


def test_help_shows_examples():
    out = trainer.parser().format_help()
    assert "python -m bench.train --model recgrela:local_shortcut=false" in out and "--prefixes-per-user" in out


def test_an_interrupted_checkpoint_save_keeps_the_old_file_and_no_temporary(tmp_path, synthetic, monkeypatch):
    model = trainer.build_model(parse_model_spec("sasrec"), synthetic.n_items, 8, d_model=8, n_layers=1, n_heads=2)
    header = {"format": trainer.CHECKPOINT_FORMAT, "model": "sasrec", "model_spec": "sasrec",
              "config": dict(vars(model.config)), "epoch": 1}
    path = tmp_path / "checkpoint.pt"
    trainer.save_checkpoint(path, model, header)
    before = path.read_bytes()

    def interrupted(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(path, model, {**header, "epoch": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_the_checkpoint_records_the_catalogue_it_was_trained_on(tmp_path, data_file):
    out = tmp_path / "run"
    assert trainer.main(["--model", "sasrec", "--data", str(data_file), "--epochs", "1", "--prefixes-per-user", "1",
                         "--out", str(out)] + TINY) == 0
    _, header = trainer.load_checkpoint(out / "checkpoint.pt")
    dataset = seqdata.load_dataset(data_file)
    assert header["item_fingerprint"] == seqdata.item_fingerprint(dataset.item_ids)
    assert header["item_fingerprint"] != seqdata.item_fingerprint(dataset.item_ids[1:] + dataset.item_ids[:1])
    assert (out / "command.txt").read_text().count("python -m bench.train --model sasrec") == 1


def test_a_second_run_on_a_busy_out_is_refused(tmp_path, data_file):
    """The breaker's finding: two runs on one --out interleaved their epochs in one metrics.csv."""
    import fcntl

    from tests.badinput import refused

    out = tmp_path / "run"
    with open(tmp_path / ".run.train.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the other run's FileLock holds it
        line = refused(trainer.main, ["--model", "linrec", "--data", str(data_file), "--epochs", "1",
                                      "--out", str(out)] + TINY, watched=[out])
    assert "another running bench.train" in line and not out.exists()
