"""Collections: the six data sets per member (products, brands, categories x full, card).

Each data set is a list of groups ordered by affinity, each group a list of product ids:
- products: one group per subclass-brand ("Gracia Day Dresses");
- brands: the member's subclass-brands of one brand ("Gracia"); a brand is as relevant as
  the member's best subclass-brand of it;
- categories: the member's subclass-brands of one subclass ("Day Dresses").
`full` keeps every group with enough saleable products, up to the per-member product limit;
`card` keeps the first few groups with a few products each, for a carousel.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from flashfeed.core.lake import FALLBACK_MEMBER_PREFIX

FALLBACK_ALL = "all"
AFFINITY_DIGITS = 4
ENVELOPE_BYTES = 256  # member_id (<= 64 chars), feed, variant, version and the JSON around groups


def styles_by_subclass_brand(products: DataFrame) -> DataFrame:
    """(subclass_brand_id, styles) with styles in product-score rank order."""
    return products.groupBy("subclass_brand_id").agg(
        F.transform(
            F.array_sort(F.collect_list(F.struct("rank_in_subclass_brand", "style_id"))), lambda s: s["style_id"]
        ).alias("styles")
    )


def fallback_affinity(products: DataFrame) -> DataFrame:
    """Affinity rows for the fallback 'members': one per division and one global.

    Without a model, a subclass-brand is as relevant as its best-scored product on sale,
    scaled to [0, 1] within the division (or overall for the global fallback). A division's
    fallback is `__fallback__#<division key>`: `division` is the key the catalogue was read with
    (`catalog.with_subclass_brand`), what the import stores and the API looks up; a division
    without a key (null: no letter or digit) gets none, its products count in the global one.
    """
    best = products.groupBy("subclass_brand_id", "division", "subclass_key", "class_key").agg(
        F.max("score").alias("score")
    )

    def scaled(df: DataFrame, member_id, partition) -> DataFrame:
        window = Window.partitionBy(*partition)
        low, high = F.min("score").over(window), F.max("score").over(window)
        affinity = F.when(high > low, (F.col("score") - low) / (high - low)).otherwise(F.lit(1.0))
        return df.select(
            member_id.alias("member_id"), "subclass_brand_id", "subclass_key", "class_key", affinity.alias("affinity")
        )

    per_division = scaled(best.where(F.col("division").isNotNull()),
                          F.concat(F.lit(FALLBACK_MEMBER_PREFIX), F.col("division")), ["division"])
    overall = scaled(best, F.lit(FALLBACK_MEMBER_PREFIX + FALLBACK_ALL), [])
    return per_division.unionByName(overall).withColumn("boost", F.lit(0.0))


def feed_units(member_affinity: DataFrame, sb_styles: DataFrame, names: DataFrame, feed: str) -> DataFrame:
    """One row per (member, group) of a feed, without its products yet: key, name, affinity,
    boost, `n` (saleable products of the group) and `subclass_brands` (its subclass-brand ids,
    most relevant first, whose products fill the group in that order; `attach_styles`)."""
    sizes = sb_styles.select("subclass_brand_id", F.size("styles").alias("n"))
    joined = (
        member_affinity.select("member_id", "subclass_brand_id", "subclass_key", "affinity", "boost")
        .join(F.broadcast(sizes), "subclass_brand_id")
        .join(F.broadcast(names.select("subclass_brand_id", "brand", "subclass")), "subclass_brand_id")
    )
    if feed == "products":
        return joined.select(
            "member_id",
            F.col("subclass_brand_id").cast("string").alias("key"),
            F.concat_ws(" ", "brand", "subclass").alias("name"),
            "affinity",
            "boost",
            "n",
            F.array("subclass_brand_id").alias("subclass_brands"),
        )
    key, name = {"brands": ("brand", "brand"), "categories": ("subclass_key", "subclass")}[feed]
    ordered = F.array_sort(F.collect_list(F.struct(-F.col("affinity"), F.col("subclass_brand_id"))))
    return (
        joined.groupBy("member_id", F.lower(F.col(key)).alias("key"))
        .agg(
            F.first(name).alias("name"),
            F.max("affinity").alias("affinity"),
            F.max("boost").alias("boost"),
            F.sum("n").cast("int").alias("n"),
            F.transform(ordered, lambda s: s["subclass_brand_id"]).alias("subclass_brands"),
        )
    )


def limit_groups(units: DataFrame, variant: str, cfg: dict) -> DataFrame:
    """Apply the full/card limits to the groups (by their sizes, before any product is attached);
    adds `position` (1 = most relevant group) and `take` (how many of the group's products)."""
    units = units.where(F.col("n") >= cfg["min_saleable_products"])
    order = Window.partitionBy("member_id").orderBy(F.desc("affinity"), F.asc("key"))
    ranked = units.withColumn("position", F.row_number().over(order))
    if variant == "card":
        return ranked.where(F.col("position") <= cfg["card_groups"]).withColumn(
            "take", F.least(F.col("n"), F.lit(cfg["card_products"])))
    cap = cfg["products_per_member"]
    before = F.coalesce(F.sum("n").over(order.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0))
    return (
        ranked.withColumn("before", before)
        .where(F.col("before") < cap)
        .withColumn("take", F.least(F.col("n"), F.lit(cap) - F.col("before")).cast("int"))
        .drop("before")
    )


def attach_styles(groups: DataFrame, sb_styles: DataFrame) -> DataFrame:
    """`styles`: the first `take` products of each kept group, its subclass-brands' products in
    order (each subclass-brand's in product-score order). Only kept groups are expanded, so the
    work is a few hundred products per member whatever the number of affinities."""
    exploded = groups.select("*", F.posexplode("subclass_brands").alias("_sb_position", "subclass_brand_id"))
    parts = F.array_sort(F.collect_list(F.struct("_sb_position", "styles")))
    keys = [c for c in groups.columns if c != "subclass_brands"]
    return (
        exploded.join(F.broadcast(sb_styles), "subclass_brand_id")
        .groupBy(*keys)
        .agg(F.flatten(F.transform(parts, lambda p: p["styles"])).alias("styles"))
        .withColumn("styles", F.slice("styles", 1, F.col("take")))
        .drop("take", "n")
    )


def payloads(groups: DataFrame, feed: str, variant: str, version: str, max_bytes: int) -> DataFrame:
    """(member_id, feed, variant, version, groups, truncated_groups): one payload row per member.

    Truncation rule: a payload whose JSON would exceed `max_bytes` keeps its most relevant
    groups that fit (in position order) and drops the rest whole; `truncated_groups` counts the
    dropped groups so that the manifest can report them.
    """
    entry = F.struct(
        F.col("key"),
        F.col("name"),
        F.round("affinity", AFFINITY_DIGITS).alias("affinity"),
        F.round("boost", AFFINITY_DIGITS).alias("boost"),
        F.col("styles"),
    )
    by_position = Window.partitionBy("member_id").orderBy("position")
    sized = (
        groups.withColumn("entry", entry)
        .withColumn("entry_bytes", F.octet_length(F.to_json("entry")) + F.lit(1))  # +1: the comma
        .withColumn("running_bytes", F.sum("entry_bytes").over(by_position.rowsBetween(Window.unboundedPreceding, 0)))
        .withColumn("fits", F.col("running_bytes") + F.lit(ENVELOPE_BYTES) <= F.lit(int(max_bytes)))
    )
    kept = F.collect_list(F.when(F.col("fits"), F.struct("position", "entry")))
    return sized.groupBy("member_id").agg(
        F.transform(F.array_sort(kept), lambda g: g["entry"]).alias("groups"),
        F.sum(F.when(F.col("fits"), 0).otherwise(1)).alias("truncated_groups"),
    ).select(
        "member_id",
        F.lit(feed).alias("feed"),
        F.lit(variant).alias("variant"),
        F.lit(version).alias("version"),
        "groups",
        "truncated_groups",
    )
