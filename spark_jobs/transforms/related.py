"""Related subclass-brands: item-to-item co-occurrence and bought-together rules, and their offline test.

- **Co-occurrence** ("because you viewed X", `/v1/styles/{id}/related`): two subclass-brands
  co-occur when one member interacted with both (her `max_items_per_member` most recent ones).
  Each pair is scored three ways from its 2 x 2 table over members: the raw count, Jaccard, and
  Dunning's log-likelihood ratio, which rewards co-occurrence above what the two items'
  popularity explains (only positive association is kept).
- **Bought together** (`/v1/styles/{id}/bought-together`): FP-Growth over baskets, a basket
  being one member's purchases within one order window.
- **Offline test**, as Wehkamp measured theirs: the mean reciprocal rank (MRR) of what came
  next, for a model fit on the days before a hold-out and cases from the hold-out: the next
  subclass-brand of a browsing session, or the other subclass-brands of a basket. Popularity
  (the most interacted-with subclass-brands) is the baseline a model must beat to be served.

Every function is DataFrame in, DataFrame out (or a figure), on Spark built-ins.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

ITEM = "subclass_brand_id"
# features/dt=D/events: the clean events of the look-back, what every function here reads
EVENT_COLUMNS = ("event_id", "member_id", "style_id", ITEM, "event_type", "occurred_at")
SCORES = ("llr", "count", "jaccard")
POPULARITY = "popularity"


# --- co-occurrence ---------------------------------------------------------------------------

def member_items(events: DataFrame, max_items: int) -> DataFrame:
    """(member_id, item, last_at): each member's distinct subclass-brands, her `max_items` most
    recent only (a heavy browser would otherwise add thousands of pairs of little meaning)."""
    last = events.groupBy("member_id", F.col(ITEM).alias("item")).agg(F.max("occurred_at").alias("last_at"))
    newest_first = Window.partitionBy("member_id").orderBy(F.desc("last_at"), F.asc("item"))
    return last.withColumn("_n", F.row_number().over(newest_first)).where(F.col("_n") <= max_items).drop("_n")


def _x_log_x(column: Column) -> Column:
    return F.when(column > 0, column * F.log(column)).otherwise(F.lit(0.0))


def _entropy(*counts: Column) -> Column:
    """Mahout's unnormalised entropy: xlogx(sum) - sum(xlogx)."""
    total = counts[0]
    for count in counts[1:]:
        total = total + count
    result = _x_log_x(total)
    for count in counts:
        result = result - _x_log_x(count)
    return result


def log_likelihood_ratio(k11: Column, k12: Column, k21: Column, k22: Column) -> Column:
    """Dunning's G^2 of a 2 x 2 table (both, only a, only b, neither), >= 0."""
    k11, k12, k21, k22 = (c.cast("double") for c in (k11, k12, k21, k22))
    rows = _entropy(k11 + k12, k21 + k22)
    columns = _entropy(k11 + k21, k12 + k22)
    matrix = _entropy(k11, k12, k21, k22)
    return F.greatest(F.lit(0.0), F.lit(2.0) * (rows + columns - matrix))


def cooccurrence(items: DataFrame, min_members: int) -> DataFrame:
    """(item, related, both, item_members, related_members, members, llr, count, jaccard), both
    directions of every pair that `min_members` or more members share and that co-occurs more
    often than independence predicts."""
    members = items.select(F.countDistinct("member_id").alias("members"))
    per_item = items.groupBy("item").agg(F.count("*").alias("item_members"))
    pairs = (
        items.alias("a").join(items.alias("b"), "member_id")
        .where(F.col("a.item") < F.col("b.item"))
        .groupBy(F.col("a.item").alias("item"), F.col("b.item").alias("related"))
        .agg(F.count("*").alias("both"))
        .where(F.col("both") >= min_members)
    )
    both_ways = pairs.unionByName(pairs.select(F.col("related").alias("item"), F.col("item").alias("related"), "both"))
    counted = (
        both_ways.join(per_item, "item")
        .join(per_item.select(F.col("item").alias("related"), F.col("item_members").alias("related_members")),
              "related")
        .crossJoin(F.broadcast(members))
    )
    k11 = F.col("both")
    k12 = F.col("item_members") - k11
    k21 = F.col("related_members") - k11
    k22 = F.col("members") - F.col("item_members") - F.col("related_members") + k11
    positive = k11 * F.col("members") > F.col("item_members") * F.col("related_members")
    return counted.where(positive).select(
        "item", "related", "both", "item_members", "related_members", "members",
        log_likelihood_ratio(k11, k12, k21, k22).alias("llr"),
        k11.cast("double").alias("count"),
        (k11 / (F.col("item_members") + F.col("related_members") - k11)).alias("jaccard"),
    )


