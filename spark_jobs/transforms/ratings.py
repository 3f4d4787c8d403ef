"""Implicit ratings: a member's weighted event count per subclass-brand."""
from __future__ import annotations

from datetime import datetime
from itertools import chain

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def implicit_ratings(events: DataFrame, style_keys: DataFrame, weights: dict[str, float],
                     by: tuple[str, ...] = (), recency: tuple[datetime, float] | None = None) -> DataFrame:
    """(member_id, subclass_brand_id, *by, rating) with rating = sum of event weights, and with
    `recency` = (as of, half-life in days) also recent_rating = sum of weight x
    0.5 ^ (age in days / half-life): the same events, the older the less.

    `events`: clean events; `style_keys`: style_id -> subclass_brand_id; `by`: more columns of the
    events to keep apart (e.g. a held-out flag). Event types without a
    weight count zero and pairs whose rating is zero are left out (ALS reads absence as zero).
    """
    weight_of = F.create_map(*chain.from_iterable((F.lit(k), F.lit(float(v))) for k, v in weights.items()))
    sums = [F.sum("weight").alias("rating")]
    if recency is not None:
        as_of, half_life_days = recency
        age_days = (F.lit(as_of).cast("timestamp").cast("double") - F.col("occurred_at").cast("double")) / 86400.0
        sums.append(F.sum(F.col("weight") * F.pow(F.lit(0.5), age_days / F.lit(float(half_life_days))))
                    .alias("recent_rating"))
    return (
        events.join(style_keys.select("style_id", "subclass_brand_id"), "style_id")
        .withColumn("weight", F.coalesce(weight_of[F.col("event_type")], F.lit(0.0)))
        .groupBy("member_id", "subclass_brand_id", *by)
        .agg(*sums)
        .where(F.col("rating") > 0)
    )
