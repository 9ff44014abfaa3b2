"""One FlopCounterMode pass over a step gives the forward's and the whole step's FLOPs
(bench.measure.flops.flopcounter_forward_and_step_flops): the same two numbers as the two
separate passes the harness ran before (the forward alone under no_grad, then the whole step),
for every built-in model and both workloads, also when counted on the CPU instead of the meta
device, and a phase split that follows the autograd engine."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import models
from bench.grid import Point
from bench.measure.flops import flopcounter_flops, flopcounter_forward_and_step_flops
from bench.sweep.point import flopcounter_counts
from bench.workload import build_workload

# L = 33: one chunk of the selective scan (32) and a partial one; B = 3, d = 16: tiny, on meta
SHAPE = dict(n_items=50, max_len=33, d_model=16, n_layers=2, n_heads=2)
BATCH = 3


def two_passes(name: str, kind: str) -> tuple[int, int]:
    """The former counting: the forward alone under no_grad, and the whole step, each on a fresh
    meta copy of the workload."""
    w = build_workload(name, SHAPE, kind, BATCH, 0, "meta")

    def forward_only():
        with torch.no_grad():
            return w.forward_module(*w.inputs)

    forward = flopcounter_flops(forward_only)
    step = flopcounter_flops(build_workload(name, SHAPE, kind, BATCH, 0, "meta").step)
    return forward, step


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["train", "infer"])
@pytest.mark.parametrize("name", models.available())
def test_one_pass_equals_the_two_passes(name, kind):
    expected = two_passes(name, kind)
    assert flopcounter_forward_and_step_flops(build_workload(name, SHAPE, kind, BATCH, 0, "meta").step) == expected
    # and what a point records (bench.sweep.point.flopcounter_counts builds its own meta copy)
    point = Point(name, (), kind, "seq_len", seq_len=SHAPE["max_len"], batch_size=BATCH, n_layers=SHAPE["n_layers"],
                  n_heads=SHAPE["n_heads"], d_model=SHAPE["d_model"], n_items=SHAPE["n_items"])
    assert flopcounter_counts(point, "meta") == expected
    # a CPU point counts a real copy on the CPU (bench.sweep.point.count_with_flopcounter): the same counts
    assert flopcounter_counts(point, "cpu") == expected
    forward, step = expected
    assert 0 < forward and (step == forward if kind == "infer" else step > 2 * forward)


def test_the_split_follows_the_autograd_engine():
    """A linear layer: forward 2*B*i*o; backward twice that (grad input and grad weight); a product
    after backward (where an optimizer step would run) is in the step but not in the forward."""
    torch.manual_seed(0)
    layer, x = nn.Linear(6, 5, bias=False), torch.randn(4, 6, requires_grad=True)
    after = torch.randn(3, 3)

    def step():
        layer(x).sum().backward()
        after @ after

    forward, total = flopcounter_forward_and_step_flops(step)
    assert forward == 2 * 4 * 6 * 5
    assert total == 3 * forward + 2 * 3 * 3 * 3 == flopcounter_flops(step)

    def inference():
        with torch.no_grad():
            layer(x)

    assert flopcounter_forward_and_step_flops(inference) == (forward, forward)


def test_the_split_keeps_the_harness_conventions():
    """Complex products count 4x and a depthwise conv's backward is the forward's per gradient,
    in the one-pass count as in `flopcounter_flops` (the same custom formulas underneath)."""
    a = torch.randn(4, 3, dtype=torch.cfloat, requires_grad=True)
    b = torch.randn(3, 2, dtype=torch.cfloat)

    def complex_step():
        (a @ b).abs().sum().backward()

    forward, total = flopcounter_forward_and_step_flops(complex_step)
    assert forward == 4 * 2 * 4 * 3 * 2 and total == flopcounter_flops(complex_step)
    conv, x = nn.Conv1d(8, 8, 3, groups=8, padding=1), torch.randn(2, 8, 10)

    def conv_step():
        conv(x).sum().backward()

    forward, total = flopcounter_forward_and_step_flops(conv_step)
    assert total == 2 * forward == flopcounter_flops(conv_step)  # grad weight only (x needs none)


def test_rejects_a_non_callable():
    with pytest.raises(ValueError, match="callable"):
        flopcounter_forward_and_step_flops(42)  # type: ignore[arg-type]


def test_where_a_point_is_counted(monkeypatch):
    """bench.sweep.point.count_with_flopcounter: a CPU point on the CPU, or on meta when that copy runs
    out of memory; another device's point on meta, or on its own device for code that reads values
    (meta cannot answer `.item()`). Stand-in counters record where they were asked to count."""
    from bench.sweep import point as bench_point

    asked = []

    def counter(fail_on: str, error: Exception):
        def counts(point, device):
            asked.append(device)
            if device == fail_on:
                raise error
            return 2, 6

        return counts

    def where(device, fail_on="", error=None):
        asked.clear()
        monkeypatch.setattr(bench_point, "flopcounter_counts", counter(fail_on, error or RuntimeError("")))
        p = Point("linrec", (), "train", "seq_len", seq_len=8, batch_size=2, n_layers=1, n_heads=1, d_model=8,
                  n_items=20, device=device)
        return bench_point.count_with_flopcounter(p)[2], list(asked)

    assert where("cpu") == ("cpu", ["cpu"])
    oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes")
    assert where("cpu", "cpu", oom) == ("meta", ["cpu", "meta"])
    with pytest.raises(ValueError):  # anything else is the point's error, not a reason to recount
        where("cpu", "cpu", ValueError("boom"))
    assert where("cuda:1") == ("meta", ["meta"])
    assert where("cuda:1", "meta", RuntimeError("Tensor.item() cannot be called on meta tensors")) == (
        "cuda", ["meta", "cuda:1"])
