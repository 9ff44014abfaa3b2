"""EulerFormer against the official code: the phase contrastive loss and each declared departure
(models/eulerformer.py docstring). Equality at the official behaviour is the generic test
(tests/test_official_equivalence.py -k eulerformer), run with every dropout off: the official phase
view's nn.Dropout(p=0.5) is hard-coded, so the twin's test context makes `F.dropout` the identity
for both codes, where the contrastive term is lamb * InfoNCE over S[t, u] = sum_i w_i cos(Phi_t,i -
Phi_u,i), live (not constant) and compared with the CE loss and every gradient.

Declared departures, each shown to be exactly the declared one:
- alpha is a buffer, not the official per-layer nn.Parameter used through .data (`angle_params`):
  same values, same outputs and gradients; the parameter set lacks exactly those n_layers tables.
- the contrastive loss is skipped at inference and when lamb = 0.
- the phases are theta' itself, not atan2 of the transformed pairs: equal modulo 2 pi, same loss.
"""
from __future__ import annotations

import math

import torch

import models
from bench.adapters import official
from models.eulerformer import euler_transform, phase_contrastive_loss
from tests.test_official_equivalence import (
    REL_TOL,
    _require_peers,
    batch,
    build_pair,
    grads,
    relative_error,
)

DIMS = dict(n_items=37, max_len=8, d_model=16, n_layers=2, n_heads=2)
LENGTHS = [1, 8, 3, 5, 2, 7]
ADAPTER = official.twin_module("eulerformer")


def pair(twin_overrides: dict, ours_overrides: dict | None = None, seed: int = 0):
    """(twin, ours) in float64 train mode, ours holding the twin's weights (mapped)."""
    torch.manual_seed(seed)
    twin = models.build("official/eulerformer", **DIMS, **twin_overrides)
    ours = models.build("eulerformer", **ADAPTER.ours_config(twin.recbole_config) | (ours_overrides or {}))
    twin.double().train()
    ours.double().train()
    return twin, ours, ours.load_state_dict(ADAPTER.to_ours(twin.official.state_dict()), strict=False)


def worst(checks: dict) -> tuple[str, float]:
    errors = {what: relative_error(a.detach(), b.detach()) for what, (a, b) in checks.items()}
    name = max(errors, key=errors.get)
    return name, errors[name]


def loss_and_grads(twin, ours, item_seq, target, seed: int | None = None) -> dict:
    """CE + contrastive loss of both (torch reseeded before each side when `seed`), and gradients."""
    checks = {}
    for side, model in (("twin", twin), ("ours", ours)):
        if seed is not None:
            torch.manual_seed(seed)
        if side == "twin":
            loss = model.loss(item_seq, target)
            aux = model.official.trm_encoder.loss
        else:  # CE and the contrastive term of one forward, as `loss` adds them (models/base.py)
            ce, aux = model.loss_terms(item_seq, target)
            loss = ce if aux is None else ce + aux
        loss.backward()
        checks[side] = (loss, aux)
    out = {"loss": (checks["ours"][0], checks["twin"][0]),
           "contrastive": (checks["ours"][1], checks["twin"][1])}
    ours_grads, twin_grads = grads(ours), ADAPTER.to_ours(grads(twin.official))
    return out | {f"grad {k}": (v, twin_grads.get(k, torch.zeros_like(v)))
                  for k, v in ours_grads.items()}


def test_contrastive_loss_equal_with_its_dropout_on():
    """Every dropout on at the paper's values (0.2, and the phase view's 0.5): reseeding torch
    before each side, both codes draw the same masks in the same order (input dropout; per layer
    the q then k phase views, attention probabilities, output, FFN), so the losses are equal."""
    _require_peers()
    twin, ours, _ = pair({})
    assert twin.recbole_config["hidden_dropout_prob"] > 0 and ours.config.cl_dropout == 0.5
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    with official.keep_float64():
        checks = loss_and_grads(twin, ours, item_seq, target, seed=5)
    assert checks["contrastive"][1] > 0
    name, error = worst(checks)
    assert error <= REL_TOL, f"{name} differs by {error:.3e}"
    with official.keep_float64():  # a different seed gives a different contrastive loss: dropout is on
        torch.manual_seed(6)
        twin.loss(item_seq, target)
    assert twin.official.trm_encoder.loss != checks["contrastive"][1]


def test_contrastive_term_is_live_with_dropout_off():
    _require_peers()
    twin, ours = build_pair("eulerformer", DIMS)
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    with ADAPTER.EQUIVALENCE["context"]():
        checks = loss_and_grads(twin, ours, item_seq, target)
    ours_aux, twin_aux = checks["contrastive"]
    assert twin_aux > 0 and relative_error(ours_aux.detach(), twin_aux.detach()) <= REL_TOL
    cl_weight = checks["grad layers.0.attention.qk_transform.cl_weight"]
    assert cl_weight[1].abs().max() > 0 and relative_error(*cl_weight) <= REL_TOL


