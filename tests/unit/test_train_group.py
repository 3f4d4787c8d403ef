"""train_group's decisions and numpy steps on tiny data, figures computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spark_jobs.train_group import factor_matrix, fitted_factors, gate_evaluation, popularity_scores


def ratings(rows):
    return pd.DataFrame(rows, columns=["member_id", "member_sk", "subclass_brand_id", "rating"])


def test_popularity_is_the_share_of_the_groups_members_who_rated_each_candidate():
    group = ratings([("a", 1, 10, 3.0), ("b", 2, 10, 40.0), ("c", 3, 10, 3.0), ("a", 1, 20, 3.0), ("b", 2, 30, 9.0)])
    # 10: 3 of 3 members, 30: 1 of 3, 40: nobody (a candidate nobody rated); 20 is no candidate.
    assert popularity_scores(group, np.array([10, 30, 40])).tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_factor_matrix_follows_the_requested_ids_and_marks_the_missing():
    factors = pd.DataFrame({"id": [7, 3], "features": [np.array([1.0, 2.0]), np.array([3.0, 4.0])]})
    present, matrix = factor_matrix(factors, "id", np.array([3, 5, 7]))
    assert present.tolist() == [True, False, True]
    assert matrix.tolist() == [[3.0, 4.0], [0.0, 0.0], [1.0, 2.0]]


def test_gate_judges_the_model_against_popularity_on_the_held_out_part():
    # Two members; subclass-brands 10, 20, 30 in the held-out part. Popularity in training: 10 by
    # both, 20 by one, 30 by nobody.
    train = ratings([("a", 1, 10, 3.0), ("b", 2, 10, 3.0), ("b", 2, 20, 3.0)])
    relevant = pd.DataFrame({"member_id": ["a", "b"], "member_sk": [1, 2], "subclass_brand_id": [30, 30]})
    users = pd.DataFrame({"member_sk": [1, 2], "features": [np.array([1.0]), np.array([1.0])]})
    items = pd.DataFrame({"subclass_brand_id": [10, 20, 30], "features": [np.array([0.1]), np.array([0.2]),
                                                                          np.array([0.9])]})
    gate = gate_evaluation(users, items, train, relevant, np.array([10, 20, 30]), k=2, margin=0.0, block=8)
    # Model: 30 ranks first for both (seen items left out) -> NDCG 1. Popularity: a (has 10) gets
    # 20 then 30 -> hit at 2: 1/log2(3); b (has 10, 20) gets 30 -> 1. Mean (0.6309 + 1) / 2.
    assert gate["model"]["ndcg@k"] == pytest.approx(1.0)
    assert gate["popularity"]["ndcg@k"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert gate["passed"] and gate["model"]["members"] == 2
    # Now a wants 20: popularity gives a 20 (her best unseen) and b 30 at k = 1 -> NDCG 1;
    # a model preferring 30 over 20 gives a 30 (miss) -> NDCG (0 + 1) / 2 = 0.5: below, so it fails.
    worse = items.assign(features=[np.array([0.9]), np.array([0.0]), np.array([0.5])])
    failed = gate_evaluation(users, worse, train, relevant.assign(subclass_brand_id=[20, 30]),
                             np.array([10, 20, 30]), k=1, margin=0.0, block=8)
    assert failed["model"]["ndcg@k"] == pytest.approx(0.5) and failed["popularity"]["ndcg@k"] == pytest.approx(1.0)
    assert not failed["passed"] and "0.5000 is below popularity 1.0000" in failed["reason"]
    lenient = gate_evaluation(users, worse, train, relevant.assign(subclass_brand_id=[20, 30]),
                              np.array([10, 20, 30]), k=1, margin=0.5, block=8)
    assert lenient["passed"]                       # 0.5 >= 1.0 - 0.5


@pytest.mark.parametrize(("limit", "engine"), [(1000, "driver"), (10, "spark")])
def test_a_group_is_fit_on_the_driver_up_to_the_limit_and_by_spark_above_it(spark, tmp_path, limit, engine):
    """30 ratings: within a limit of 1000 the fit runs in numpy and no Spark session is asked
    for, above a limit of 10 Spark's ALS fits them; both give factors keyed as the gate and the
    scoring read them."""
    spark.sparkContext.setCheckpointDir(str(tmp_path))
    sessions = []

    def session():
        sessions.append(spark)
        return spark

    rng = np.random.default_rng(2)
    frame = ratings([(f"m{u}", u, int(i), float(rng.choice([3.0, 40.0])))
                     for u in range(10) for i in rng.choice(8, 3, replace=False)])
    params = {"rank": 3, "max_iter": 4, "reg_param": 0.1, "alpha": 0.5, "seed": 1, "item_blocks": 1,
              "checkpoint_interval": 10, "driver_fit_max_ratings": limit}
    users, items = fitted_factors(session, frame, params, blocks=1)
    assert bool(sessions) == (engine == "spark")
    assert sorted(users["member_sk"]) == list(range(10))
    assert sorted(items["subclass_brand_id"]) == sorted(frame["subclass_brand_id"].unique())
    assert {len(f) for f in users["features"]} == {3}
    assert {len(f) for f in items["features"]} == {3}
