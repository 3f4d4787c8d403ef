"""The product hierarchy and the subclass-brand key, the unit affinities are learned on."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flashfeed.core.divisions import division_key_column

HIERARCHY = ("division", "department", "class", "subclass")
# ALS needs integer item ids; a hash of the normalised leaf + brand is stable across runs
# (the same leaf and brand always gets the same key) without a lookup table to maintain.
_INT31 = 0x7FFFFFFF


def _norm(column: str):
    """A level of the hierarchy (or the brand) as keys compare it: trimmed, lower case."""
    return F.lower(F.trim(F.col(column)))


def subclass_brand_id(*columns: str):
    return F.xxhash64(*[_norm(c) for c in columns]).bitwiseAND(F.lit(_INT31).cast("bigint")).cast("int")


def with_subclass_brand(catalog: DataFrame) -> DataFrame:
    """Add `subclass_brand_id`, `subclass_key` (hierarchy leaf) and `class_key` to a catalog, with
    `division` as its division key (flashfeed.core.divisions; null without a letter or digit).
    Every job reads the catalogue through here, so groups, scores and fallbacks see keys only: an
    older import's free text ("Women's Apparel") and today's key (`womens_apparel`) are one
    division, with the same subclass-brand ids, and a key ("women") keeps the id it always had."""
    return (
        catalog.withColumn("division", division_key_column("division"))
        .withColumn("subclass_brand_id", subclass_brand_id(*HIERARCHY, "brand"))
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


def _hierarchy_text(catalog_keyed: DataFrame):
    return F.concat(F.concat_ws(" > ", *HIERARCHY), F.lit(" / "), F.col("brand"))


def conflicting_styles(catalog_keyed: DataFrame) -> DataFrame:
    """(style_id, hierarchies): styles listed more than once in one catalogue with different
    subclass-brands; `hierarchies` are the readable ones, sorted."""
    return (catalog_keyed.groupBy("style_id")
            .agg(F.countDistinct("subclass_brand_id").alias("n"),
                 F.array_sort(F.collect_set(_hierarchy_text(catalog_keyed))).alias("hierarchies"))
            .where("n > 1").select("style_id", "hierarchies"))


def hierarchy_changes(today: DataFrame, previous: DataFrame) -> DataFrame:
    """(style_id, before, after, changed) for every style in both keyed catalogues: `changed` when
    its subclass-brand differs (a change of case or spacing is not one: the key normalises it)."""
    def side(catalog: DataFrame, name: str) -> DataFrame:
        return catalog.select("style_id", F.col("subclass_brand_id").alias(f"{name}_id"),
                              _hierarchy_text(catalog).alias(name)).dropDuplicates(["style_id"])

    both = side(previous, "before").join(side(today, "after"), "style_id")
    return both.select("style_id", "before", "after", (F.col("before_id") != F.col("after_id")).alias("changed"))


def hierarchy_change_problem(changed: int, in_both: int, max_share: float) -> str | None:
    """Why the day's catalogue is refused, or None: more than `max_share` of the styles both
    catalogues list moved to another subclass-brand (a re-classification is rare; a share
    that large is a broken export, e.g. shifted columns)."""
    if in_both and changed / in_both > max_share:
        return (f"{changed:,} of the {in_both:,} styles in both catalogues ({changed / in_both:.1%}) changed "
                f"subclass or brand, above cleaning.max_hierarchy_change_share ({max_share:.1%})")
    return None
