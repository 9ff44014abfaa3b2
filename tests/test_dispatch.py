"""`attention_ops` names the kernel that ran in every workload, inference_mode included (outside
case 03: under inference_mode the composite `scaled_dot_product_attention` reached the recorder
whole, so every infer row said the same thing whichever kernel ran)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.measure.dispatch import attention_ops, dispatched_ops
from bench.workload import build_workload

Q = torch.randn(2, 2, 16, 8)


@pytest.mark.parametrize("context", ["inference_mode", "no_grad", "grad"])
@pytest.mark.parametrize("backend,kernel", [
    (SDPBackend.FLASH_ATTENTION, "_scaled_dot_product_flash_attention_for_cpu"),
    (SDPBackend.MATH, "_safe_softmax"),
])
def test_sdpa_records_the_kernel_that_ran(context, backend, kernel):
    def step():
        guard = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad,
                 "grad": torch.enable_grad}[context]()
        with guard, sdpa_kernel(backend):
            F.scaled_dot_product_attention(Q, Q, Q, is_causal=True)

    assert attention_ops(dispatched_ops(step)) == kernel


@pytest.mark.parametrize("overrides,kernel", [
    ({}, "_scaled_dot_product_flash_attention_for_cpu"),  # the default sdpa, no dropout in eval
    ({"attention": "math"}, "_softmax"),  # RecBole's explicit softmax
])
def test_sasrec_infer_step_names_its_kernel(overrides, kernel):
    config = dict(n_items=30, max_len=16, d_model=8, n_layers=1, n_heads=2, **overrides)
    w = build_workload("sasrec", config, "infer", batch_size=2)
    assert attention_ops(dispatched_ops(w.step)) == kernel


def test_the_infer_step_returns_the_same_scores_under_the_recorder():
    """Decomposing inside the recorder runs the same math: scores equal the unrecorded step's."""
    w = build_workload("sasrec", dict(n_items=30, max_len=16, d_model=8, n_layers=1, n_heads=2), "infer",
                       batch_size=2)
    plain = w.step()
    recorded = []
    dispatched_ops(lambda: recorded.append(w.step()))
    torch.testing.assert_close(recorded[0], plain, rtol=0, atol=0)
