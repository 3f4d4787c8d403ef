"""Offline evaluation: splits, baselines, ranking of unseen subclass-brands, metrics per member.

Shared by `flashfeed evaluate`, `flashfeed tune` and the quality gate of the daily model.
The unit is the subclass-brand (what the models score). A held-out subclass-brand is
*relevant* to a member when the member has an event with a positive weight on it in the test
part; by default subclass-brands the member already has in the training part are excluded
both from the ranking and from the relevant set (a model gets no credit for repeating them).
Members are evaluated when they have at least one training rating and one relevant item.
"""
from __future__ import annotations

from typing import Iterator

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from flashfeed.metrics import mean_metrics


def with_keys(events: DataFrame, catalog_keyed: DataFrame) -> DataFrame:
    """Clean events with their subclass-brand (events of unknown styles drop out: cleaning has
    already rejected and counted those)."""
    return events.join(catalog_keyed.select("style_id", "subclass_brand_id"), "style_id")


def mark_time_holdout(events: DataFrame, holdout_days: int) -> DataFrame:
    """`events` plus `held_out`: true for each member's events in the `holdout_days` before and
    including her own last event (an aggregate and a join, no sort of the events)."""
    last = events.groupBy("member_id").agg(F.max("occurred_at").alias("_last"))
    return (events.join(last, "member_id")
            .withColumn("held_out", F.col("occurred_at") > F.col("_last") - F.expr(f"INTERVAL {int(holdout_days)} DAYS"))
            .drop("_last"))


def mark_gate_parts(events: DataFrame, holdout_days: int, validation_days: int) -> DataFrame:
    """`events` plus `part`: "test" for each member's events in the `holdout_days` up to her
    own last event, "validation" for her events in the `validation_days` up to her last event
    before those, "train" for the rest (the same rule applied twice: the validation part is
    the training part's own holdout)."""
    marked = mark_time_holdout(events, holdout_days)
    train = mark_time_holdout(marked.where(~F.col("held_out")).drop("held_out"), validation_days)
    return (train.withColumn("part", F.when(F.col("held_out"), "validation").otherwise("train")).drop("held_out")
            .unionByName(marked.where(F.col("held_out")).drop("held_out").withColumn("part", F.lit("test"))))


def time_split(events: DataFrame, holdout_days: int) -> tuple[DataFrame, DataFrame]:
    """(train, test): each member's events in the `holdout_days` before and including their own
    last event are the test part. A member active on one day only has no training part."""
    marked = mark_time_holdout(events, holdout_days)
    return (marked.where(~F.col("held_out")).drop("held_out"), marked.where(F.col("held_out")).drop("held_out"))


