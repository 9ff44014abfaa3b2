"""pytest-benchmark micro-benchmarks of every registered model's train step: the developer's timing tool.

The shape is the regression gate's tiny grid (bench.regress.GRID), one thread. Under the project's
default `--benchmark-disable` (pyproject.toml) each test runs its step once as a plain test (the
loss must be finite). To time, save a run, change the code, and compare against it:

  .venv/bin/python -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-autosave
  .venv/bin/python -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-compare \
      --benchmark-compare-fail=median:25%

Saved runs live in .benchmarks/<machine id>/ (git-ignored); `--benchmark-compare` needs one saved
on the same machine id, and timings compare only on the same machine. pytest-benchmark never
compares `extra_info`: memory and FLOP gating is `python -m bench.regress`.
"""
from __future__ import annotations

import pytest
import torch

import models
from bench.regress import GRID
from bench.workload import build_workload

SHAPE = {"n_items": GRID["n_items"], "max_len": GRID["seq_len"], "d_model": GRID["d_model"],
         "n_layers": GRID["n_layers"], "n_heads": GRID["n_heads"]}


@pytest.fixture
def gate_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(GRID["threads"])
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", models.available())
def test_train_step(benchmark, name, gate_threads):
    workload = build_workload(name, SHAPE, "train", GRID["batch_size"], seed=GRID["seed"])
    workload.step()  # untimed: optimizer state and lazy caches exist before the first timed round
    benchmark.group = (f"train step B={GRID['batch_size']} L={GRID['seq_len']} d={GRID['d_model']} "
                       f"layers={GRID['n_layers']}")
    benchmark.extra_info.update(model=name, params_total=workload.model.num_params()[0],
                                threads=torch.get_num_threads(), torch_version=torch.__version__)
    loss = benchmark(workload.step)
    assert torch.isfinite(loss)
