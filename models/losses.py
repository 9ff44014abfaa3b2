"""The train step's objective (`--loss`), one for every model: what the step scores the user
vector u [B, d] against, and how.

- `ce` (the default; the RecGRELA paper's, RecBole's `loss_type=CE`): softmax cross-entropy of the
  next item over all N ids; the output product is 2 B d N FLOPs.
- `sampled:K`: sampled softmax (Jean et al., ACL 2015; as TensorFlow's `sampled_softmax_loss`). K
  negatives are drawn uniformly from ids 1..N-1, with replacement, shared by the batch; every logit
  is corrected by -log Q(i), Q(i) = K / (N - 1) the expected count of i among the draws (the
  "log-Q correction"; uniform draws make it one constant, kept so the loss is the estimator the
  literature names); a negative equal to a row's target is an accidental hit and is removed
  (logit -inf). Cross-entropy over [target, K negatives]: 2 B d (K + 1) output FLOPs.
- `bce:K`: binary cross-entropy of the target against K negatives of the user's own, uniform over
  1..N-1 (the original SASRec's objective, Kang & McAuley ICDM 2018, which draws one negative per
  position; here at the last position, as the suite's protocol scores): -log s(u.e_t) -
  sum_k log(1 - s(u.e_k)), mean over the batch; 2 B d (K + 1) output FLOPs.

Negatives are drawn inside the step (their cost is the step's), from torch's generator, which the
workload seeds. Every candidate logit comes from a matrix product (`SequentialRecommender.scores`,
`target_and_shared_scores`), so the FLOP counters see exactly the analytic `output_flops`. The
sampled loss gathers the target's and the negatives' rows of the item table in one index: two
gathers gave the table two dense [N, d] gradients to sum in backward (+37 MiB of tracked peak for
RecGRELA at N = 1e5, B = 32, L = 200, measured before the change).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_NAMES = ("ce", "sampled", "bce")


@dataclass(frozen=True)
class Loss:
    """A parsed `--loss`: `name` in LOSS_NAMES and, for sampled and bce, `negatives` K >= 1."""

    name: str = "ce"
    negatives: int = 0

    @property
    def spec(self) -> str:
        """The spelling the CLI takes and every row records: `ce`, `sampled:128`, `bce:1`."""
        return self.name if self.name == "ce" else f"{self.name}:{self.negatives}"

    def scored_items(self, n_items: int) -> int:
        """How many item logits per user the step computes: N for ce, K + 1 otherwise."""
        return n_items if self.name == "ce" else self.negatives + 1

    def output_flops(self, batch_size: int, d_model: int, n_items: int) -> int:
        """Forward FLOPs of the loss's scoring products (2 B d x scored items)."""
        return 2 * batch_size * d_model * self.scored_items(n_items)

    def value(self, model, u: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of user vectors u [B, d] for next items target [B] (a scalar, mean over B)."""
        if self.name == "ce":
            return F.cross_entropy(model.scores(u), target)
        n_items = model.item_embedding.num_embeddings
        if self.name == "sampled":
            negatives = torch.randint(1, n_items, (self.negatives,), device=u.device)  # [K], shared
            log_q = math.log(self.negatives / (n_items - 1))  # log of each id's expected count
            logits = model.target_and_shared_scores(u, target, negatives)  # [B, 1 + K]
            hit = torch.cat([torch.zeros_like(target[:, None], dtype=torch.bool),
                             negatives[None, :] == target[:, None]], dim=1)  # accidental hits
            logits = logits.masked_fill(hit, float("-inf")) - log_q
            return F.cross_entropy(logits, torch.zeros_like(target))
        negatives = torch.randint(1, n_items, (u.shape[0], self.negatives), device=u.device)  # [B, K], own
        logits = model.scores(u, torch.cat([target[:, None], negatives], dim=1))  # [B, 1 + K]
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / u.shape[0]


CE = Loss()


def parse_loss(text: str) -> Loss:
    """`ce`, `sampled:K` or `bce:K` (K a positive integer). Raises ValueError naming the forms."""
    name, sep, k = str(text).strip().partition(":")
    forms = "ce, sampled:K or bce:K (K negatives, a positive integer)"
    if name == "ce" and not sep:
        return CE
    if name in ("sampled", "bce") and sep:
        if k.isascii() and k.isdigit() and 0 < int(k) <= 2**31 - 1:
            return Loss(name, int(k))
        raise ValueError(f"--loss {text!r}: K must be a positive integer; the loss is one of {forms}")
    raise ValueError(f"--loss {text!r} is not a loss; use one of {forms}")


def check_loss_fits(loss: Loss, n_items: int) -> None:
    """K negatives from N - 1 ids: refuse K >= N - 1 (a sampled loss then scores more than the
    catalogue; use ce). Raises ValueError."""
    if loss.name != "ce" and loss.negatives >= n_items - 1:
        raise ValueError(f"--loss {loss.spec} draws {loss.negatives} negatives, but a catalogue of N = {n_items} ids "
                         f"has only {n_items - 1} items: use K below {n_items - 1} or --loss ce")