def top_related(scored: DataFrame, score: str, per_item: int) -> DataFrame:
    """(item, related, score, rank): each item's `per_item` best related items by `score`."""
    order = Window.partitionBy("item").orderBy(F.desc("score"), F.asc("related"))
    return (
        scored.select("item", "related", F.col(score).alias("score"))
        .withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= per_item)
    )


# --- bought together -------------------------------------------------------------------------

def baskets(purchases: DataFrame, window_minutes: int) -> DataFrame:
    """(basket_id, member_id, first_at, items): a member's purchases, a new basket starting when
    more than `window_minutes` passed since her previous purchase; `items` are the basket's
    distinct subclass-brands, first bought first."""
    by_member = Window.partitionBy("member_id").orderBy("occurred_at", "event_id")
    gap = F.col("occurred_at").cast("long") - F.lag(F.col("occurred_at").cast("long")).over(by_member)
    starts = purchases.withColumn("_new", F.when(gap.isNull() | (gap > window_minutes * 60), 1).otherwise(0))
    numbered = starts.withColumn("_basket", F.sum("_new").over(by_member.rowsBetween(Window.unboundedPreceding, 0)))
    firsts = numbered.groupBy("member_id", "_basket", F.col(ITEM).alias("item")).agg(
        F.min(F.struct("occurred_at", "event_id")).alias("_first"))
    ordered = F.array_sort(F.collect_list(F.struct("_first", "item")))
    return firsts.groupBy("member_id", "_basket").agg(
        F.min("_first.occurred_at").alias("first_at"),
        F.transform(ordered, lambda x: x["item"]).alias("items"),
    ).select(F.concat_ws("#", "member_id", "_basket").alias("basket_id"), "member_id", "first_at", "items")


def association_rules(rules: DataFrame, per_item: int) -> DataFrame:
    """(item, related, confidence, lift, support, rank) from FP-Growth's rules with one item on
    each side: what a product page can show; each item's `per_item` best by confidence, lift."""
    single = rules.where((F.size("antecedent") == 1) & (F.size("consequent") == 1)).select(
        F.col("antecedent")[0].alias("item"), F.col("consequent")[0].alias("related"),
        "confidence", "lift", "support")
    order = Window.partitionBy("item").orderBy(F.desc("confidence"), F.desc("lift"), F.asc("related"))
    return single.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= per_item)


# --- offline test: mean reciprocal rank ------------------------------------------------------

def sessions(events: DataFrame, gap_minutes: int) -> DataFrame:
    """(member_id, session, item, occurred_at, event_id): events numbered by browsing session,
    a new session starting after `gap_minutes` without an event."""
    by_member = Window.partitionBy("member_id").orderBy("occurred_at", "event_id")
    gap = F.col("occurred_at").cast("long") - F.lag(F.col("occurred_at").cast("long")).over(by_member)
    starts = events.withColumn("_new", F.when(gap.isNull() | (gap > gap_minutes * 60), 1).otherwise(0))
    return starts.select(
        "member_id", F.col(ITEM).alias("item"), "occurred_at", "event_id",
        F.sum("_new").over(by_member.rowsBetween(Window.unboundedPreceding, 0)).alias("session"))


def next_item_cases(numbered: DataFrame) -> DataFrame:
    """(case_id, anchor, target): per session, its first subclass-brand and the next different one."""
    firsts = numbered.groupBy("member_id", "session", "item").agg(
        F.min(F.struct("occurred_at", "event_id")).alias("_at"))
    order = Window.partitionBy("member_id", "session").orderBy("_at", "item")
    ranked = firsts.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= 2)
    return ranked.groupBy("member_id", "session").agg(
        F.max(F.when(F.col("_n") == 1, F.col("item"))).alias("anchor"),
        F.max(F.when(F.col("_n") == 2, F.col("item"))).alias("target"),
    ).where(F.col("target").isNotNull()).select(
        F.concat_ws("#", "member_id", "session").alias("case_id"), "anchor", "target")


