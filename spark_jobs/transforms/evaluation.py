"""Offline evaluation splits of clean events (Spark), shared by `flashfeed evaluate`, `flashfeed
tune` and the quality gate of the daily model. What is relevant, what is ranked and the metrics
are transforms/candidates.py and flashfeed/quality/metrics.py.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def with_keys(events: DataFrame, catalog_keyed: DataFrame) -> DataFrame:
    """Clean events with their subclass-brand (events of unknown styles drop out: cleaning has
    already rejected and counted those)."""
    return events.join(catalog_keyed.select("style_id", "subclass_brand_id"), "style_id")


def mark_time_holdout(events: DataFrame, holdout_days: int) -> DataFrame:
    """`events` plus `held_out`: true for each member's events in the `holdout_days` before and
    including her own last event (an aggregate and a join, no sort of the events)."""
    last = events.groupBy("member_id").agg(F.max("occurred_at").alias("_last"))
    return (events.join(last, "member_id")
            .withColumn("held_out",
                        F.col("occurred_at") > F.col("_last") - F.expr(f"INTERVAL {int(holdout_days)} DAYS"))
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
