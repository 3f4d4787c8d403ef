"""Ranking metrics at k for offline evaluation: one member at a time (pure Python), or a block of
members at once (numpy, `ranking_metrics_block`, for the daily quality gate).

For one member: `recommended` is the ranked list the model returns (best first; only the
first k count) and `relevant` the set of held-out items. Relevance is binary.

- precision@k = hits / k  (k, not the list length: a short list is not rewarded)
- recall@k    = hits / |relevant|
- NDCG@k      = DCG / ideal DCG, DCG = sum over hit positions i (1-based) of 1 / log2(i + 1),
                ideal DCG = the same sum over positions 1 .. min(k, |relevant|)
- AP@k        = (sum of precision@i over hit positions i <= k) / min(k, |relevant|)
- RR          = 1 / position of the first hit within k, 0 without a hit (MRR is its mean)

`mean_metrics` averages over members; members without any relevant item must not be passed
(they have nothing to find), which the caller's split guarantees.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

METRICS = ("precision@k", "recall@k", "ndcg@k", "map@k", "mrr")


def ranking_metrics(recommended: Sequence, relevant: set, k: int) -> dict[str, float]:
    """The five metrics of one member (see module docstring)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not relevant:
        raise ValueError("a member without relevant items cannot be evaluated")
    hits = 0
    dcg = 0.0
    precision_sum = 0.0
    reciprocal_rank = 0.0
    for position, item in enumerate(recommended[:k], start=1):
        if item in relevant:
            hits += 1
            dcg += 1.0 / math.log2(position + 1)
            precision_sum += hits / position
            if not reciprocal_rank:
                reciprocal_rank = 1.0 / position
    ideal = sum(1.0 / math.log2(position + 1) for position in range(1, min(k, len(relevant)) + 1))
    return {
        "precision@k": hits / k,
        "recall@k": hits / len(relevant),
        "ndcg@k": dcg / ideal,
        "map@k": precision_sum / min(k, len(relevant)),
        "mrr": reciprocal_rank,
    }


def mean_metrics(members: Iterable[tuple[Sequence, set]], k: int) -> dict[str, float]:
    """Mean of each metric over (recommended, relevant) pairs, plus `members`: how many."""
    totals = dict.fromkeys(METRICS, 0.0)
    count = 0
    for recommended, relevant in members:
        for name, value in ranking_metrics(recommended, relevant, k).items():
            totals[name] += value
        count += 1
    means = {name: (total / count if count else 0.0) for name, total in totals.items()}
    means["members"] = count
    return means


def ranking_metrics_block(hits: np.ndarray, relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The five metrics for many members at once, as `ranking_metrics` defines them.

    `hits`: members x n booleans, True where the item at that position (1-based column + 1) of a
    member's ranked list is relevant (n <= k; a shorter list has False padding); `relevant`:
    each member's number of relevant items (>= 1). Returns one array per metric.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    hits = np.asarray(hits, dtype=bool)[:, :k]
    relevant = np.asarray(relevant)
    if (relevant < 1).any():
        raise ValueError("a member without relevant items cannot be evaluated")
    positions = np.arange(1, hits.shape[1] + 1)
    discount = 1.0 / np.log2(positions + 1)
    ideal_cumulative = np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1))
    found = hits.sum(axis=1)
    first = hits.argmax(axis=1) + 1 if hits.shape[1] else np.zeros(len(hits), dtype=int)
    first = np.where(hits.any(axis=1), first, 0)
    return {
        "precision@k": found / k,
        "recall@k": found / relevant,
        "ndcg@k": (hits * discount).sum(axis=1) / ideal_cumulative[np.minimum(k, relevant) - 1],
        "map@k": (hits * np.cumsum(hits, axis=1) / positions).sum(axis=1) / np.minimum(k, relevant),
        "mrr": np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0),
    }
