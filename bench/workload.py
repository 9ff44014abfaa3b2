"""What one measured step is, built the same way for every model.

- Inputs: B sequences right-padded to exactly L with id 0, lengths uniform in [min(10, L), L],
  items uniform over 1..N-1, next-item targets likewise; all from one seeded generator, built
  before any clock starts.
- `train` step: zero_grad(set_to_none) -> forward -> CE loss (+ auxiliary) -> backward -> Adam
  (lr 1e-3), the paper's setting, with the model in train mode (dropout on).
- `infer` step: forward + full-catalogue scores under `torch.inference_mode()`, eval mode.
- `dtype` (`DTYPES`): `fp32` runs as built; `bf16` and `fp16` run the forward and the loss under
  `torch.autocast` (weights and Adam state stay float32, as in mixed-precision training); `fp16`
  training scales the loss with `torch.amp.GradScaler` (bf16 has float32's range and needs none).
  On the meta device (FLOP counting: shapes only) no autocast applies; FLOP counts do not depend
  on the dtype.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

import models

# --dtype: name -> the autocast dtype (None: plain float32); the row's `dtype` column is torch's name
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def make_batch(batch_size: int, seq_len: int, n_items: int, seed: int = 0,
               device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(item_seq [B, L] right-padded with 0, target [B]) from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    low = min(10, seq_len)
    lengths = torch.randint(low, seq_len + 1, (batch_size,), generator=gen)
    items = torch.randint(1, n_items, (batch_size, seq_len), generator=gen)
    real = torch.arange(seq_len)[None, :] < lengths[:, None]
    item_seq = torch.where(real, items, 0)
    target = torch.randint(1, n_items, (batch_size,), generator=gen)
    return item_seq.to(device), target.to(device)


class LossForward(nn.Module):
    """The forward half of a train step as a module (what fvcore traces): CE loss."""

    def __init__(self, model: models.SequentialRecommender):
        super().__init__()
        self.model = model

    def forward(self, item_seq, target):
        return self.model.loss(item_seq, target)


class ScoresForward(nn.Module):
    """The infer step as a module: full-catalogue scores [B, N]."""

    def __init__(self, model: models.SequentialRecommender):
        super().__init__()
        self.model = model

    def forward(self, item_seq):
        return self.model.full_scores(item_seq)


@dataclass
class Workload:
    model: models.SequentialRecommender
    optimizer: torch.optim.Optimizer | None
    inputs: tuple  # positional inputs of `forward_module`
    forward_module: nn.Module  # the forward part of the step, for forward FLOP counters
    step: Callable[[], object]
    kind: str

    @property
    def tracked(self) -> tuple:
        """What a memory tracker must attribute: model, optimizer state, input tensors."""
        return (self.model,) + ((self.optimizer,) if self.optimizer is not None else ()) + self.inputs


def build_workload(name: str, config: dict, kind: str, batch_size: int, seed: int = 0,
                   device: str | torch.device = "cpu", dtype: str = "fp32", compile: str = "") -> Workload:
    """The step of `kind` for model `name` with `config`, its inputs from `make_batch`, built on
    `device` (the model seeded with `seed`); `compile` names a torch.compile backend for the
    forward and loss ("" = eager). Raises ValueError for an unknown kind or dtype."""
    check_kind_and_dtype(kind, dtype)
    torch.manual_seed(seed)
    device = torch.device(device)
    model = models.build(name, **config).to(device)
    item_seq, target = make_batch(batch_size, config["max_len"], config["n_items"], seed, device)
    return make_workload(model, item_seq, target, kind, dtype, compile)


def check_kind_and_dtype(kind: str, dtype: str) -> None:
    if kind not in ("train", "infer"):
        raise ValueError(f"workload must be 'train' or 'infer', got {kind!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def make_workload(model: models.SequentialRecommender, item_seq: torch.Tensor, target: torch.Tensor,
                  kind: str, dtype: str = "fp32", compile: str = "") -> Workload:
    """The step of `kind` around a built `model` and its batch (item_seq [B, L], target [B]), on
    the batch's device; the optimizer is created here (under a FakeTensorMode its state is fake
    too, see bench.measure.predict). With `compile` (a torch.compile backend: inductor, aot_eager,
    eager) the forward and loss (`model.loss`; infer: `model.full_scores`) are compiled lazily, at
    the step's first call; backward follows the compiled graph, the optimizer step stays eager."""
    check_kind_and_dtype(kind, dtype)
    device = item_seq.device
    mixed = DTYPES[dtype] is not None and device.type != "meta"

    def autocast():
        return torch.autocast(device.type, dtype=DTYPES[dtype]) if mixed else contextlib.nullcontext()

    if kind == "train":
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(device.type) if mixed and dtype == "fp16" else None

        loss_fn = torch.compile(model.loss, backend=compile) if compile else model.loss

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(item_seq, target)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:  # fp16: scale the loss so small gradients survive; skip steps with inf/NaN gradients
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            return loss

        return Workload(model, optimizer, (item_seq, target), LossForward(model), step, kind)

    model.eval()
    scores_fn = torch.compile(model.full_scores, backend=compile) if compile else model.full_scores

    def step():
        with torch.inference_mode(), autocast():
            return scores_fn(item_seq)

    return Workload(model, None, (item_seq,), ScoresForward(model), step, kind)
