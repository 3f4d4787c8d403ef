"""Implicit ALS as the pipeline uses it: the estimator from a group's settings, and scores."""
from __future__ import annotations

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame

from spark_jobs.transforms import affinity
from spark_jobs.transforms.evaluation import dot_scores


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
