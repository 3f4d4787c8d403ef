"""Per-group ALS helpers: user blocks, saleable candidates, boost, variety limit."""
from __future__ import annotations

import math

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


def user_blocks(members: int, threshold: int, divisor_small: int, divisor_large: int) -> tuple[int, int]:
    """(user blocks, divisor used): small groups use the small divisor, large ones the large."""
    divisor = divisor_small if members < threshold else divisor_large
    return max(1, math.ceil(members / divisor)), divisor


def saleable_subclass_brands(live: DataFrame, style_keys: DataFrame, min_qty: int, max_products: int) -> DataFrame:
    """(subclass_brand_id, products): subclass-brands with products on sale with enough stock
    (the ALS candidates), and how many such products a collection can show of each (at most
    `max_products`, as product scoring keeps at most that many per subclass-brand)."""
    return (
        live.where(F.col("qty_on_hand") >= min_qty)
        .join(style_keys.select("style_id", "subclass_brand_id"), "style_id")
        .groupBy("subclass_brand_id")
        .agg(F.least(F.countDistinct("style_id"), F.lit(int(max_products))).cast("int").alias("products"))
    )


def apply_boost(affinity: DataFrame, interest: DataFrame, boost: float) -> DataFrame:
    """Boost subclass-brands in a member's recently browsed-not-bought subclasses.

    `affinity` needs member_id, subclass_key, affinity; `interest` the member's top subclasses
    (already limited to the configured number). affinity becomes affinity * (1 + boost) and the
    applied boost is kept in `boost` so a payload can explain its order.
    """
    flagged = interest.select("member_id", "subclass_key").withColumn("boost", F.lit(float(boost)))
    return (
        affinity.join(flagged, ["member_id", "subclass_key"], "left")
        .fillna(0.0, subset=["boost"])
        .withColumn("affinity", F.col("affinity") * (F.lit(1.0) + F.col("boost")))
    )


def variety_limit(spark: SparkSession, affinity: DataFrame, sql: str, per_class: int) -> DataFrame:
    """At most `per_class` subclass-brands per class per member, rank order kept."""
    return spark.sql(sql, affinity=affinity, limit=int(per_class)).drop("rank_in_class")
