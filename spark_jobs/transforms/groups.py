"""Member groups: primary division x spend bucket; one ALS model is trained per group.

Rules (also in the README):
- primary division: the division (by its key, flashfeed.core.divisions) with the largest implicit
  rating sum (ties: alphabetical);
- price level: the configured percentile (default 90th) of the member's purchase prices, so a
  single once-in-a-decade purchase does not define the member; members without purchases
  take the same percentile of the prices they viewed or carted; members without any price
  get the middle bucket;
- spend bucket: quantiles (default quintiles) of price level over all members, 1 = cheapest;
- group key: division code followed by the bucket, e.g. "13" = women, bucket 3;
- a group smaller than the minimum merges into its neighbouring bucket of the same division
  (towards the middle bucket) until it is large enough; a division too small for even one
  group joins the largest group overall;
- members first seen after the model ran are not in any group: they get the fallback payload.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from flashfeed.core.divisions import division_key


def _key_or_none(name: str | None) -> str | None:
    try:
        return division_key(name) if name is not None else None
    except ValueError:          # no letter or digit: no division
        return None


def division_codes(configured: dict[str, int], divisions_in_data: list[str]) -> dict[str, int]:
    """{division key: code}: configured codes first (config keys are division keys); divisions the
    config does not know get the next codes, in key order. Names are keyed
    (flashfeed.core.divisions), so "Women" and `women` are one division."""
    codes = {division_key(k): int(v) for k, v in configured.items()}
    next_code = max(codes.values(), default=0) + 1
    for division in sorted({_key_or_none(d) for d in divisions_in_data} - set(codes) - {None}):
        codes[division] = next_code
        next_code += 1
    return codes


def group_key(division_code: int, bucket: int) -> str:
    return f"{division_code}{bucket}"


def member_profiles(
    ratings_by_division: DataFrame, priced_events: DataFrame, percentile: float, buckets: int
) -> DataFrame:
    """(member_id, division, price_level, spend_bucket).

    `ratings_by_division`: member_id, division, rating (any granularity, summed here).
    `priced_events`: member_id, event_type, price (clean events with a price).
    """
    by_division = ratings_by_division.groupBy("member_id", "division").agg(F.sum("rating").alias("rating"))
    best = Window.partitionBy("member_id").orderBy(F.desc("rating"), F.asc("division"))
    primary = (
        by_division.withColumn("_rank", F.row_number().over(best)).where("_rank = 1").select("member_id", "division")
    )
    priced = priced_events.where(F.col("price").isNotNull() & (F.col("price") > 0))
    # Both levels in one pass over the events (percentile skips the nulls of non-purchases).
    levels = priced.groupBy("member_id").agg(
        F.percentile(F.when(F.col("event_type") == "purchase", F.col("price")), percentile).alias("purchase_level"),
        F.percentile("price", percentile).alias("browse_level"),
    )
    profiles = (
        primary.join(levels, "member_id", "left")
        .withColumn("price_level", F.coalesce("purchase_level", "browse_level"))
    )
    # Quantiles over members who have a price level; ties broken by member_id so reruns agree.
    quantile = Window.orderBy(F.col("price_level"), F.col("member_id"))
    ranked = profiles.where(F.col("price_level").isNotNull()).withColumn("spend_bucket",
                                                                          F.ntile(buckets).over(quantile))
    middle = (buckets + 1) // 2
    unpriced = profiles.where(F.col("price_level").isNull()).withColumn("spend_bucket", F.lit(middle))
    return ranked.unionByName(unpriced).select("member_id", "division", "price_level", "spend_bucket")


def merge_small_groups(counts: dict[tuple[int, int], int], min_members: int,
                       buckets: int) -> dict[tuple[int, int], tuple[int, int]]:
    """Map every (division_code, bucket) to the group its members are trained in.

    Within a division, the smallest group under the minimum merges into its remaining
    neighbour nearer the middle bucket (the middle bucket itself into its smaller neighbour),
    repeated until every group is large enough or one group is left. A division whose single
    group is still too small joins the largest group overall.
    """
    middle = (buckets + 1) / 2
    target = {g: g for g in counts}
    merged_counts: dict[tuple[int, int], int] = {}
    for code in sorted({c for c, _ in counts}):
        live = {b: n for (c, b), n in counts.items() if c == code}
        while len(live) > 1:
            small = sorted((n, b) for b, n in live.items() if n < min_members)
            if not small:
                break
            _, bucket = small[0]
            others = sorted(live)
            pos = others.index(bucket)
            neighbours = [others[i] for i in (pos - 1, pos + 1) if 0 <= i < len(others)]
            if len(neighbours) == 2 and bucket != middle:
                into = min(neighbours, key=lambda b: abs(b - middle))
            else:
                into = min(neighbours, key=lambda b: (live[b], b))
            live[into] += live.pop(bucket)
            for g, t in target.items():
                if t == (code, bucket):
                    target[g] = (code, into)
        merged_counts.update({(code, b): n for b, n in live.items()})
    largest = max(merged_counts, key=lambda g: (merged_counts[g], -g[0], -g[1]))
    for g, n in list(merged_counts.items()):
        division_groups = [x for x in merged_counts if x[0] == g[0]]
        if n < min_members and len(division_groups) == 1 and g != largest:
            for source, t in target.items():
                if t == g:
                    target[source] = largest
    return target


def assign_groups(profiles: DataFrame, codes: dict[str, int], min_members: int, buckets: int) -> tuple[DataFrame, dict]:
    """Add `group` to member profiles; returns (members, {"merged": {...}, "sizes": {...}})."""
    code_map = F.create_map(*[x for k, v in codes.items() for x in (F.lit(k), F.lit(v))])
    coded = profiles.withColumn("division_code", code_map[F.col("division")])
    counts = {
        (int(r["division_code"]), int(r["spend_bucket"])): int(r["count"])
        for r in coded.groupBy("division_code", "spend_bucket").count().collect()
    }
    target = merge_small_groups(counts, min_members, buckets)
    rows = [(c, b, group_key(*t)) for (c, b), t in target.items()]
    mapping = profiles.sparkSession.createDataFrame(rows, "division_code int, spend_bucket int, group string")
    members = coded.join(F.broadcast(mapping), ["division_code", "spend_bucket"]).drop("division_code")
    merged = {group_key(*g): group_key(*t) for g, t in sorted(target.items()) if g != t}
    sizes: dict[str, int] = {}
    for g, n in counts.items():
        key = group_key(*target[g])
        sizes[key] = sizes.get(key, 0) + n
    return members, {"merged": merged, "sizes": dict(sorted(sizes.items()))}


def member_groups(rated: DataFrame, events: DataFrame, names: DataFrame, feats: dict) -> tuple[DataFrame, dict, dict]:
    """(members: member_id, division, price_level, spend_bucket, group, member_sk; grouping
    {merged, sizes}; division codes) from implicit ratings, the clean events they came from and
    the subclass-brand names (for divisions: keys, `catalog.with_subclass_brand`). `feats`:
    config section `features`."""
    by_division = rated.join(names.select("subclass_brand_id", "division"), "subclass_brand_id")
    # Cached: assign_groups counts the profiles, then joins them (two passes over one result).
    profiles = member_profiles(
        by_division, events.select("member_id", "event_type", "price"),
        feats["spend_percentile"], feats["spend_buckets"],
    ).persist()
    divisions = [r["division"] for r in names.select("division").distinct().collect() if r["division"]]
    codes = division_codes(feats["division_codes"], divisions)
    members, grouping = assign_groups(profiles, codes, feats["min_group_members"], feats["spend_buckets"])
    return with_member_sk(members), grouping, codes


def with_member_sk(members: DataFrame) -> DataFrame:
    """ALS needs integer user ids: number members by id (stable within one run's features)."""
    return members.withColumn("member_sk", F.row_number().over(Window.orderBy("member_id")).cast("int"))


def recent_interest(events: DataFrame, style_keys: DataFrame, since, top_n: int) -> DataFrame:
    """Each member's top subclasses browsed or carted but not bought since `since`.

    (member_id, subclass_key, interest, interest_rank); interest = number of such events.
    """
    recent = events.where(F.col("occurred_at") >= F.lit(since)).join(
        style_keys.select("style_id", "subclass_key"), "style_id"
    )
    bought = recent.where(F.col("event_type") == "purchase").select("member_id", "subclass_key").distinct()
    browsed = (
        recent.where(F.col("event_type").isin("pdp_view", "add_to_cart"))
        .join(bought, ["member_id", "subclass_key"], "left_anti")
        .groupBy("member_id", "subclass_key")
        .agg(F.count("*").alias("interest"))
    )
    order = Window.partitionBy("member_id").orderBy(F.desc("interest"), F.asc("subclass_key"))
    return browsed.withColumn("interest_rank", F.row_number().over(order)).where(F.col("interest_rank") <= top_n)
