"""What one measured step is, built the same way for every model.

- Inputs: B sequences right-padded to exactly L with id 0, lengths uniform in [min(10, L), L],
  items uniform over 1..N-1, next-item targets likewise; all from one seeded generator, built
  before any clock starts.
- `train` step: zero_grad(set_to_none) -> forward -> CE loss (+ auxiliary) -> backward -> Adam
  (lr 1e-3), the paper's setting, with the model in train mode (dropout on).
  `loss` (models/losses.py) picks the objective: `ce` (full softmax over N), `sampled:K` or `bce:K`.
- `infer` step: forward + full-catalogue scores under `torch.inference_mode()`, eval mode.
- `stream` step: one new event for each of B users whose history then holds L events (every slot
  a real item; the first L - 1 are already seen), and the full-catalogue scores, under
  `torch.inference_mode()`, eval mode; the model keeps what its `stream_mode` allows
  (models/base.py): "cache" and "state" models are prefilled with the L - 1 past events before
  any clock (their `stream_step` on the new event is the step); "recompute" models run
  `full_scores` over the whole window of L events. A step leaves the state as it found it, so it
  can be timed again and again.
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
from models.base import state_tensors
from models.losses import CE, Loss, parse_loss

# --dtype: name -> the autocast dtype (None: plain float32); the row's `dtype` column is torch's name
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


WORKLOADS = ("train", "infer", "stream")


def make_batch(batch_size: int, seq_len: int, n_items: int, seed: int = 0,
               device: str | torch.device = "cpu", full: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(item_seq [B, L] right-padded with 0, target [B]) from a seeded generator; with `full`
    every user's history fills all L slots (the stream workload's users)."""
    gen = torch.Generator().manual_seed(seed)
    low = seq_len if full else min(10, seq_len)
    lengths = torch.randint(low, seq_len + 1, (batch_size,), generator=gen)
    items = torch.randint(1, n_items, (batch_size, seq_len), generator=gen)
    real = torch.arange(seq_len)[None, :] < lengths[:, None]
    item_seq = torch.where(real, items, 0)
    target = torch.randint(1, n_items, (batch_size,), generator=gen)
    return item_seq.to(device), target.to(device)


class LossForward(nn.Module):
    """The forward half of a train step as a module (what fvcore traces): the loss."""

    def __init__(self, model: models.SequentialRecommender, objective: Loss = CE):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, item_seq, target):
        return self.model.loss(item_seq, target, self.objective)


class ScoresForward(nn.Module):
    """The infer step as a module: full-catalogue scores [B, N]."""

    def __init__(self, model: models.SequentialRecommender):
        super().__init__()
        self.model = model

    def forward(self, item_seq):
        return self.model.full_scores(item_seq)


class StreamForward(nn.Module):
    """A stream step of a "cache" or "state" model as a module: the new event item [B] against the
    kept state -> full-catalogue scores [B, N] (the state is held, not an input)."""

    def __init__(self, model: models.SequentialRecommender, state: dict):
        super().__init__()
        self.model = model
        self.state = state

    def forward(self, item):
        u, _next_state = self.model.stream_step(self.state, item)
        return self.model.scores(u)


@dataclass
class Workload:
    model: models.SequentialRecommender
    optimizer: torch.optim.Optimizer | None
    inputs: tuple  # positional inputs of `forward_module`
    forward_module: nn.Module  # the forward part of the step, for forward FLOP counters
    step: Callable[[], object]
    kind: str
    state: dict | None = None  # stream: what the model keeps between a user's events (None: recompute)

    @property
    def tracked(self) -> tuple:
        """What a memory tracker must attribute: model, optimizer state, input tensors, the stream state's tensors."""
        kept = tuple(state_tensors(self.state)) if self.state is not None else ()
        return (self.model,) + ((self.optimizer,) if self.optimizer is not None else ()) + self.inputs + kept

    @property
    def state_bytes_per_user(self) -> int | None:
        """Stream: bytes kept between events per user (0 when the model recomputes); None otherwise."""
        if self.kind != "stream":
            return None
        if self.state is None:
            return 0
        return self.model.stream_state_bytes(self.state) // self.inputs[0].shape[0]


