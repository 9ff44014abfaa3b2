"""The train objectives (models/losses.py, `--loss`): their values against hand-written formulas,
their FLOPs in both counters equal to the analytic cells, and the sweep's handling of them."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import models
from bench.grid import Point, parse_losses, parse_values
from bench.sweep.point import run
from models.losses import CE, Loss, check_loss_fits, parse_loss
from tests.test_models_interface import SMALL, assert_close

TINY = dict(seq_len=12, batch_size=3, n_layers=1, n_heads=2, d_model=16, n_items=60)


def _model(name="sasrec"):
    torch.manual_seed(0)
    return models.build(name, **SMALL).eval()


def test_parse_spellings_and_refusals():
    assert parse_loss("ce") == CE and parse_loss(" sampled:128 ") == Loss("sampled", 128)
    assert parse_loss("bce:1").spec == "bce:1"
    for bad in ("", "ce:3", "sampled", "sampled:0", "sampled:-1", "bce:x", "softmax", "sampled:1.5"):
        with pytest.raises(ValueError, match="ce, sampled:K or bce:K"):
            parse_loss(bad)
    assert parse_losses("ce,sampled:8") == ("ce", "sampled:8")
    with pytest.raises(ValueError, match="twice"):
        parse_losses("sampled:8, sampled:8")
    with pytest.raises(ValueError, match="has only 49 items"):
        check_loss_fits(Loss("bce", 49), 50)
    check_loss_fits(Loss("bce", 48), 50)


def test_ce_is_the_full_softmax():
    model = _model()
    u, target = torch.randn(4, SMALL["d_model"]), torch.tensor([1, 2, 3, 4])
    assert_close("ce", F.cross_entropy(u @ model.item_embedding.weight.t(), target), CE.value(model, u, target))


def test_sampled_softmax_by_hand():
    """log-Q corrected CE over [target, K shared negatives], accidental hits removed."""
    model = _model()
    K, N = 6, SMALL["n_items"]
    u, target = torch.randn(3, SMALL["d_model"]), torch.tensor([5, 7, 9])
    torch.manual_seed(11)
    value = Loss("sampled", K).value(model, u, target)
    torch.manual_seed(11)
    negatives = torch.randint(1, N, (K,))
    E = model.item_embedding.weight
    expected = 0.0
    for b in range(3):
        logits = [u[b] @ E[target[b]]] + [u[b] @ E[i] if i != target[b] else torch.tensor(-math.inf) for i in negatives]
        logits = torch.stack(logits) - math.log(K / (N - 1))
        expected += -(logits[0] - torch.logsumexp(logits, 0))
    assert_close("sampled", expected / 3, value)


def test_an_accidental_hit_is_removed():
    model = _model()
    u = torch.randn(1, SMALL["d_model"])
    torch.manual_seed(3)
    negatives = torch.randint(1, SMALL["n_items"], (4,))
    target = negatives[:1].clone()  # the first negative is the target itself
    torch.manual_seed(3)
    with_hit = Loss("sampled", 4).value(model, u, target)
    E = model.item_embedding.weight
    kept = [u[0] @ E[target[0]]] + [u[0] @ E[i] for i in negatives if i != target[0]]
    logits = torch.stack(kept)
    assert_close("hit", -(logits[0] - torch.logsumexp(logits, 0)), with_hit)


def test_bce_by_hand_with_lrurec_bias():
    """-log s(u.e_t + b_t) - sum_k log(1 - s(u.e_k + b_k)), each user's own negatives, mean over users."""
    model = _model("lrurec")
    with torch.no_grad():
        model.item_bias.normal_()
    K = 3
    u, target = torch.randn(2, SMALL["d_model"]), torch.tensor([4, 8])
    torch.manual_seed(5)
    value = Loss("bce", K).value(model, u, target)
    torch.manual_seed(5)
    negatives = torch.randint(1, SMALL["n_items"], (2, K))
    E, bias = model.item_embedding.weight, model.item_bias
    expected = 0.0
    for b in range(2):
        expected += -F.logsigmoid(u[b] @ E[target[b]] + bias[target[b]])
        for i in negatives[b]:
            expected += -F.logsigmoid(-(u[b] @ E[i] + bias[i]))
    assert_close("bce", expected / 2, value)


@pytest.mark.parametrize("name", ["sasrec", "lrurec", "recgrela", "eulerformer"])
@pytest.mark.parametrize("loss", ["sampled:8", "bce:4"])
def test_counters_follow_the_loss(name, loss):
    """fvcore, FlopCounterMode and the analytic cells agree under every loss (eulerformer: with its
    auxiliary branch; lrurec: its item bias), and the loss changes them by the output product."""
    row = run(Point(name, (), "train", "seq_len", repeats=1, warmup=0, loss=loss, **TINY))
    ce = run(Point(name, (), "train", "seq_len", repeats=1, warmup=0, **TINY))
    assert row["status"] == "ok" and ce["status"] == "ok", (row["reason"], ce["reason"])
    assert row["loss"] == loss and ce["loss"] == "ce"
    assert row["fwd_flops_fvcore"] == row["fwd_flops_flopcounter"] == row["fwd_flops_analytic"]
    assert row["step_flops_flopcounter"] == row["step_flops_analytic"]
    B, d, N = TINY["batch_size"], TINY["d_model"], TINY["n_items"]
    K = int(loss.split(":")[1])
    assert ce["fwd_flops_analytic"] - row["fwd_flops_analytic"] == 2 * B * d * (N - (K + 1))


def test_infer_and_stream_rows_record_no_loss():
    row = run(Point("linrec", (), "infer", "seq_len", repeats=1, warmup=0, **TINY))
    assert row["loss"] == "" and row["stream_mode"] == "" and row["state_bytes_per_user"] is None


def test_items_values_in_powers_of_ten():
    assert parse_values("1e3,1E4,100000,1e6") == (1000, 10000, 100000, 1000000)
    for bad in ("1e", "1.5e3", "e3", "1e-3", "1e999"):
        with pytest.raises(ValueError):
            parse_values(bad)


def test_sampled_softmax_gathers_the_table_once():
    """The target's and the negatives' rows come from one gather: backward then gives the item table
    one dense [N, d] gradient from the loss, not one per gather, so with a large catalogue the
    sampled step peaks less than one [N, d] float32 table above the full-softmax step (two gathers
    measured 1.5 tables above it at N = 1e5, B = 32, L = 200)."""
    from bench.measure.memory import tracked_peak
    from bench.workload import build_workload

    config = dict(n_items=100_000, max_len=200, d_model=64, n_layers=2, n_heads=2)
    peaks = {}
    for loss in ("ce", "sampled:128"):
        w = build_workload("recgrela", config, "train", 32, loss=loss)
        w.step()
        peaks[loss] = tracked_peak(w.step, *w.tracked).total_bytes
    table_bytes = config["n_items"] * config["d_model"] * 4
    assert peaks["sampled:128"] - peaks["ce"] < table_bytes, (peaks, table_bytes)
