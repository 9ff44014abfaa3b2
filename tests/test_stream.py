"""Streaming (models/base.py, "Streaming"): every model declares how it takes one new event, and a
model that keeps a cache or a state gives, event by event, exactly the user vector of a full forward
over the history so far."""
from __future__ import annotations

import pytest
import torch

import models
from models.base import STREAM_MODES, SequentialRecommender
from tests.test_models_interface import SMALL, assert_close

NAMES = models.available()
# the issue's split: causal attention keeps K, V; recurrences keep their state; a non-causal mixer
# makes the last slot depend on every slot, so nothing can be kept
EXPECTED_MODE = {"sasrec": "cache", "eulerformer": "cache",
                 "mamba4rec": "state", "lrurec": "state", "recblr": "state",
                 "linrec": "recompute", "recgrela": "recompute", "elastic": "recompute",
                 "sigma": "recompute", "echomamba4rec": "recompute"}
STREAMING = [n for n in NAMES if models.model_class(n).stream_mode != "recompute"]


def _model(name: str, seed: int = 0, **config) -> SequentialRecommender:
    torch.manual_seed(seed)
    return models.build(name, **dict(SMALL, **config)).eval()


def _history(B: int, n: int, n_items: int = SMALL["n_items"], seed: int = 1) -> torch.Tensor:
    """B users' first n events, every slot a real item (ids 1..N-1)."""
    return torch.randint(1, n_items, (B, n), generator=torch.Generator().manual_seed(seed))


def _padded(history: torch.Tensor, L: int) -> torch.Tensor:
    return torch.nn.functional.pad(history, (0, L - history.shape[1]))


@pytest.mark.parametrize("name", NAMES)
def test_every_model_declares_the_mode_of_the_issue(name):
    cls = models.model_class(name)
    assert cls.stream_mode in STREAM_MODES
    assert cls.stream_mode == EXPECTED_MODE[name], f"{name}: {cls.stream_mode}"
    if not cls.causal:
        assert cls.stream_mode == "recompute"


def test_every_built_in_passes_the_plugin_check():
    for name in NAMES:
        models.check_model_class(models.model_class(name), name)


@pytest.mark.parametrize("name", STREAMING)
@pytest.mark.parametrize("n", [1, 2, 5, SMALL["max_len"]])
def test_streaming_equals_the_full_forward(name, n):
    """u after the n-th event, one event at a time, equals user_vector of the n events padded to L."""
    model = _model(name)
    history = _history(3, n)
    with torch.no_grad():
        full = model.user_vector(_padded(history, SMALL["max_len"]))
        streamed, state = model.stream_prefill(history, SMALL["max_len"])
    assert state["length"] == n
    assert_close(f"{name} n={n}", full, streamed, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", STREAMING)
def test_every_prefix_along_the_way(name):
    """Every intermediate u_t (t = 1..L) equals the full forward of the first t events."""
    model = _model(name, seed=3)
    L = SMALL["max_len"]
    history = _history(2, L, seed=4)
    with torch.no_grad():
        state = model.stream_init(2, L)
        for t in range(L):
            u, state = model.stream_step(state, history[:, t])
            full = model.user_vector(_padded(history[:, : t + 1], L))
            assert_close(f"{name} t={t + 1}", full, u, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", STREAMING)
def test_a_step_leaves_its_state_valid(name):
    """Stepping twice from one state gives the same vector (the stream workload times one step again
    and again), and stepping on from the returned state still matches the full forward."""
    model = _model(name, seed=5)
    L = SMALL["max_len"]
    history = _history(2, L - 1, seed=6)
    new = torch.tensor([7, 9])
    with torch.inference_mode():
        _, state = model.stream_prefill(history, L)
        first, _ = model.stream_step(state, new)
        other, _ = model.stream_step(state, torch.tensor([11, 13]))
        again, after = model.stream_step(state, new)
        full = model.user_vector(torch.cat([history, new[:, None]], dim=1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert after["length"] == L
    assert_close(name, full, again, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", STREAMING)
def test_state_bytes_follow_the_mode(name):
    """A state's bytes do not depend on the window; a cache's grow linearly with it."""
    model = _model(name)
    sizes = {L: model.stream_state_bytes(model.stream_init(2, L)) for L in (8, 16, 32)}
    assert all(size > 0 for size in sizes.values())
    if model.stream_mode == "state":
        assert sizes[8] == sizes[16] == sizes[32]
    else:
        assert sizes[32] - sizes[16] == 2 * (sizes[16] - sizes[8]) > 0
    # per user: twice the users, twice the bytes
    assert model.stream_state_bytes(model.stream_init(4, 16)) == 2 * sizes[16]


@pytest.mark.parametrize("name", STREAMING)
def test_stream_flops_equal_the_counter(name):
    """The analytic stream_flops of one step equals the suite's FlopCounterMode count of that step
    (bench.measure.flops: a complex multiply-add is 4 real ones, as LRURec's formulas count)."""
    from bench.measure.flops import flopcounter_flops

    model = _model(name)
    L = SMALL["max_len"]
    with torch.inference_mode():
        _, state = model.stream_prefill(_history(3, L - 1), L)

        def step():
            u, _ = model.stream_step(state, torch.tensor([1, 2, 3]))
            return model.scores(u)

        assert flopcounter_flops(step) == model.stream_flops(3, L)


def test_a_plugin_declaring_a_state_it_cannot_keep_is_refused():
    class Bidirectional(SequentialRecommender):
        causal = False
        stream_mode = "state"

        def forward(self, item_seq):
            return self.item_embedding(item_seq)

    with pytest.raises(models.PluginError, match="not causal"):
        models.check_model_class(Bidirectional, "bidi")

    class NoStep(SequentialRecommender):
        causal = True
        stream_mode = "cache"

        def forward(self, item_seq):
            return self.item_embedding(item_seq)

    with pytest.raises(models.PluginError, match="stream_init and stream_step"):
        models.check_model_class(NoStep, "nostep")

    class Typo(SequentialRecommender):
        causal = True
        stream_mode = "kv"

        def forward(self, item_seq):
            return self.item_embedding(item_seq)

    with pytest.raises(models.PluginError, match="stream_mode must be one of"):
        models.check_model_class(Typo, "typo")


def test_scores_of_candidates_are_the_full_scores_columns():
    for name in ("sasrec", "lrurec"):  # lrurec adds its item bias
        model = _model(name)
        u = torch.randn(3, SMALL["d_model"])
        full = model.scores(u)
        shared = torch.tensor([4, 1, 9])
        own = torch.tensor([[1, 2], [3, 4], [5, 6]])
        assert_close(f"{name} shared", full[:, shared], model.scores(u, shared))
        assert_close(f"{name} own", full.gather(1, own), model.scores(u, own))
