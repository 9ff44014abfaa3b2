"""Numerical rank of feature matrices, the bench.rank CLI and the Fig. 9 figure from its CSV."""
from __future__ import annotations

import csv

import pytest
import torch

from bench.grid import parse_model_spec
from bench.train import data as seqdata
from bench.train import rank as ranking
from bench.train import train as trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize("true_rank", [1, 17, 47, 64])
def test_rank_of_a_product_of_known_rank(true_rank):
    gen = torch.Generator().manual_seed(true_rank)
    matrix = (torch.randn(200, true_rank, generator=gen) @ torch.randn(true_rank, 64, generator=gen)).float()
    rank, tol, singular = ranking.numerical_rank(matrix)
    assert rank == true_rank and singular.shape == (64,)
    assert tol == pytest.approx(float(singular[0]) * 200 * torch.finfo(torch.float32).eps)


def test_tolerance_edges_and_relative_tolerance():
    u, v = orthonormal(200, 64, 0), orthonormal(64, 64, 1)
    eps_tol = 200 * torch.finfo(torch.float32).eps  # relative to sigma_max = 1
    spectrum = torch.ones(64, dtype=torch.float64)
    spectrum[40:50] = 3 * eps_tol  # above the default tolerance
    spectrum[50:] = eps_tol / 3  # below it
    matrix = u @ torch.diag(spectrum) @ v.T
    assert ranking.numerical_rank(matrix)[0] == 50
    assert ranking.numerical_rank(matrix, rtol=1e-3)[0] == 40  # a coarser relative tolerance
    assert torch.linalg.matrix_rank(matrix.float()).item() == 50  # the same rule as torch's default in fp32


def test_feature_ranks_use_the_real_rows_only():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 20, 8, generator=gen)  # padding rows hold junk: they must not count
    hidden[0, :10] = (torch.randn(10, 2, generator=gen) @ torch.randn(2, 8, generator=gen))  # rank 2 on 10 rows
    results = ranking.feature_ranks(hidden, torch.tensor([10, 20, 5]))
    assert [r["rank"] for r in results] == [2, 8, 5]
    assert [r["max_rank"] for r in results] == [8, 8, 5]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three tiny checkpoints (the paper's Fig. 9 trio) trained for one epoch on synthetic data."""
    root = tmp_path_factory.mktemp("rank")
    dataset = seqdata.synthetic_dataset(n_users=40, n_items=30, mean_len=10, seed=4)
    data_file = root / "syn.txt"
    seqdata.write_lines_file(dataset, data_file)
    paths = []
    for spec in ("linrec", "recgrela:local_shortcut=false", "recgrela"):
        settings = trainer.TrainSettings(parse_model_spec(spec), max_len=12, d_model=8, n_layers=1, n_heads=2,
                                         epochs=1, batch_size=32, prefixes_per_user=2)
        out = root / trainer.safe_name(spec)
        trainer.train(settings, dataset, out, log=lambda line: None)
        paths.append(out / "checkpoint.pt")
    return dataset, data_file, paths


def test_rank_cli_writes_rows_summary_and_figure(trained, tmp_path, capsys):
    dataset, data_file, paths = trained
    out = tmp_path / "ranks"
    assert ranking.main(["--checkpoints", *map(str, paths), "--data", str(data_file), "--users", "25",
                         "--out", str(out)]) == 0
    rows = trainer.read_csv(out / "ranks.csv")
    assert set(ranking.RANK_COLUMNS) <= set(rows[0])
    for path in paths:
        mine = [r for r in rows if r["checkpoint"] == str(path)]
        per_user = [r for r in mine if r["view"] == "per_user"]
        single = [r for r in mine if r["view"] == "single_sequence"]
        assert len(per_user) == 25 and len(single) == 1
        assert all(0 < int(r["rank"]) <= int(r["max_rank"]) == min(int(r["n_real"]), 8) for r in per_user)
        assert int(single[0]["rows"]) == 12 and len(single[0]["features"].split()) == 12 * 8
        assert len(single[0]["singular_values"].split()) == 8
    # the same fixed users for every checkpoint
    users = lambda p: [r["user"] for r in rows if r["checkpoint"] == str(p) and r["view"] == "per_user"]  # noqa: E731
    assert users(paths[0]) == users(paths[2])
    summary = trainer.read_csv(out / "rank_summary.csv")
    assert [(s["model_spec"], s["view"]) for s in summary][:2] == [("linrec", "per_user"), ("linrec", "single_sequence")]
    assert "eps_fp32" in summary[0]["tolerance_rule"]
    assert (out / "rank_fig9.png").stat().st_size > 10_000
    assert "single sequence rank" in capsys.readouterr().out


def test_plot_reads_only_the_rank_csv(tmp_path):
    rows = []
    for spec, model in (("linrec", "linrec"), ("recgrela:local_shortcut=false", "recgrela"), ("recgrela", "recgrela")):
        features = " ".join(str(float(i % 7)) for i in range(6 * 4))
        rows.append({"model": model, "model_spec": spec, "checkpoint": f"{spec}.pt", "view": "per_user", "user": "1",
                     "n_real": 6, "rank": 3, "max_rank": 4, "rows": 6, "d_model": 4, "max_len": 6, "dataset": "toy"})
        rows.append({**rows[-1], "view": "single_sequence", "rank": 4, "features": features})
    path = tmp_path / "ranks.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ranking.RANK_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    png = ranking.plot_rank_figure(path, tmp_path / "fig.png")
    assert png.stat().st_size > 10_000
    with open(path, "w") as handle:
        handle.write(",".join(ranking.RANK_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no single_sequence rows"):
        ranking.plot_rank_figure(path, tmp_path / "empty.png")


def test_rank_cli_bad_input_is_one_line_exit_2(trained, tmp_path, capsys):
    dataset, data_file, paths = trained
    out = tmp_path / "ranks"
    assert ranking.main(["--checkpoints", str(tmp_path / "none.pt"), "--data", str(data_file), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    assert ranking.main(["--checkpoints", str(junk), "--data", str(data_file), "--out", str(out)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    seqdata.write_lines_file(seqdata.synthetic_dataset(n_users=20, n_items=50, mean_len=8, seed=1), other)
    assert ranking.main(["--checkpoints", str(paths[0]), "--data", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"trained on {dataset.n_items} item ids" in err and err.count("\n") == 1 and not out.exists()


def test_rank_help_shows_examples():
    out = ranking.parser().format_help()
    assert "python -m bench.rank --checkpoints" in out and "single_sequence" in out


def test_every_checkpoint_and_its_catalogue_are_checked_before_any_feature_is_computed(trained, tmp_path,
                                                                                      monkeypatch, capsys):
    dataset, data_file, paths = trained
    other = tmp_path / "other.pt"  # a checkpoint of another catalogue, named after a good one
    model = trainer.build_model(parse_model_spec("linrec"), dataset.n_items + 3, 12, d_model=8, n_layers=1, n_heads=2)
    trainer.save_checkpoint(other, model, {"format": trainer.CHECKPOINT_FORMAT, "model": "linrec",
                                           "model_spec": "linrec", "config": dict(vars(model.config))})

    def no_features(*args, **kwargs):
        raise AssertionError("features computed before every checkpoint was checked")

    monkeypatch.setattr(ranking, "last_hidden", no_features)
    out = tmp_path / "ranks"
    assert ranking.main(["--checkpoints", str(paths[0]), str(other), "--data", str(data_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{other} was trained on {dataset.n_items + 3} item ids" in err and not out.exists()
