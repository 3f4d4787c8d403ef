"""Spark's implicit ALS in numpy: fold-in (one user half-step with the item factors held fixed) and the
whole fit on the driver."""
from __future__ import annotations

import numpy as np
import pytest

from spark_jobs.transforms.als import fit_on_driver, fold_in, initial_factors, iterate


def test_fold_in_of_a_fitted_models_items_gives_back_its_user_factors(spark):
    """Spark's ALS ends each iteration with the user half-step, so solving every member's normal
    equations against the final item factors must reproduce the model's user factors."""
    from pyspark.ml.recommendation import ALS

    rng = np.random.default_rng(3)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 60, 900), rng.integers(0, 40, 900))}
    rows = [(u, i, float(rng.choice([3.0, 10.0, 40.0]))) for u, i in sorted(pairs)]
    ratings = spark.createDataFrame(rows, "member_sk int, subclass_brand_id int, rating double")
    model = ALS(rank=4, maxIter=6, regParam=0.1, alpha=0.5, implicitPrefs=True, userCol="member_sk",
                itemCol="subclass_brand_id", ratingCol="rating", seed=7, numUserBlocks=2, numItemBlocks=2).fit(ratings)
    items = {r.id: np.array(r.features) for r in model.itemFactors.collect()}
    item_ids = sorted(items)
    users = {r.id: np.array(r.features) for r in model.userFactors.collect()}
    member_ids = sorted(users)
    position = {i: n for n, i in enumerate(item_ids)}
    got = fold_in(np.array([member_ids.index(u) for u, _, _ in rows]), np.array([position[i] for _, i, _ in rows]),
                  np.array([r for _, _, r in rows]), np.stack([items[i] for i in item_ids]), len(member_ids),
                  alpha=0.5, reg_param=0.1, chunk_cols=7)   # outer products of 7 items at a time
    expected = np.stack([users[u] for u in member_ids])
    assert np.allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_fold_in_solves_the_normal_equations_by_hand():
    # One item y = [1, 0], one member with rating 2: c = alpha * 2 = 1, n = 1.
    # (Y'Y + c y y' + reg I) x = (1 + c) y  ->  (1 + 1 + 0.5) x1 = 2, (0 + 0 + 0.5) x2 = 0
    got = fold_in(np.array([0]), np.array([0]), np.array([2.0]), np.array([[1.0, 0.0]]), 1, alpha=0.5, reg_param=0.5)
    assert np.allclose(got, [[2 / 2.5, 0.0]])


def _spark_fit(spark, rows, max_iter):
    from pyspark.ml.recommendation import ALS

    ratings = spark.createDataFrame(rows, "member_sk int, subclass_brand_id int, rating double")
    model = ALS(rank=3, maxIter=max_iter, regParam=0.1, alpha=0.5, implicitPrefs=True, userCol="member_sk",
                itemCol="subclass_brand_id", ratingCol="rating", seed=11, numUserBlocks=2, numItemBlocks=2).fit(ratings)
    users = {r.id: np.array(r.features) for r in model.userFactors.collect()}
    items = {r.id: np.array(r.features) for r in model.itemFactors.collect()}
    return users, items


def test_numpy_iterations_from_sparks_start_reproduce_sparks_fit(spark):
    """The driver fit is Spark's algorithm: from the factors Spark starts with (maxIter 0), five
    numpy iterations land on Spark's own five-iteration model (Spark keeps floats: 1e-3)."""
    rng = np.random.default_rng(5)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 50, 600), rng.integers(0, 30, 600), strict=True)}
    rows = [(u, i, float(rng.choice([3.0, 10.0, 40.0, -5.0]))) for u, i in sorted(pairs)]
    start, _ = _spark_fit(spark, rows, 0)
    users, items = _spark_fit(spark, rows, 5)
    member_ids, item_ids = sorted(users), sorted(items)
    assert sorted(start) == member_ids
    got_users, got_items = iterate(np.array([member_ids.index(u) for u, _, _ in rows]),
                                   np.array([item_ids.index(i) for _, i, _ in rows]), np.array([r for _, _, r in rows]),
                                   np.stack([start[u] for u in member_ids]), len(item_ids), alpha=0.5, reg_param=0.1,
                                   iterations=5)
    assert np.allclose(got_users, np.stack([users[u] for u in member_ids]), rtol=1e-3, atol=1e-3)
    assert np.allclose(got_items, np.stack([items[i] for i in item_ids]), rtol=1e-3, atol=1e-3)


def test_driver_fit_starts_like_spark_and_is_reproducible():
    start = initial_factors(200, 4, np.random.default_rng(1))
    assert np.allclose(np.linalg.norm(start, axis=1), 1.0)   # unit vectors, as Spark's ALS.initialize
    params = {"rank": 4, "max_iter": 3, "reg_param": 0.1, "alpha": 0.5, "seed": 9}
    member_index, item_index, rating = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), np.array([3.0, 10.0, 40.0, 3.0])
    first = fit_on_driver(member_index, item_index, rating, 4, 3, params)
    again = fit_on_driver(member_index, item_index, rating, 4, 3, params)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not first[0][3].any()     # member 3 has no ratings: zeros, as fold-in leaves her


@pytest.mark.parametrize(("name", "value"), [("rank", 0), ("max_iter", -1), ("reg_param", -0.1), ("alpha", -1.0)])
def test_driver_fit_refuses_what_sparks_als_refuses(name, value):
    params = {"rank": 2, "max_iter": 1, "reg_param": 0.1, "alpha": 0.5, "seed": 1, name: value}
    with pytest.raises(ValueError, match=rf"als {name} must be at least"):
        fit_on_driver(np.array([0]), np.array([0]), np.array([3.0]), 1, 1, params)
