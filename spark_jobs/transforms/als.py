"""Implicit ALS as the pipeline uses it: the estimator from a group's settings, and scores."""
from __future__ import annotations

import numpy as np
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame

from spark_jobs.transforms import affinity
from spark_jobs.transforms.evaluation import dot_scores

FOLD_IN_CHUNK_VALUES = 1 << 25   # doubles of outer products held at once (256 MB)


def estimator(params: dict, user_blocks: int) -> ALS:
    """ALS on (member_sk, subclass_brand_id, rating) with a group's settings (`als` section)."""
    return ALS(
        rank=int(params["rank"]), maxIter=int(params["max_iter"]), regParam=float(params["reg_param"]),
        alpha=float(params["alpha"]), implicitPrefs=True, userCol="member_sk", itemCol="subclass_brand_id",
        ratingCol="rating", numUserBlocks=user_blocks, numItemBlocks=int(params["item_blocks"]),
        checkpointInterval=int(params["checkpoint_interval"]), seed=int(params["seed"]),
    )


def blocks_for(members: int, params: dict) -> tuple[int, int]:
    """(user blocks, divisor) for a group of `members` members."""
    return affinity.user_blocks(members, int(params["user_blocks_threshold"]),
                                int(params["user_blocks_divisor_small"]), int(params["user_blocks_divisor_large"]))


def fit(ratings: DataFrame, params: dict) -> ALSModel:
    blocks, _ = blocks_for(ratings.select("member_sk").distinct().count(), params)
    return estimator(params, blocks).fit(ratings)


def member_scores(model: ALSModel, ratings: DataFrame, members: DataFrame) -> DataFrame:
    """(member_id, subclass_brand_id, score) of every item the model knows, for `members`
    (member_id) that have factors; `ratings` maps member_id to the model's member_sk."""
    ids = ratings.select("member_id", "member_sk").distinct().join(members, "member_id", "left_semi")
    users = model.userFactors.join(ids.withColumnRenamed("member_sk", "id"), "id", "left_semi")
    return dot_scores(users, model.itemFactors).join(ids, "member_sk").drop("member_sk")


def fold_in(member_index: np.ndarray, item_index: np.ndarray, rating: np.ndarray, item_factors: np.ndarray,
            members: int, alpha: float, reg_param: float, chunk_ratings: int | None = None) -> np.ndarray:
    """Members' factors from their ratings with the item factors held fixed: one user half-step
    of Spark's implicit ALS, so that applied to a fitted model's item factors it reproduces the
    model's own user factors.

    For member u with ratings r_ui (confidence - 1: c_ui = alpha |r_ui|, preference 1 where r > 0):
        (Y'Y + sum_i c_ui y_i y_i' + reg_param n_u I) x_u = sum_{i: r_ui > 0} (1 + c_ui) y_i
    with n_u the number of positive ratings (Spark's ALS.computeFactors with implicitPrefs).
    `member_index` (0 .. members-1) and `item_index` (rows of `item_factors`) give each rating's
    member and item; returns a members x rank matrix (zeros for members without ratings).
    Works through the ratings in chunks so that memory stays at chunk x rank x rank doubles
    (FOLD_IN_CHUNK_VALUES, 256 MB, by default).
    """
    rank = item_factors.shape[1]
    chunk_ratings = chunk_ratings or max(1024, FOLD_IN_CHUNK_VALUES // (rank * rank))
    factors = item_factors.astype(np.float64)
    order = np.argsort(member_index, kind="stable")
    member_index, item_index, rating = member_index[order], item_index[order], rating[order].astype(np.float64)
    confidence = alpha * np.abs(rating)
    positive = rating > 0
    normal = np.broadcast_to(factors.T @ factors, (members, rank, rank)).copy()
    right = np.zeros((members, rank))
    counts = np.zeros(members)
    for start in range(0, len(rating), chunk_ratings):
        part = slice(start, start + chunk_ratings)
        rows, y, c = member_index[part], factors[item_index[part]], confidence[part]
        members_here, starts = np.unique(rows, return_index=True)     # rows are sorted: one run per member
        normal[members_here] += np.add.reduceat(c[:, None, None] * y[:, :, None] * y[:, None, :], starts, axis=0)
        right[members_here] += np.add.reduceat(((1.0 + c) * positive[part])[:, None] * y, starts, axis=0)
        counts[members_here] += np.add.reduceat(positive[part].astype(np.float64), starts)
    normal += (reg_param * counts)[:, None, None] * np.eye(rank)
    solved = np.zeros((members, rank))
    rated = counts > 0
    solved[rated] = np.linalg.solve(normal[rated], right[rated][:, :, None])[:, :, 0]
    return solved


def warm_start(member_index: np.ndarray, item_index: np.ndarray, rating: np.ndarray, item_factors: np.ndarray,
               known_items: np.ndarray, members: int, items: int, alpha: float, reg_param: float,
               iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """(member factors, item factors) after continuing a fitted model on more ratings: every
    member folded in against the model's item factors (items the model does not know, where
    `known_items` is False, are skipped), then `iterations` full ALS iterations (item half-step,
    user half-step, as Spark orders them) over all the ratings. The item half-step also gives
    items first rated in the new ratings their factors."""
    known = known_items[item_index]
    users = fold_in(member_index[known], item_index[known], rating[known], item_factors, members, alpha, reg_param)
    for _ in range(iterations):
        item_factors = fold_in(item_index, member_index, rating, users, items, alpha, reg_param)
        users = fold_in(member_index, item_index, rating, item_factors, members, alpha, reg_param)
    return users, item_factors