def basket_cases(basket_items: DataFrame) -> DataFrame:
    """(case_id, anchor, target): per basket of two or more subclass-brands, the first bought and
    each of the others (a hit is any of them)."""
    return basket_items.where(F.size("items") >= 2).select(
        F.col("basket_id").alias("case_id"), F.col("items")[0].alias("anchor"),
        F.explode(F.slice("items", 2, 1_000_000)).alias("target"))


def mean_reciprocal_ranks(cases: DataFrame, lists: DataFrame, models: list[str]) -> dict[str, float]:
    """Per model, the mean over cases of 1 / rank of the best-ranked target in the anchor's list
    (lists: model, item, related, rank); 0 for a case whose targets are not in it. One pass for
    every model; 0.0 without cases."""
    total = cases.select("case_id").distinct().count()
    hits = cases.join(lists.select("model", F.col("item").alias("anchor"), F.col("related").alias("target"), "rank"),
                      ["anchor", "target"])
    per_case = hits.groupBy("model", "case_id").agg(F.max(1.0 / F.col("rank")).alias("rr"))
    sums = {r["model"]: float(r["rr"]) for r in per_case.groupBy("model").agg(F.sum("rr").alias("rr")).collect()}
    return {model: (sums.get(model, 0.0) / total if total else 0.0) for model in models}


def popularity_ranks(events: DataFrame) -> DataFrame:
    """(item, popularity_rank): subclass-brands by members who interacted with them, 1 = most."""
    counts = events.groupBy(F.col(ITEM).alias("item")).agg(F.countDistinct("member_id").alias("_members"))
    return counts.withColumn("popularity_rank", F.row_number().over(
        Window.orderBy(F.desc("_members"), F.asc("item"))))


def with_popular(lists: DataFrame, items: DataFrame, ranks: DataFrame, per_item: int,
                 models: list[str]) -> DataFrame:
    """(model, item, related, score, rank, from_model): for each of `models`, every item of
    `items` gets the model's list (lists: model, item, related, score, rank) and, after it, the
    most popular subclass-brands it lacks, up to `per_item` (score null): a short list or an item
    the model does not know still fills a carousel. A model without lists is popularity alone."""
    top = ranks.where(F.col("popularity_rank") <= per_item + 1).select(
        F.col("item").alias("related"), (F.lit(per_item) + F.col("popularity_rank")).alias("_order"))
    fill = (items.select("item").distinct()
            .crossJoin(F.broadcast(top)).where(F.col("item") != F.col("related"))
            .select(F.explode(F.array(*[F.lit(m) for m in models])).alias("model"), "item", "related",
                    F.lit(None).cast("double").alias("score"), "_order"))
    own = lists.select("model", "item", "related", F.col("score").cast("double"), F.col("rank").alias("_order"))
    best = own.unionByName(fill).groupBy("model", "item", "related").agg(
        F.min(F.struct("_order", "score")).alias("_b"))
    order = Window.partitionBy("model", "item").orderBy(F.col("_b._order"), F.asc("related"))
    return (
        best.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= per_item)
        .select("model", "item", "related", F.col("_b.score").alias("score"), "rank",
                (F.col("_b._order") <= per_item).alias("from_model"))
    )


# --- a member's recent views: the anchors of her "because you viewed" carousels --------------

def recent_views(events: DataFrame, since, event_types: list[str], per_member: int) -> DataFrame:
    """(member_id, style_id, subclass_brand_id, viewed_at, view_rank): each member's `per_member`
    most recently viewed subclass-brands (through `event_types`, since `since`), each with the
    product of it she viewed last; 1 = newest. One per subclass-brand, as their carousels would
    be the same."""
    viewed = events.where((F.col("occurred_at") >= F.lit(since)) & F.col("event_type").isin(*event_types))
    last = viewed.groupBy("member_id", ITEM).agg(F.max(F.struct("occurred_at", "style_id")).alias("_last")).select(
        "member_id", F.col("_last.style_id").alias("style_id"), ITEM, F.col("_last.occurred_at").alias("viewed_at"))
    newest_first = Window.partitionBy("member_id").orderBy(F.desc("viewed_at"), F.asc(ITEM))
    return last.withColumn("view_rank", F.row_number().over(newest_first)).where(F.col("view_rank") <= per_member)
