"""Full-ranking metrics: the target's rank among all items, then HR, NDCG and MRR at k.

Protocol (RecBole full sort for sequential models): every catalogue item is scored; the padding
id 0 is excluded (its score set to -inf); items the user has already seen are NOT removed.

rank (0-based) = the number of items i != target whose score s_i is NOT below the target's
score s_t, i.e. the target loses every tie: rank = #{i : s_i > s_t} + #{i != t : s_i = s_t}.
A model that scores everything alike therefore ranks every target last (metrics 0), never first.
A NaN target score also ranks last, and a NaN score of another item counts as above the target.
It is one comparison over the [B, N] score matrix: no sort, no per-user loop.

With r the 0-based rank and [.] the indicator:
  HR@k   = mean [r < k]
  NDCG@k = mean [r < k] / log2(r + 2)    (one relevant item, so the ideal DCG is 1)
  MRR@k  = mean [r < k] / (r + 1)
"""
from __future__ import annotations

import torch

KS = (5, 10)
METRICS = tuple(f"{name}@{k}" for name in ("hr", "ndcg", "mrr") for k in KS)


def target_ranks(scores: torch.Tensor, target: torch.Tensor, exclude_padding: bool = True) -> torch.Tensor:
    """0-based rank of each target among all items, ties against the target: [B, N], [B] -> [B]."""
    if exclude_padding:
        scores = scores.clone()
        scores[:, 0] = float("-inf")
    target_score = scores.gather(1, target.view(-1, 1))  # [B, 1]
    not_below = ~(scores < target_score)  # s_i >= s_t, or either is NaN; includes the target itself
    return not_below.sum(dim=1) - 1


def ranking_metrics(ranks: torch.Tensor, ks=KS) -> dict:
    """HR, NDCG and MRR at each k from 0-based ranks (means over the users)."""
    ranks = ranks.double()
    out = {}
    for name in ("hr", "ndcg", "mrr"):
        for k in ks:
            hit = (ranks < k).double()
            gain = {"hr": hit, "ndcg": hit / torch.log2(ranks + 2), "mrr": hit / (ranks + 1)}[name]
            out[f"{name}@{k}"] = float(gain.mean()) if ranks.numel() else float("nan")
    return out
