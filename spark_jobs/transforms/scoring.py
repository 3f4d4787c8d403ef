"""Product scoring for cold start: which products of a subclass-brand to show.

Up to 40 % of the products on sale have never been seen, so products are ranked inside their
subclass-brand by a linear score over age, interaction and newness features (weights in the
config's `scoring.weights`), after culling low inventory.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

SECONDS_PER_DAY = 86400.0
EARLY_DAYS = 3  # "first 72 hours of this product's launch"
PURCHASE_VS_CLICK = 5.0  # one purchase counts like this many clicks in early popularity


def style_activity(events: DataFrame, returns: DataFrame, since: datetime, recent_since: datetime) -> DataFrame:
    """Per style: clicks, carts, purchases, returns and cancels since `since`, and the clicks and
    purchases since `recent_since` (early popularity of a product still in its first days)."""
    window = events.where(F.col("occurred_at") >= F.lit(since))
    is_recent = F.col("occurred_at") >= F.lit(recent_since)

    def count_if(cond):
        return F.sum(F.when(cond, 1).otherwise(0))

    by_style = window.groupBy("style_id").agg(
        count_if(F.col("event_type") == "pdp_view").alias("clicks"),
        count_if(F.col("event_type") == "add_to_cart").alias("carts"),
        count_if(F.col("event_type") == "purchase").alias("purchases"),
        count_if((F.col("event_type") == "pdp_view") & is_recent).alias("recent_clicks"),
        count_if((F.col("event_type") == "purchase") & is_recent).alias("recent_purchases"),
    )
    returned = (
        returns.where(F.col("occurred_at") >= F.lit(since)).groupBy("style_id")
        .agg(F.count("*").alias("returns_and_cancels"))
    )
    return by_style.join(returned, "style_id", "full").fillna(0)


def live_products(calendar: DataFrame, starts_at: datetime, ends_at: datetime) -> DataFrame:
    """Products on sale at any time in [starts_at, ends_at): one row per style (its earliest
    live sale), with `qty_on_hand` of that sale."""
    live = calendar.where((F.col("starts_at") < F.lit(ends_at)) & (F.col("ends_at") > F.lit(starts_at)))
    first = Window.partitionBy("style_id").orderBy("starts_at", "sale_id")
    return live.withColumn("_n", F.row_number().over(first)).where("_n = 1").drop("_n")


def product_features(
    live: DataFrame,
    calendar: DataFrame,
    catalog_keyed: DataFrame,
    activity: DataFrame,
    window_start: datetime,
    persistence_days: int,
) -> DataFrame:
    """Age, interaction and newness features of every live product (see the module docstring)."""
    earlier_sales = (
        calendar.alias("h")
        .join(live.select("style_id", F.col("starts_at").alias("current_start")), "style_id")
        .where(F.col("h.starts_at") < F.col("current_start"))
        .groupBy("style_id")
        .agg(F.countDistinct("sale_id").alias("times_sold_before"))
    )
    since = window_start - timedelta(days=persistence_days)
    sale_days = (
        calendar.where((F.col("starts_at") >= F.lit(since)) & (F.col("starts_at") < F.lit(window_start)))
        .join(catalog_keyed.select("style_id", "subclass_brand_id"), "style_id")
        .groupBy("subclass_brand_id")
        .agg((F.countDistinct(F.to_date("starts_at")) / F.lit(float(persistence_days))).alias("brand_persistence"))
    )
    # How well the subclass-brand sells, over all its styles (not only the live ones): this is
    # what lets a never-seen style of a brand that sells well in its subclass rank high.
    subclass_brand_sales = (
        activity.join(catalog_keyed.select("style_id", "subclass_brand_id"), "style_id")
        .groupBy("subclass_brand_id")
        .agg(F.sum("purchases").alias("subclass_brand_purchases"))
    )
    products = (
        live.join(catalog_keyed, "style_id")
        .join(earlier_sales, "style_id", "left")
        .join(activity, "style_id", "left")
        .join(sale_days, "subclass_brand_id", "left")
        .join(subclass_brand_sales, "subclass_brand_id", "left")
        .fillna(0, subset=["times_sold_before", "clicks", "carts", "purchases", "recent_clicks",
                           "recent_purchases", "returns_and_cancels", "brand_persistence",
                           "subclass_brand_purchases"])
    )
    days_on_site = F.greatest(
        F.lit(0.0), (F.lit(window_start).cast("long") - F.col("starts_at").cast("long")) / F.lit(SECONDS_PER_DAY)
    )
    by_subclass_brand = Window.partitionBy("subclass_brand_id")
    return (
        products.withColumn("days_on_site", days_on_site)
        .withColumn("is_new", (F.col("times_sold_before") == 0) & (F.col("clicks") == 0))
        .withColumn("first_day", (F.col("days_on_site") < 1).cast("double"))
        .withColumn("first_72h", (F.col("days_on_site") < EARLY_DAYS).cast("double"))
        .withColumn(
            "early_popularity",
            F.col("first_72h") * F.log1p(F.col("recent_clicks") + PURCHASE_VS_CLICK * F.col("recent_purchases")),
        )
        .withColumn("click_to_purchase",
                    F.when(F.col("clicks") > 0, F.col("purchases") / F.col("clicks")).otherwise(0.0))
        .withColumn(
            "return_rate",
            F.when(F.col("purchases") > 0,
                   F.least(F.lit(1.0), F.col("returns_and_cancels") / F.col("purchases"))).otherwise(0.0),
        )
        .withColumn("new_share", F.avg(F.col("is_new").cast("double")).over(by_subclass_brand))
    )


def product_scores(features: DataFrame, weights: dict[str, float]) -> DataFrame:
    """Linear score; counts enter as log1p so that one best-seller does not dominate."""
    terms = {
        "times_sold_before": F.log1p("times_sold_before"),
        "days_on_site": F.col("days_on_site") / F.lit(float(EARLY_DAYS)),
        "brand_persistence": F.col("brand_persistence"),
        "clicks": F.log1p("clicks"),
        "purchases": F.log1p("purchases"),
        "click_to_purchase": F.col("click_to_purchase"),
        "returns_and_cancels": F.col("return_rate"),
        "first_day": F.col("first_day"),
        "first_72h": F.col("first_72h"),
        "early_popularity": F.col("early_popularity"),
        "new_share": F.col("new_share") * F.col("is_new").cast("double"),
        "subclass_brand_conversion": F.log1p("subclass_brand_purchases"),
    }
    unknown = set(weights) - set(terms)
    if unknown:
        raise ValueError(f"scoring.weights has unknown features {sorted(unknown)}; known: {sorted(terms)}")
    score = sum((F.lit(weights.get(name, 0.0)) * expr for name, expr in terms.items()), F.lit(0.0))
    return features.withColumn("score", F.round(score, 6))


def top_products(spark: SparkSession, scored: DataFrame, sql: str, limit: int) -> DataFrame:
    return spark.sql(sql, products=scored, limit=int(limit))