def stratified_split(events: DataFrame, ratio: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(train, test) per member: the member's distinct subclass-brands are shuffled by a seeded
    hash and the first ceil(ratio x n) go to training with all their events, the rest to test.
    A hash, not rand(): the same seed gives the same split however the data is partitioned."""
    pairs = events.select("member_id", "subclass_brand_id").distinct()
    shuffled = Window.partitionBy("member_id").orderBy(
        F.xxhash64("member_id", "subclass_brand_id", F.lit(int(seed))), "subclass_brand_id")
    marked = (
        pairs.withColumn("_position", F.row_number().over(shuffled))
        .withColumn("_items", F.count("*").over(Window.partitionBy("member_id")))
        .withColumn("_test", F.col("_position") > F.ceil(F.col("_items") * F.lit(float(ratio))))
        .select("member_id", "subclass_brand_id", "_test")
    )
    joined = events.join(marked, ["member_id", "subclass_brand_id"])
    return (joined.where(~F.col("_test")).drop("_test"), joined.where(F.col("_test")).drop("_test"))


def relevant_items(train_ratings: DataFrame, test_ratings: DataFrame, exclude_seen: bool = True) -> DataFrame:
    """(member_id, subclass_brand_id) to be found: test pairs of members who have training
    ratings, minus what they have in training when `exclude_seen`."""
    test = test_ratings.select("member_id", "subclass_brand_id").distinct()
    test = test.join(train_ratings.select("member_id").distinct(), "member_id", "left_semi")
    if exclude_seen:
        test = test.join(train_ratings.select("member_id", "subclass_brand_id"),
                         ["member_id", "subclass_brand_id"], "left_anti")
    return test


def dot_scores(user_factors: DataFrame, item_factors: DataFrame) -> DataFrame:
    """(member_sk, subclass_brand_id, score): every user's dot product with every item's factors
    (Spark built-ins, no Python UDF). The item side is broadcast: it is the small one."""
    dot = F.aggregate(
        F.zip_with(F.col("u.features"), F.col("i.features"), lambda x, y: x * y), F.lit(0.0), lambda acc, v: acc + v
    )
    return user_factors.alias("u").crossJoin(F.broadcast(item_factors.alias("i"))).select(
        F.col("u.id").alias("member_sk"), F.col("i.id").alias("subclass_brand_id"), dot.alias("score")
    )


def popularity(train_ratings: DataFrame) -> DataFrame:
    """(subclass_brand_id, score): the baseline, the number of members who rated it."""
    return train_ratings.groupBy("subclass_brand_id").agg(F.countDistinct("member_id").cast("double").alias("score"))


def only(scores: DataFrame, candidates: DataFrame | None) -> DataFrame:
    """Scores of the candidate subclass-brands only (None: all)."""
    return scores if candidates is None else scores.join(F.broadcast(candidates), "subclass_brand_id", "left_semi")


def popularity_scores(train_ratings: DataFrame, members: DataFrame, k: int,
                      candidates: DataFrame | None = None) -> DataFrame:
    """(member_id, subclass_brand_id, score) for `members` (member_id): the most popular
    candidates, enough of them that k remain after removing any member's seen ones."""
    most_seen = train_ratings.groupBy("member_id").count().agg(F.max("count")).first()[0] or 0
    order = Window.orderBy(F.desc("score"), F.asc("subclass_brand_id"))
    top = only(popularity(train_ratings), candidates).withColumn("_rank", F.row_number().over(order)).where(
        F.col("_rank") <= k + most_seen).drop("_rank")
    return members.select("member_id").crossJoin(F.broadcast(top))


def top_k_unseen(scores: DataFrame, seen: DataFrame | None, k: int) -> DataFrame:
    """(member_id, subclass_brand_id, score, rank): the k best-scored items per member, skipping
    the (member_id, subclass_brand_id) pairs of `seen` (None: keep them). Ties: lower id first."""
    if seen is not None:
        scores = scores.join(seen.select("member_id", "subclass_brand_id"), ["member_id", "subclass_brand_id"],
                             "left_anti")
    order = Window.partitionBy("member_id").orderBy(F.desc("score"), F.asc("subclass_brand_id"))
    return scores.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k)


def boosted(scores: DataFrame, interest: DataFrame, boost: float) -> DataFrame:
    """Scores x (1 + boost) on the member's recently browsed-not-bought subclasses (the
    pipeline's boost, `affinity.apply_boost`, on evaluation scores). `scores` needs subclass_key."""
    flagged = interest.select("member_id", "subclass_key").distinct().withColumn("_boost", F.lit(float(boost)))
    return (
        scores.join(flagged, ["member_id", "subclass_key"], "left")
        .withColumn("score", F.col("score") * (F.lit(1.0) + F.coalesce(F.col("_boost"), F.lit(0.0))))
        .drop("_boost")
    )


def _member_lists(top: DataFrame, relevant: DataFrame) -> Iterator[tuple[list, set]]:
    """(ranked items, relevant set) per member with relevant items; streamed to the driver."""
    ranked = top.groupBy("member_id").agg(
        F.sort_array(F.collect_list(F.struct("rank", "subclass_brand_id"))).alias("ranked"))
    wanted = relevant.groupBy("member_id").agg(F.collect_set("subclass_brand_id").alias("relevant"))
    for row in wanted.join(ranked, "member_id", "left").toLocalIterator():
        yield [entry["subclass_brand_id"] for entry in (row["ranked"] or [])], set(row["relevant"])


def evaluate(top: DataFrame, relevant: DataFrame, k: int) -> dict[str, float]:
    """Mean metrics at k (flashfeed.metrics) of the ranked lists `top` (member_id,
    subclass_brand_id, rank) over every member of `relevant`; a member without a list scores 0."""
    return mean_metrics(_member_lists(top, relevant), k)