def build_workload(name: str, config: dict, kind: str, batch_size: int, seed: int = 0,
                   device: str | torch.device = "cpu", dtype: str = "fp32", compile: str = "",
                   loss: str = "ce") -> Workload:
    """The step of `kind` for model `name` with `config`, its inputs from `make_batch`, built on
    `device` (the model seeded with `seed`); `compile` names a torch.compile backend for the
    forward and loss ("" = eager); `loss` the train step's objective (models/losses.py). Raises
    ValueError for an unknown kind, dtype or loss."""
    check_kind_and_dtype(kind, dtype)
    torch.manual_seed(seed)
    device = torch.device(device)
    model = models.build(name, **config).to(device)
    item_seq, target = make_batch(batch_size, config["max_len"], config["n_items"], seed, device,
                                  full=kind == "stream")
    return make_workload(model, item_seq, target, kind, dtype, compile, loss)


def check_kind_and_dtype(kind: str, dtype: str) -> None:
    if kind not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got {kind!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def make_workload(model: models.SequentialRecommender, item_seq: torch.Tensor, target: torch.Tensor,
                  kind: str, dtype: str = "fp32", compile: str = "", loss: str = "ce") -> Workload:
    """The step of `kind` around a built `model` and its batch (item_seq [B, L], target [B]), on
    the batch's device; the optimizer is created here (under a FakeTensorMode its state is fake
    too, see bench.measure.predict). With `compile` (a torch.compile backend: inductor, aot_eager,
    eager) the forward and loss (`model.loss`; infer and a recomputing stream: `model.full_scores`;
    a stream step: `stream_step` and the scores) are compiled lazily, at the step's first call;
    backward follows the compiled graph, the optimizer step stays eager. `loss`: the train step's
    objective (`ce`, `sampled:K`, `bce:K`; other workloads score the whole catalogue)."""
    check_kind_and_dtype(kind, dtype)
    objective = parse_loss(loss)
    device = item_seq.device
    mixed = DTYPES[dtype] is not None and device.type != "meta"

    def autocast():
        return torch.autocast(device.type, dtype=DTYPES[dtype]) if mixed else contextlib.nullcontext()

    if kind == "train":
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(device.type) if mixed and dtype == "fp16" else None

        def loss_call(item_seq, target):
            return model.loss(item_seq, target, objective)

        loss_fn = torch.compile(loss_call, backend=compile) if compile else loss_call

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                value = loss_fn(item_seq, target)
            if scaler is None:
                value.backward()
                optimizer.step()
            else:  # fp16: scale the loss so small gradients survive; skip steps with inf/NaN gradients
                scaler.scale(value).backward()
                scaler.step(optimizer)
                scaler.update()
            return value

        return Workload(model, optimizer, (item_seq, target), LossForward(model, objective), step, kind)

    model.eval()
    if kind == "stream" and model.stream_mode != "recompute":
        L = item_seq.shape[1]
        # the L - 1 events already seen, before any clock; under no_grad, not inference_mode, so the
        # state's tensors are normal ones that a traced step (fvcore's, outside inference_mode) may write
        with torch.no_grad(), autocast():
            _u, state = model.stream_prefill(item_seq[:, :-1], L)
        new_item = item_seq[:, -1].clone()  # [B]
        forward = StreamForward(model, state)
        stream_fn = torch.compile(forward, backend=compile) if compile else forward

        def step():
            with torch.inference_mode(), autocast():
                return stream_fn(new_item)

        return Workload(model, None, (new_item,), forward, step, kind, state=state)

    scores_fn = torch.compile(model.full_scores, backend=compile) if compile else model.full_scores

    def step():
        with torch.inference_mode(), autocast():
            return scores_fn(item_seq)

    return Workload(model, None, (item_seq,), ScoresForward(model), step, kind)