def test_alpha_buffer_departure_is_only_the_parameter_count():
    _require_peers()
    twin, ours, keys = pair(ADAPTER.EQUIVALENCE["no_dropout"], {"angle_params": False})
    alpha = {f"layers.{i}.attention.qk_transform.alpha" for i in range(DIMS["n_layers"])}
    assert set(keys.unexpected_keys) == alpha and not keys.missing_keys  # exactly the n_layers tables
    for layer in twin.official.trm_encoder.layer:  # the same angles (fp32 build, then cast)
        assert torch.equal(ours.angles.alpha, layer.multi_head_attention.euler.alpha[..., 0])
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    with ADAPTER.EQUIVALENCE["context"]():
        checks = {"user vector": (ours.user_vector(item_seq), twin.user_vector(item_seq))}
        checks |= loss_and_grads(twin, ours, item_seq, target)
    name, error = worst(checks)
    assert error <= REL_TOL, f"{name} differs by {error:.3e}"
    table = DIMS["max_len"] * DIMS["d_model"]  # [L, d/2, 2] per layer
    assert twin.num_params()[0] - ours.num_params()[0] == DIMS["n_layers"] * table
    # at the paper's shape (ML-1M ids, d 64, L 200): the official 363,652, ours 25,600 fewer
    paper_twin = models.build("official/eulerformer", n_items=3417)
    assert paper_twin.num_params() == (363_652, 363_652)
    assert models.build("eulerformer", n_items=3417).num_params() == (338_052, 338_052)


def test_contrastive_loss_skipped_at_inference():
    """In eval the official forward still computes the term (its phase view then the identity);
    full_sort_predict never reads it, ours never computes it. Finding: the official
    calculate_loss adds it in eval too (RecBole's evaluation never calls calculate_loss)."""
    _require_peers()
    twin, ours = build_pair("eulerformer", DIMS)
    twin.eval()
    ours.eval()
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    with official.keep_float64():
        scores_ours, scores_twin = ours.full_scores(item_seq), twin.full_scores(item_seq)
        assert ours.loss_terms(item_seq, target)[1] is None and twin.official.trm_encoder.loss > 0
        loss_ours, loss_twin = ours.loss(item_seq, target), twin.loss(item_seq, target)
    assert relative_error(scores_ours, scores_twin) <= REL_TOL
    term = twin.official.trm_encoder.loss
    ce = torch.nn.functional.cross_entropy(scores_twin, target)
    assert relative_error(loss_ours, ce) <= REL_TOL and relative_error(loss_twin, ce + term) <= REL_TOL


def test_lamb_zero_skips_the_contrastive_loss():
    _require_peers()
    twin, ours = build_pair("eulerformer", DIMS | {"lamb": 0.0})
    assert ours.config.lamb == 0.0
    item_seq, target = batch(DIMS["n_items"], DIMS["max_len"], LENGTHS)
    with ADAPTER.EQUIVALENCE["context"]():
        checks = loss_and_grads(twin, ours, item_seq, target)
    assert checks.pop("contrastive")[0] is None and twin.official.trm_encoder.loss == 0
    name, error = worst(checks)
    assert error <= REL_TOL, f"{name} differs by {error:.3e}"


def test_phases_equal_atan2_of_the_transformed_pairs_modulo_2pi():
    """Ours takes theta' = delta theta + alpha + b; the official re-derives atan2 of the rotated
    pairs, in (-pi, pi]. They differ by whole turns, which cos, sin and the 0 / 2x dropout of the
    phase view (p = 0.5) do not see: the same loss under the same dropout draws."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 8, 16, generator=gen, dtype=torch.float64)
    offset = torch.arange(8, dtype=torch.float64)[:, None] * torch.rand(8, generator=gen) + 0.7  # [L, d/2]
    with official.keep_float64():
        rotated, phase = euler_transform(q, 1.3, offset)
    wrapped = torch.atan2(rotated[..., 1::2], rotated[..., 0::2])
    turns = (phase - wrapped) / (2 * math.pi)
    assert (turns - turns.round()).abs().max() < 1e-12 and turns.round().abs().max() >= 1
    weight = torch.rand(8, generator=gen, dtype=torch.float64)

    def losses(dropout: float) -> list[torch.Tensor]:
        out = []
        for phases in (phase, wrapped):
            torch.manual_seed(3)
            out.append(phase_contrastive_loss(phases, weight, tau=1.0, dropout=dropout))
        return out

    assert relative_error(*losses(0.5)) <= REL_TOL
    assert relative_error(*losses(0.2)) > 1e-3  # a 1.25x view of whole turns is no longer whole turns

