"""The product hierarchy and the subclass-brand key, the unit affinities are learned on."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

HIERARCHY = ("division", "department", "class", "subclass")
# ALS needs integer item ids; a hash of the normalised leaf + brand is stable across runs
# (the same leaf and brand always gets the same key) without a lookup table to maintain.
_INT31 = 0x7FFFFFFF


def _norm(column: str):
    return F.lower(F.trim(F.col(column)))


def subclass_brand_id(*columns: str):
    return F.xxhash64(*[_norm(c) for c in columns]).bitwiseAND(F.lit(_INT31).cast("bigint")).cast("int")


def with_subclass_brand(catalog: DataFrame) -> DataFrame:
    """Add `subclass_brand_id`, `subclass_key` (hierarchy leaf) and `class_key` to a catalog."""
    return (
        catalog.withColumn("subclass_brand_id", subclass_brand_id(*HIERARCHY, "brand"))
        .withColumn("subclass_key", F.concat_ws(">", *[_norm(c) for c in HIERARCHY]))
        .withColumn("class_key", F.concat_ws(">", *[_norm(c) for c in HIERARCHY[:3]]))
    )


def subclass_brands(catalog_keyed: DataFrame) -> DataFrame:
    """One row per subclass-brand with its readable names (for payload group names)."""
    return catalog_keyed.groupBy("subclass_brand_id").agg(
        *[F.first(c, ignorenulls=True).alias(c) for c in (*HIERARCHY, "brand", "subclass_key", "class_key")]
    )


def check_key_collisions(catalog_keyed: DataFrame) -> None:
    """Two different leaves+brands must never share a key; fail loudly if the hash collides."""
    collisions = (
        catalog_keyed.select("subclass_brand_id", *[_norm(c).alias(c) for c in (*HIERARCHY, "brand")])
        .distinct()
        .groupBy("subclass_brand_id")
        .count()
        .where("count > 1")
        .limit(5)
        .collect()
    )
    if collisions:
        raise ValueError(
            f"subclass-brand key collision for ids {[r.subclass_brand_id for r in collisions]}: "
            "rename one of the brands or subclasses involved"
        )
