"""The model contract: what every model of the suite is and declares (the RecBole
sequential-recommender protocol), written once here.

Required of a model (a `SequentialRecommender` subclass: registered in models/__init__.py, or from
outside the package by a dotted path or a `seqrec_bench.models` entry point, where
`models.check_model_class` refuses a class that breaks this contract with one line):
- `forward(item_seq [B, L]) -> [B, L, d]`: the last layer's hidden states (the "feature matrix" of
  Fig. 9). Input ids are left-aligned and right-padded with id 0 (slots n_b..L-1 are 0).
- `config_class`: its config dataclass, a subclass of `SeqRecConfig` holding the official defaults
  (`models.make_config` validates keys and values against it; `models.build` passes the instance).
- `causal`: True when slot t never sees slots > t (tests/test_models_interface.py checks it both
  ways: a causal model's prefix never changes, a non-causal one's does).
What the base class then provides, the same for every model:
- The user vector is H at the last real slot n_b - 1 (`user_vector`); no final norm.
- Scores are u . E^T over all N rows of the tied item table, row 0 included (`full_scores`; a
  model may add a term, as LRURec's item bias).
- `loss(S, target)`: softmax cross-entropy over the catalogue, plus the model's auxiliary loss in
  training (`loss_terms` returns the two apart).

Optional:
- Auxiliary loss: override `forward_with_aux(item_seq) -> (hidden, aux or None)`, which computes
  the hidden states and the auxiliary term in ONE call and returns both; nothing is kept on the
  module between calls. `loss_terms` calls it in training only (in eval it calls `forward`), so
  `forward` itself never computes the auxiliary branch. EulerFormer's phase contrastive loss is
  the one user.
- Analytic cost, all `(batch_size: int, seq_len: int) -> int`, FLOPs of the whole batch under the
  suite's convention (2 x multiply-adds of matrix-product ops only; bench/measure/flops.py), each a
  pure function of the shapes and the config (never of `self.training` or of a past call):
    `layer_flops`     forward FLOPs of one layer (the default raises NotImplementedError: a model
                      without a formula leaves it out, and so do the methods built on it);
    `extra_flops`     forward FLOPs outside the layers and the output product (default 0);
    `forward_flops`   the inference forward, `full_scores`: n_layers x layer + extra + the output
                      product 2 B d N;
    `auxiliary_flops` the forward FLOPs that only training adds (the auxiliary loss's branch, run by
                      `loss` in train mode; default 0), so a train step's forward is
                      forward_flops + auxiliary_flops;
    `step_flops`      a train step, forward + backward: 3 x (forward + auxiliary) by default (a
                      product's backward costs two products of its size); models whose backward
                      does less (a custom autograd Function, a constant operand) subtract it;
    `scan_flops`      forward element-wise recurrence work that no counter sees (default 0).
  Components (token mixers, filters, memories, FFNs) expose their costs with the same signature
  (`flops`, `backward_shortfall`, `scan_flops`), so a model-level method only sums them. A model
  that implements none of them (neither `layer_flops` nor `forward_flops`), or a wrapper that names
  why it has no formula in `analytic_flops_reason` (the official twins, bench.adapters.official),
  gets empty analytic cells in its rows with that reason (`models.no_analytic_reason`, used by
  bench/sweep/point.py); the counters still measure it.
- Streaming (the `stream` workload, bench/workload.py): `stream_mode` declares what a deployed model
  keeps between one user's events:
    "cache"      causal attention (SASRec, EulerFormer): every layer's keys and values of the past
                 events; a new event attends over them, O(L) per event;
    "state"      recurrent and state-space models (Mamba4Rec, LRURec, RecBLR): a fixed-size state
                 (for Mamba also the conv window), O(1) per event;
    "recompute"  (the default) nothing can be kept exactly: a non-causal mixer (LinRec, RecGRELA,
                 ELASTIC, SIGMA, EchoMamba4Rec) makes the last slot depend on every slot, or the
                 model has no streaming code; each event reruns `full_scores` over the window.
  A model declaring "cache" or "state" (only a `causal` one may) implements
    `stream_init(batch_size, capacity) -> state`: B users with no events yet, on the model's
        device; `capacity` is the most events the state must hold (the window, max_len). A state
        is a dict whose tensors are what is kept between events, plus int "length" (events seen);
    `stream_step(state, item [B]) -> (u [B, d], state')`: one new event per user; u is the user
        vector after it, equal (float tolerance) to `user_vector` of the whole history so far
        (tests/test_stream.py). `state` stays valid for its own length: a step may write slot
        `length` of a preallocated buffer in place (whoever writes it writes the same values) but
        never changes slots below it, so one step can be timed again and again from one state.
  The base class provides `stream_prefill` (the events of item_seq [B, n] one at a time; a model
  may do it in parallel), `stream_state_bytes` (what the state's tensors hold) and `stream_flops`.
  Streaming is exact while a user's history fits the window (max_len): past it a sliding window
  shifts every absolute position (SASRec's learned P) and drops what a state already absorbed.
- Scores of a user vector: `scores(u [B, d], items=None)` -> [B, N] over the whole catalogue, or
  [B, K] for `items` [K] (shared candidates) or [B, K] (each user's own); a model that adds a
  term (LRURec's item bias) overrides `scores` only, so the losses of models/losses.py and the
  stream step score the same way.
- Declared properties read by the harness and the tests: `faithful_to` (the official code or
  paper followed, with its commit) and `reconstruction` (True where no code exists: every CSV row
  says so).

Naming rules:
- Reference oracles: a plain, slow reference of a fast path sits beside it and is named
  `<name>_ref` (as state-spaces/mamba's `selective_scan_ref`): a function `spectral_filter_ref`
  beside `spectral_filter`, `rela_ref` beside `rela`; for a module's method, `forward_ref` beside
  `forward`, with the same signature and outputs. Tests compare the two, forward and backward.
- Scan strategies (config `scan`), one vocabulary for every model: the fast default by the name
  of its algorithm and `ref` for the step-by-step reference oracle; `scan=chunked|loop|ref` for the
  selective scan (Mamba4Rec, EchoMamba4Rec, SIGMA; `loop` is the per-step loop under plain
  autograd), `scan=parallel|ref` for the linear scan (LRURec, RecBLR; the former `sequential` is
  accepted as an alias of `ref`). A key names the function it runs (`<op>` or `<op>_<key>`,
  models/ops/__init__.py); any other value raises ValueError naming the valid ones.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import FeedForward, recbole_init
from .losses import CE, LOSS_NAMES, Loss


@dataclass
class SeqRecConfig:
    """Keys shared by every model; subclasses add their extras and official defaults."""

    negative_numbers: ClassVar[bool] = False  # may an int or float key be negative (`_check_types`)
    n_items: int = 3417  # item ids including padding id 0 (ML-1M: 3,416 items + 1)
    max_len: int = 50  # padded sequence length L (RecGRELA and RoPE tables need exactly L)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2

    def __post_init__(self):
        for name in ("n_items", "max_len", "d_model", "n_layers", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_items < 2:
            raise ValueError(f"n_items counts padding id 0 and must be >= 2, got {self.n_items}")
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} does not divide d_model={self.d_model}")
        self._check_types()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith(("dropout", "drop_path")) and not 0.0 <= value < 1.0:
                raise ValueError(f"{field.name} must be in [0, 1), got {value!r}")

    def _check_types(self) -> None:
        """Every bool, int, float and str field holds a value of its type (a spec's `gate=maybe`
        or `local_shortcut=no` would otherwise be truthy text, `d_state=2.5` a float size), numbers
        finite and non-negative (no config of the suite has a negative one; a config class whose
        keys may be, as RecBole's own, sets `negative_numbers`); an int given to a float field
        becomes a float. Raises ValueError naming the field."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            kind, value = hints.get(field.name), getattr(self, field.name)
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"{field.name} must be true or false, got {value!r}")
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{field.name} must be an integer, got {value!r}")
            if kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{field.name} must be a number, got {value!r}")
                object.__setattr__(self, field.name, float(value))
            if kind in (int, float) and not (math.isfinite(getattr(self, field.name))
                                             and (value >= 0 or self.negative_numbers)):
                bound = "" if self.negative_numbers else " >= 0"
                raise ValueError(f"{field.name} must be a finite number{bound}, got {value!r}")
            if kind is str and not isinstance(value, str):
                raise ValueError(f"{field.name} must be text, got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class SequentialRecommender(nn.Module):
    """Base class: item table, user vector, scores, CE loss and the declared properties (the
    contract is the module docstring)."""

    config_class: ClassVar[type[SeqRecConfig]] = SeqRecConfig
    """The config dataclass `models.make_config` validates a model's keys against and builds; each
    model declares its own subclass of SeqRecConfig with the official defaults."""
    causal: ClassVar[bool] = False
    objectives: ClassVar[tuple] = LOSS_NAMES  # the losses (models/losses.py) its train step can take
    stream_mode: ClassVar[str] = "recompute"  # "cache" | "state" | "recompute" (the module docstring)
    faithful_to: ClassVar[str] = ""
    reconstruction: ClassVar[bool] = False

    def __init__(self, config: SeqRecConfig):
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items, config.d_model, padding_idx=0)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, d]
        raise NotImplementedError

    def forward_with_aux(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden [B, L, d], auxiliary training loss or None) from one forward. The hidden states
        are `forward`'s; a model with an auxiliary loss overrides this to compute both in the same
        call (no module state carries the term). Default: no auxiliary loss."""
        return self(item_seq), None

    @staticmethod
    def last_positions(item_seq: torch.Tensor) -> torch.Tensor:
        """n_b - 1 for right-padded sequences (an all-padding row gathers slot 0)."""
        return (item_seq != 0).sum(dim=1).clamp(min=1) - 1

    def user_vector(self, item_seq: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """u_b = H[b, n_b - 1] (RecBole's gather_indexes): [B, d]. The forward runs through
        `self(...)`, so module hooks see the model as the root module (MemTracker then accepts a
        submodule the forward calls more than once, such as one Dropout shared by every layer)."""
        hidden = self(item_seq) if hidden is None else hidden
        self.check_hidden(item_seq, hidden)
        index = self.last_positions(item_seq).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        return hidden.gather(1, index).squeeze(1)

    def check_hidden(self, item_seq: torch.Tensor, hidden) -> None:
        """The contract's output: `forward` returns [B, L, d] for ids [B, L]. Raises ValueError
        naming what it returned instead (a plugin's wrong shape or type is then one readable
        reason in its row, not an error from deep inside the scores' product)."""
        d = self.item_embedding.embedding_dim
        if not isinstance(hidden, torch.Tensor):
            raise ValueError(f"{type(self).__name__}.forward returned a {type(hidden).__name__}, "
                             f"expected a tensor [B, L, d] = [{item_seq.shape[0]}, {item_seq.shape[1]}, {d}]")
        if hidden.dim() != 3 or hidden.shape[0] != item_seq.shape[0] or hidden.shape[1] != item_seq.shape[1] \
                or hidden.shape[2] != d:
            raise ValueError(f"{type(self).__name__}.forward returned {list(hidden.shape)}, expected "
                             f"[B, L, d] = [{item_seq.shape[0]}, {item_seq.shape[1]}, {d}]")

    def full_scores(self, item_seq: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over the whole catalogue, tied to the item table: [B, N] (from `hidden` when given)."""
        return self.scores(self.user_vector(item_seq, hidden))

    def scores(self, u: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """u . E[i] (+ `score_bias`) for the tied item table: u [B, d] against every id (items None:
        [B, N], row 0 included), shared candidates (items [K]: [B, K]) or each user's own (items
        [B, K]: [B, K]). Each form is one matrix product, so the FLOP counters see it."""
        table = self.item_embedding.weight
        if items is None:
            logits = u @ table.t()  # [B, N]
        elif items.dim() == 1:
            logits = u @ table[items].t()  # [B, K]
        else:
            logits = (table[items] @ u.unsqueeze(-1)).squeeze(-1)  # [B, K, d] @ [B, d, 1] -> [B, K]
        bias = self.score_bias(items)
        return logits if bias is None else logits + bias

    def score_bias(self, items: torch.Tensor | None = None) -> torch.Tensor | None:
        """A per-item term the scores add (LRURec's item bias), for every id or for `items`; None: none."""
        return None

    def target_and_shared_scores(self, u: torch.Tensor, target: torch.Tensor,
                                 negatives: torch.Tensor) -> torch.Tensor:
        """[B, 1 + K]: column 0 is u_b . E[target_b], columns 1.. are u_b against K candidates shared
        by the batch (negatives [K]), as `scores` gives them, from ONE gather of the item table (two
        gathers would each give the table a dense [N, d] gradient in backward)."""
        B = u.shape[0]
        candidates = torch.cat([target, negatives])  # [B + K]
        rows = self.item_embedding.weight[candidates]  # [B + K, d]
        positive = (rows[:B].unsqueeze(1) @ u.unsqueeze(-1)).view(B, 1)  # [B, 1, d] @ [B, d, 1]
        shared = u @ rows[B:].t()  # [B, K]
        logits = torch.cat([positive, shared], dim=1)
        bias = self.score_bias(candidates)
        if bias is None:
            return logits
        return logits + torch.cat([bias[:B, None], bias[None, B:].expand(B, -1)], dim=1)

    # --- streaming (the module docstring; `stream_mode` "cache" or "state" implement init and step) ---
    def stream_init(self, batch_size: int, capacity: int) -> dict:
        """The state of `batch_size` users with no events (dict of tensors + int "length")."""
        raise NotImplementedError(f"{type(self).__name__} streams by recomputing (stream_mode "
                                  f"{self.stream_mode!r}); it keeps no state between events")

    def stream_step(self, state: dict, item: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """One new event per user, item [B]: (user vector [B, d] after it, the next state)."""
        raise NotImplementedError(f"{type(self).__name__} streams by recomputing (stream_mode "
                                  f"{self.stream_mode!r}); it keeps no state between events")

    def stream_prefill(self, item_seq: torch.Tensor, capacity: int) -> tuple[torch.Tensor | None, dict]:
        """Feed the events of item_seq [B, n] (every slot a real event) one at a time from an empty
        state: (the user vector after the last one, or None for n = 0; the state after them)."""
        state = self.stream_init(item_seq.shape[0], capacity)
        u = None
        for t in range(item_seq.shape[1]):
            u, state = self.stream_step(state, item_seq[:, t])
        return u, state

    @staticmethod
    def stream_state_bytes(state: dict) -> int:
        """Bytes of every tensor the state keeps between events (its allocated size, all users)."""
        return sum(v.numel() * v.element_size() for v in state_tensors(state))

    def stream_flops(self, batch_size: int, seq_len: int) -> int:
        """Analytic FLOPs of one stream step (one event per user, whose history then holds
        `seq_len` events, and the full-catalogue scores): "recompute" is the whole forward over
        the window; "state" is the forward of one slot; "cache" has no generic formula (its
        attention reads seq_len keys), and a model declaring it overrides this."""
        if self.stream_mode == "recompute":
            return self.forward_flops(batch_size, seq_len)
        if self.stream_mode == "state":
            return self.forward_flops(batch_size, 1)
        raise NotImplementedError(f"{type(self).__name__} declares stream_mode 'cache' without stream_flops")

    def stream_scan_flops(self, batch_size: int, seq_len: int) -> int:
        """`scan_flops` of one stream step: one slot's recurrence for "state", the window's otherwise."""
        return self.scan_flops(batch_size, 1 if self.stream_mode == "state" else seq_len)

    def loss_terms(self, item_seq: torch.Tensor, target: torch.Tensor,
                   objective: Loss = CE) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the next-item loss, the auxiliary loss or None), from one forward: `forward_with_aux` in
        training, `forward` in eval (no auxiliary term). `objective` (models/losses.py): softmax CE
        over all N ids by default, or a sampled softmax / BCE against K negatives."""
        hidden, auxiliary = self.forward_with_aux(item_seq) if self.training else (self(item_seq), None)
        if objective == CE:
            return F.cross_entropy(self.full_scores(item_seq, hidden), target), auxiliary
        return objective.value(self, self.user_vector(item_seq, hidden), target), auxiliary

    def loss(self, item_seq: torch.Tensor, target: torch.Tensor, objective: Loss = CE) -> torch.Tensor:
        """The next-item loss (softmax CE over all N ids unless `objective` says otherwise) + the
        model's auxiliary loss in training."""
        main, auxiliary = self.loss_terms(item_seq, target, objective)
        return main if auxiliary is None else main + auxiliary

    def num_params(self) -> tuple[int, int]:
        """(total, trainable) counts of real parameters (a complex one counts 2); buffers excluded."""
        params = list(self.parameters())
        size = lambda p: p.numel() * (2 if p.is_complex() else 1)  # noqa: E731
        return sum(map(size, params)), sum(size(p) for p in params if p.requires_grad)

    # --- analytic cost (the module docstring: pure functions of the shapes, FLOPs of the batch) ---
    def layer_flops(self, batch_size: int, seq_len: int) -> int:
        """Forward FLOPs of one layer for the whole batch (matrix-product ops, 2 per MAC)."""
        raise NotImplementedError(f"{type(self).__name__} has no analytic FLOP formula")

    def extra_flops(self, batch_size: int, seq_len: int) -> int:
        """FLOPs outside the layers and the output product (0 unless a model overrides it)."""
        return 0

    def forward_flops(self, batch_size: int, seq_len: int) -> int:
        """Analytic FLOPs of `full_scores` (the inference forward): layers + extra + the tied output product."""
        c = self.config
        output = 2 * batch_size * c.d_model * c.n_items
        return c.n_layers * self.layer_flops(batch_size, seq_len) + self.extra_flops(batch_size, seq_len) + output

    def auxiliary_flops(self, batch_size: int, seq_len: int) -> int:
        """Forward FLOPs only a train step adds: the auxiliary loss's branch (0 unless a model has one)."""
        return 0

    def step_flops(self, batch_size: int, seq_len: int) -> int:
        """Analytic FLOPs of a train step (forward + backward): the backward of a product costs two
        products of its size, so 3 x the train forward (forward + auxiliary) unless a model's
        custom backward does otherwise."""
        return 3 * (self.forward_flops(batch_size, seq_len) + self.auxiliary_flops(batch_size, seq_len))

    def scan_flops(self, batch_size: int, seq_len: int) -> int:
        """Forward FLOPs of element-wise recurrences (scans) that no counter sees; 0 if none."""
        return 0


STREAM_MODES = ("cache", "state", "recompute")


def state_tensors(state) -> list:
    """The tensors of a stream state: a dict, list or tuple of tensors, nested any depth."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for value in state.values() for t in state_tensors(value)]
    if isinstance(state, (list, tuple)):
        return [t for value in state for t in state_tensors(value)]
    return []


class RecBoleStack(SequentialRecommender):
    """RecBole's wrapper of the recurrent models (Mamba4Rec, EchoMamba4Rec, SIGMA, RecBLR):
    X0 = LN_1e-12(Dropout(E[S])), no position embedding, then the layers in turn; RecBole's init
    over the whole model. Subclasses pass their layers and add only what differs.

    Cost: every layer exposes `flops`, `backward_shortfall` (how far its backward products fall
    below 2 x its forward ones) and `scan_flops`, all (batch_size, seq_len) -> int, and the layers
    of one model are alike, so the model-level methods are written here once."""

    def __init__(self, config: SeqRecConfig, layers):
        super().__init__(config)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.d_model, eps=1e-12)
        self.layers = nn.ModuleList(layers)
        self.apply(recbole_init)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.dropout(self.item_embedding(item_seq)))  # [B, L, d]
        for layer in self.layers:
            x = layer(x)
        return x

    def layer_flops(self, batch_size: int, seq_len: int) -> int:
        return self.layers[0].flops(batch_size, seq_len)

    def step_flops(self, batch_size: int, seq_len: int) -> int:
        shortfall = self.layers[0].backward_shortfall(batch_size, seq_len)
        return super().step_flops(batch_size, seq_len) - self.config.n_layers * shortfall

    def scan_flops(self, batch_size: int, seq_len: int) -> int:
        return self.config.n_layers * self.layers[0].scan_flops(batch_size, seq_len)

    # streaming, for a subclass declaring stream_mode "state" whose mixers implement `step_init`,
    # `step` and `stream_flops` (Mamba4Rec, RecBLR); the others keep the base's recompute
    def stream_init(self, batch_size: int, capacity: int) -> dict:
        """B users with no events: each layer's mixer state before slot 0 (`mixer.step_init`)."""
        if self.stream_mode != "state":
            return super().stream_init(batch_size, capacity)
        return {"length": 0, "layers": [layer.mixer.step_init(batch_size, capacity) for layer in self.layers]}

    def stream_step(self, state: dict, item: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.stream_mode != "state":
            return super().stream_step(state, item)
        x = self.norm(self.dropout(self.item_embedding(item)))  # X0 at the new slot: [B, d]
        kept = []
        for layer, mixer_state in zip(self.layers, state["layers"]):
            x, mixer_state = layer.step(x, mixer_state)
            kept.append(mixer_state)
        return x, {"length": state["length"] + 1, "layers": kept}

    def stream_flops(self, batch_size: int, seq_len: int) -> int:
        """"state": forward_flops(B, 1) with each mixer's one-slot products as its `step` runs them
        (`mixer.stream_flops`; a causal conv computes one output, where the sequence conv at L = 1
        computes k); otherwise the base's."""
        if self.stream_mode != "state":
            return super().stream_flops(batch_size, seq_len)
        mixer = self.layers[0].mixer
        saved = mixer.flops(batch_size, 1) - mixer.stream_flops(batch_size, seq_len)
        return self.forward_flops(batch_size, 1) - self.config.n_layers * saved


class RecBoleLayer(nn.Module):
    """One layer of those wrappers (Mamba4Rec's MambaLayer, SIGMA's SIGMALayers, RecBLR's
    RecurrentLayer), written once around the model's own token mixer:
        X' = LN_1e-12(Dropout(mixer(X)) + X)    (no "+ X" when residual=False)
        X  = LN_1e-12(X' + Dropout(W2 Dropout(act(W1 X'))))    inner 4d
    The mixer exposes `flops`, `backward_shortfall` and `scan_flops` (batch_size, seq_len) -> int.
    """

    def __init__(self, mixer: nn.Module, d_model: int, dropout: float, residual: bool = True,
                 ffn_activation: str = "gelu"):
        super().__init__()
        self.mixer = mixer
        self.residual = residual
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = FeedForward(d_model, 4 * d_model, dropout, ffn_activation, post_norm_eps=1e-12,
                               inner_dropout=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.mixer(x))
        return self.ffn(self.norm(y + x if self.residual else y))

    def step(self, x: torch.Tensor, mixer_state: tuple) -> tuple[torch.Tensor, tuple]:
        """`forward` at one new slot, x [B, d], from the mixer's kept state (`mixer.step(x, *state)
        -> (y, *state')`): (the layer's output [B, d], the mixer's next state)."""
        y, *kept = self.mixer.step(x, *mixer_state)
        y = self.dropout(y)
        return self.ffn(self.norm(y + x if self.residual else y)), tuple(kept)

    def flops(self, batch_size: int, seq_len: int) -> int:
        """Forward product FLOPs: the mixer and the FFN."""
        return self.mixer.flops(batch_size, seq_len) + self.ffn.flops(batch_size, seq_len)

    def backward_shortfall(self, batch_size: int, seq_len: int) -> int:
        return self.mixer.backward_shortfall(batch_size, seq_len)

    def scan_flops(self, batch_size: int, seq_len: int) -> int:
        return self.mixer.scan_flops(batch_size, seq_len)
