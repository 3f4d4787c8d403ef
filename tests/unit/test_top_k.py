"""Vectorised top-K among candidates: the same items and order as a sort by (score desc, id asc)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spark_jobs.transforms.candidates import factor_scorer, shared_scorer
from spark_jobs.transforms.top_k import evaluate, exclude_seen, top_k_block, top_k_rows


def reference(scores: np.ndarray, k: int) -> list[list[int]]:
    """What the former window did: per row, sort by (score desc, column asc), keep k finite."""
    return [[c for c in sorted(range(len(row)), key=lambda c: (-row[c], c)) if np.isfinite(row[c])][:k]
            for row in scores]


def test_ties_at_the_kth_place_keep_the_lowest_ids():
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1],    # 0.9, then three tied at 0.5: columns 0 and 2 win
                       [1.0, 1.0, 1.0, 1.0, 1.0]])   # all tied: the first three columns
    columns, valid = top_k_block(scores, 3)
    assert columns.tolist() == [[1, 0, 2], [0, 1, 2]] and valid.all()


def test_excluded_items_are_never_returned_even_when_fewer_than_k_remain():
    scores = np.array([[0.2, 0.8, 0.4]])
    exclude_seen(scores, pd.Series([[20, 99]]), np.array([10, 20, 30]))   # 99 is not a candidate
    columns, valid = top_k_block(scores, 3)
    assert columns[valid].tolist() == [2, 0]          # 30 (0.4), 10 (0.2); 20 was seen


@pytest.mark.parametrize("seed", range(5))
def test_random_blocks_match_a_full_sort(seed):
    rng = np.random.default_rng(seed)
    # Rounded scores make ties frequent; some rows lose items to -inf (seen).
    scores = np.round(rng.normal(size=(50, 40)), 1)
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    for k in (1, 7, 40, 60):
        columns, valid = top_k_block(scores, k)
        assert [list(c[v]) for c, v in zip(columns, valid)] == reference(scores, k)


def rows_of(members, ids, values, k, block):
    scorer = shared_scorer(values) if values.ndim == 1 else factor_scorer(values, np.ones(len(ids), dtype=bool))
    return sorted(tuple(r) for r in pd.concat(list(top_k_rows(members, ids, scorer, k, block))).itertuples(index=False))


def test_top_k_rows_score_members_against_candidates_only_with_their_ratings():
    members = pd.DataFrame({"member_id": ["m-1", "m-2"], "rated_items": [[20, 99], []],
                            "rated_values": [[3.0, 40.0], []],
                            "features": [np.array([1.0, 0.0]), np.array([0.5, 2.0])]})
    ids, matrix = np.array([10, 20]), np.array([[0.9, 0.1], [0.2, 1.0]])   # 30 is not on sale: not passed
    # m-1: 10 -> 0.9, 20 -> 0.2 (rated 3.0; 99 is no candidate); m-2: 10 -> 0.45 + 0.2 = 0.65, 20 -> 0.1 + 2.0 = 2.1
    expected = [("m-1", 10, 0.9, 0.0, 1), ("m-1", 20, 0.2, 3.0, 2), ("m-2", 10, 0.65, 0.0, 2), ("m-2", 20, 2.1, 0.0, 1)]
    for block in (1, 2, 64):
        got = rows_of(members, ids, matrix, 5, block)
        assert [(m, i, round(a, 4), r, n) for m, i, a, r, n in got] == expected


def test_top_k_rows_by_one_score_give_every_member_the_same_ranking():
    members = pd.DataFrame({"member_id": ["m-1", "m-2"], "rated_items": [[30], []], "rated_values": [[10.0], []]})
    popular = np.array([3.0, 2.0, 2.0])            # 10, 20, 30: 20 and 30 tie, lower id first
    got = rows_of(members, np.array([10, 20, 30]), popular, 2, 64)
    assert got == [("m-1", 10, 3.0, 0.0, 1), ("m-1", 20, 2.0, 0.0, 2),
                   ("m-2", 10, 3.0, 0.0, 1), ("m-2", 20, 2.0, 0.0, 2)]


def test_evaluate_scores_each_members_top_k_against_her_relevant_items():
    members = pd.DataFrame({"features": [np.array([1.0, 0.0]), np.array([0.5, 2.0])],
                            "seen": [None, np.array([20])], "relevant": [np.array([20]), np.array([30, 40])]})
    ids, items = np.array([10, 20, 30]), np.array([[0.9, 0.1], [0.2, 1.0], [0.1, 0.5]])
    got = evaluate(members, ids, factor_scorer(items, np.ones(3, dtype=bool)), k=2, block_members=1)
    # member 1: 10 (0.9), 20 (0.2) -> hit at 2: NDCG 1/log2(3), RR 1/2, recall 1, precision 1/2.
    # member 2 has seen 20: 30 (0.05 + 1.0), 10 (0.65) -> hit at 1 of 2 relevant (40 is no candidate):
    # NDCG 1 / (1 + 1/log2(3)), RR 1, recall 1/2, precision 1/2. Means over 2.
    assert got["members"] == 2
    assert got["ndcg@k"] == pytest.approx((1 / math.log2(3) + 1 / (1 + 1 / math.log2(3))) / 2)
    assert got["mrr"] == pytest.approx((0.5 + 1) / 2)
    assert got["recall@k"] == pytest.approx((1 + 0.5) / 2)
    assert got["precision@k"] == pytest.approx(0.5)
