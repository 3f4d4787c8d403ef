"""The launch's feeds built from related subclass-brands (spark_jobs/related.py's lists).

- `related` (per product on sale): the related subclass-brands with products on sale, each a
  group of its best products, for a product page;
- `bought_together` (per product on sale): products of the subclass-brands bought with it,
  the best product of each first;
- `because` (per member, the seventh collection, card only): "Because you viewed <product>"
  carousels, one per recently viewed product, of its related subclass-brands' products.

A list depends only on the anchor's subclass-brand, so each is built once per subclass-brand
(a few thousand) and then attached to products and members by a join.
"""
from __future__ import annotations

import functools

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

SCORE_DIGITS = 4


def saleable_lists(lists: DataFrame, sb_styles: DataFrame) -> DataFrame:
    """(item, related, score, rank, styles): the list entries whose subclass-brand has products
    on sale in this launch, re-ranked 1.. in list order."""
    on_sale = lists.join(sb_styles.withColumnRenamed("subclass_brand_id", "related"), "related")
    order = Window.partitionBy("item").orderBy("rank")
    return on_sale.withColumn("rank", F.row_number().over(order))


def related_groups(lists: DataFrame, sb_styles: DataFrame, names: DataFrame, groups: int,
                   styles: int) -> DataFrame:
    """(subclass_brand_id, groups): per subclass-brand, its first `groups` related subclass-brands
    on sale, each {key, name, score, styles (its best `styles` products)}."""
    named = saleable_lists(lists, sb_styles).where(F.col("rank") <= groups).join(
        names.select(F.col("subclass_brand_id").alias("related"), "brand", "subclass"), "related")
    entry = F.struct(F.col("related").cast("string").alias("key"), F.concat_ws(" ", "brand", "subclass").alias("name"),
                     F.round("score", SCORE_DIGITS).alias("score"), F.slice("styles", 1, styles).alias("styles"))
    ordered = F.array_sort(F.collect_list(F.struct("rank", entry.alias("group"))))
    return named.groupBy(F.col("item").alias("subclass_brand_id")).agg(
        F.transform(ordered, lambda g: g["group"]).alias("groups"))


def round_robin(lists: DataFrame, sb_styles: DataFrame, styles: int) -> DataFrame:
    """(subclass_brand_id, styles): per subclass-brand, up to `styles` products of its related
    subclass-brands on sale: the best product of each (in list order), then the second of each, ..."""
    exploded = saleable_lists(lists, sb_styles).select(
        "item", "rank", F.posexplode("styles").alias("position", "style_id"))
    order = Window.partitionBy("item").orderBy("position", "rank")
    first = exploded.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= styles)
    return first.groupBy(F.col("item").alias("subclass_brand_id")).agg(
        F.transform(F.array_sort(F.collect_list(F.struct("_n", "style_id"))), lambda s: s["style_id"]).alias("styles"))


def style_payloads(products: DataFrame, per_subclass_brand: DataFrame, feed: str, version: str) -> DataFrame:
    """(style_id, feed, line): one payload per product on sale whose subclass-brand has a list;
    `per_subclass_brand` holds `groups` (related) or `styles` (bought_together)."""
    body = "groups" if "groups" in per_subclass_brand.columns else "styles"
    joined = products.select("style_id", "subclass_brand_id").distinct().join(per_subclass_brand, "subclass_brand_id")
    line = F.to_json(F.struct("style_id", F.lit(feed).alias("feed"), F.lit(version).alias("version"), body))
    return joined.where(F.size(body) > 0).select("style_id", F.lit(feed).alias("feed"), line.alias("line"))


def because_groups(views: DataFrame, carousels: DataFrame, min_styles: int, styles: int, anchors: int) -> DataFrame:
    """(member_id, groups): per member, a carousel per recently viewed product (newest first):
    {key: the product viewed, name "Because you viewed <brand> <subclass>", styles}. A product is
    shown once per member (in the newest carousel that shows it) and never in its own carousel;
    carousels left with fewer than `min_styles` products are dropped. `carousels`: round_robin's
    styles per subclass-brand, long enough for every carousel of a member after that; `anchors`:
    the most views a member has (view_rank 1 .. anchors)."""
    candidates = views.join(carousels, "subclass_brand_id").select(
        "member_id", "view_rank", "style_id", "brand", "subclass",
        F.posexplode("styles").alias("position", "product")).where(F.col("product") != F.col("style_id"))
    in_carousel = Window.partitionBy("member_id", "view_rank").orderBy("position")
    parts: list[DataFrame] = []
    for view_rank in range(1, anchors + 1):     # a few carousels: each leaves out what the newer ones show
        these = candidates.where(F.col("view_rank") == view_rank)
        for newer in parts:
            these = these.join(newer.select("member_id", "product"), ["member_id", "product"], "left_anti")
        parts.append(these.withColumn("_n", F.row_number().over(in_carousel)).where(F.col("_n") <= styles))
    kept = functools.reduce(DataFrame.unionByName, parts)
    entry = F.struct(F.col("style_id").alias("key"),
                     F.concat(F.lit("Because you viewed "), F.concat_ws(" ", "brand", "subclass")).alias("name"),
                     F.transform(F.array_sort(F.collect_list(F.struct("_n", "product"))),
                                 lambda p: p["product"]).alias("styles"))
    carousel = kept.groupBy("member_id", "view_rank", "style_id", "brand", "subclass").agg(entry.alias("group"))
    return carousel.where(F.size("group.styles") >= min_styles).groupBy("member_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("view_rank", "group"))), lambda g: g["group"]).alias("groups"))
