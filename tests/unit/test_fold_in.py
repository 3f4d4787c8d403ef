"""Fold-in: one user half-step of implicit ALS with the item factors held fixed."""
from __future__ import annotations

import numpy as np

from spark_jobs.transforms.als import fold_in


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
                  alpha=0.5, reg_param=0.1, chunk_ratings=97)   # small chunks: members span chunk borders
    expected = np.stack([users[u] for u in member_ids])
    assert np.allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_fold_in_solves_the_normal_equations_by_hand():
    # One item y = [1, 0], one member with rating 2: c = alpha * 2 = 1, n = 1.
    # (Y'Y + c y y' + reg I) x = (1 + c) y  ->  (1 + 1 + 0.5) x1 = 2, (0 + 0 + 0.5) x2 = 0
    got = fold_in(np.array([0]), np.array([0]), np.array([2.0]), np.array([[1.0, 0.0]]), 1, alpha=0.5, reg_param=0.5)
    assert np.allclose(got, [[2 / 2.5, 0.0]])
