"""train_group's decisions and numpy steps on tiny data, figures computed by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spark_jobs.transforms.als import factor_matrix, fitted_factors
from spark_jobs.transforms.candidates import popularity_share


def ratings(rows):
    return pd.DataFrame(rows, columns=["member_id", "member_sk", "subclass_brand_id", "rating"])


def test_popularity_is_the_share_of_the_groups_members_who_rated_each_candidate():
    group = ratings([("a", 1, 10, 3.0), ("b", 2, 10, 40.0), ("c", 3, 10, 3.0), ("a", 1, 20, 3.0), ("b", 2, 30, 9.0)])
    # 10: 3 of 3 members, 30: 1 of 3, 40: nobody (a candidate nobody rated); 20 is no candidate.
    assert popularity_share(group, "member_id", np.array([10, 30, 40])).tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_factor_matrix_follows_the_requested_ids_and_marks_the_missing():
    factors = pd.DataFrame({"id": [7, 3], "features": [np.array([1.0, 2.0]), np.array([3.0, 4.0])]})
    present, matrix = factor_matrix(factors, "id", np.array([3, 5, 7]))
    assert present.tolist() == [True, False, True]
    assert matrix.tolist() == [[3.0, 4.0], [0.0, 0.0], [1.0, 2.0]]


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
