"""Ranking metrics against a worked example computed by hand."""
from __future__ import annotations

import math

import pytest

from flashfeed.quality.metrics import METRICS, mean_metrics, ranking_metrics

LOG2_3, LOG2_6 = math.log2(3), math.log2(6)      # 1.58496, 2.58496


def test_one_member_worked_example():
    # Hits at positions 2 (b) and 5 (e); x is relevant but never recommended.
    got = ranking_metrics(["a", "b", "c", "d", "e"], {"b", "e", "x"}, k=5)
    dcg = 1 / LOG2_3 + 1 / LOG2_6                 # 0.63093 + 0.38685 = 1.01778
    ideal = 1 + 1 / LOG2_3 + 1 / 2                # min(k, 3 relevant) = 3 positions: 2.13093
    assert got["precision@k"] == pytest.approx(2 / 5)
    assert got["recall@k"] == pytest.approx(2 / 3)
    assert got["ndcg@k"] == pytest.approx(dcg / ideal) == pytest.approx(0.47762, abs=1e-5)
    assert got["map@k"] == pytest.approx((1 / 2 + 2 / 5) / 3) == pytest.approx(0.3)
    assert got["mrr"] == pytest.approx(1 / 2)


def test_only_the_first_k_count():
    got = ranking_metrics(["a", "b", "c", "d", "e"], {"b", "e", "x"}, k=2)
    assert got["precision@k"] == pytest.approx(1 / 2)
    assert got["recall@k"] == pytest.approx(1 / 3)
    assert got["ndcg@k"] == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))   # 0.38685
    assert got["map@k"] == pytest.approx((1 / 2) / 2)                         # min(k, 3) = 2
    assert got["mrr"] == pytest.approx(1 / 2)


def test_short_list_and_no_hit():
    short = ranking_metrics(["x", "y"], {"x"}, k=5)
    assert short == pytest.approx({"precision@k": 1 / 5, "recall@k": 1.0, "ndcg@k": 1.0, "map@k": 1.0, "mrr": 1.0})
    miss = ranking_metrics(["p", "q", "r"], {"z"}, k=5)
    assert miss == {"precision@k": 0.0, "recall@k": 0.0, "ndcg@k": 0.0, "map@k": 0.0, "mrr": 0.0}


def test_means_over_members():
    got = mean_metrics([(["a", "b", "c", "d", "e"], {"b", "e", "x"}), (["x", "y"], {"x"}), (["p"], {"z"})], k=5)
    assert got["members"] == 3
    assert got["precision@k"] == pytest.approx((0.4 + 0.2 + 0) / 3)           # 0.2
    assert got["recall@k"] == pytest.approx((2 / 3 + 1 + 0) / 3)              # 0.5556
    assert got["ndcg@k"] == pytest.approx((0.47762 + 1 + 0) / 3, abs=1e-5)    # 0.49254
    assert got["map@k"] == pytest.approx((0.3 + 1 + 0) / 3)                   # 0.4333
    assert got["mrr"] == pytest.approx((0.5 + 1 + 0) / 3)                     # 0.5
    assert mean_metrics([], k=10)["members"] == 0


def test_refusals():
    with pytest.raises(ValueError, match="k must be at least 1"):
        ranking_metrics(["a"], {"a"}, k=0)
    with pytest.raises(ValueError, match="without relevant items"):
        ranking_metrics(["a"], set(), k=3)


def test_block_metrics_equal_the_one_member_definition():
    import numpy as np

    from flashfeed.quality.metrics import ranking_metrics_block

    rng = np.random.default_rng(5)
    k = 10
    lists = [list(rng.permutation(40)[: rng.integers(0, 12)]) for _ in range(200)]   # some shorter than k
    relevant = [set(rng.choice(40, rng.integers(1, 15), replace=False)) for _ in range(200)]
    hits = np.zeros((200, k), dtype=bool)
    for row, (ranked, wanted) in enumerate(zip(lists, relevant)):
        for position, item in enumerate(ranked[:k]):
            hits[row, position] = item in wanted
    block = ranking_metrics_block(hits, np.array([len(r) for r in relevant]), k)
    for row, (ranked, wanted) in enumerate(zip(lists, relevant)):
        one = ranking_metrics(ranked, wanted, k)
        for name in METRICS:
            assert block[name][row] == pytest.approx(one[name]), (row, name)
