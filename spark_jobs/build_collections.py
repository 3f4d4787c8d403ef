"""Build every member's collections for one launch, fallback payloads and per-product feeds, as JSON lines.

Reads   affinity/dt=D (groups listed in groups.json), products/dt=D/launch=HHMM,
        features/dt=D/{recent_interest, recent_views}, related/dt=D (spark_jobs/related.py)
Writes  feeds/dt=D/launch=HHMM/{<feed>_<variant>/part-*.json (the six collections and because_card),
        fallback/part-*.json, related/part-*.json, bought_together/part-*.json (one payload per
        product on sale), manifest.json}
Re-run  `spark-submit spark_jobs/build_collections.py --dt D --launch HHMM` replaces that slot only.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from datetime import date

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from flashfeed.core import calendar, experiments, lake
from spark_jobs.common import (
    JobError,
    LakeFS,
    features_next_step,
    get_logger,
    parse_job_args,
    read_sql,
    run_job,
    spark_session,
    staged_partition,
    timed,
)
from spark_jobs.transforms import affinity as affinity_t
from spark_jobs.transforms import collections as collections_t
from spark_jobs.transforms import related_feeds

log = get_logger("build_collections")
DYNAMODB_ITEM_LIMIT_BYTES = 400 * 1024
KEY_OVERHEAD_BYTES = 200  # member_id, feed and attribute names also count towards an item's size
SIZE_PERCENTILES = (0.5, 0.95, 0.99)


def payload_lines(payload_rows: DataFrame, variant: str, cfg: dict) -> DataFrame:
    """(member_id, feed, variant, line, bytes, truncated_groups, full): the exact JSON line
    served; `full` when the payload is as large as configured (a card of `card_groups` groups, a
    full list of `products_per_member` products)."""
    fields = ["member_id", "feed", "variant", "version", "groups"]
    line = F.to_json(F.struct(*fields, *(["experiment"] if "experiment" in payload_rows.columns else [])))
    if variant == "card":
        full = F.size("groups") >= cfg["card_groups"]
    else:
        full = F.aggregate(F.transform("groups", lambda g: F.size(g["styles"])), F.lit(0),
                           lambda a, n: a + n) >= cfg["products_per_member"]
    return payload_rows.select("member_id", "feed", "variant", line.alias("line"), "truncated_groups",
                               full.alias("full")).withColumn("bytes", F.octet_length("line"))


def item_limit_problem(largest: dict) -> str | None:
    """Why the launch's largest payload (after truncation to collections.max_payload_bytes) cannot
    be a DynamoDB item, or None: with its keys it must fit in 400 KB."""
    if largest["bytes"] + KEY_OVERHEAD_BYTES <= DYNAMODB_ITEM_LIMIT_BYTES:
        return None
    return (f"payload of member {largest['member_id']} feed {largest['feed']}#{largest['variant']} is "
            f"{largest['bytes']:,} bytes after truncation; with its keys (about {KEY_OVERHEAD_BYTES} bytes) that "
            f"is over DynamoDB's item limit of {DYNAMODB_ITEM_LIMIT_BYTES:,} bytes")


def ranked_affinities(spark, member_affinity: DataFrame, interest: DataFrame, fallback: DataFrame | None,
                      variety_sql: str, cfg: dict) -> DataFrame:
    """Each member's (and fallback's) affinities to subclass-brands on sale after the boost, the
    variety limit and the per-member cap: what her collections are built from."""
    boosted = affinity_t.apply_boost(member_affinity, interest, cfg["boost"]).select(
        "member_id", "subclass_brand_id", "subclass_key", "class_key", "affinity", "boost"
    )
    if fallback is not None:
        boosted = boosted.unionByName(fallback)
    # One shuffle by member: the variety limit, the cap and every feed's grouping below are all
    # per member, so they run inside these partitions.
    by_member = boosted.repartition(int(spark.conf.get("spark.sql.shuffle.partitions")), "member_id")
    limited = affinity_t.variety_limit(spark, by_member, variety_sql, cfg["max_subclass_brands_per_class"])
    per_member = Window.partitionBy("member_id").orderBy(F.desc("affinity"), F.asc("subclass_brand_id"))
    return (
        limited.withColumn("_n", F.row_number().over(per_member))
        .where(F.col("_n") <= cfg["subclass_brands_per_member"])
        .drop("_n")
    )


def launch_frames(products: DataFrame, affinity: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(names of the subclass-brands on sale, the members' affinities to them with their class and
    subclass, each subclass-brand's products in score order): what every payload is built from."""
    names = products.select("subclass_brand_id", "brand", "subclass", "subclass_key", "class_key").distinct()
    member_affinity = affinity.join(F.broadcast(names.select("subclass_brand_id", "subclass_key", "class_key")),
                                    "subclass_brand_id")
    return names, member_affinity, F.broadcast(collections_t.styles_by_subclass_brand(products))


def member_lines(spark, member_affinity: DataFrame, interest: DataFrame, fallback: DataFrame | None,
                 views: DataFrame, sb_styles: DataFrame, names: DataFrame, related: DataFrame, config: dict,
                 version: str, experiment: experiments.Experiment | None) -> DataFrame:
    """Every payload line of these members (and fallbacks): the six collections, each variant's
    six of `experiment` for its members, and `because`. The launch and the freshness refresh
    share it."""
    cfg, because = config["collections"], config["because"]
    variety_sql = read_sql("variety_limit.sql")
    ranked = ranked_affinities(spark, member_affinity, interest, fallback, variety_sql, cfg).persist()
    parts = [data_set_lines(ranked, sb_styles, names, cfg, version)]
    for variant in experiment.treatments if experiment else ():   # its members, its settings
        variant_cfg = {**cfg, **variant.collections}
        members = member_affinity.where(experiments.variant_column(F.col("member_id"), experiment) == variant.name)
        variant_ranked = ranked_affinities(spark, members, interest, None, variety_sql, variant_cfg).persist()
        parts.append(data_set_lines(variant_ranked, sb_styles, names, variant_cfg, version, variant.name))
    # long enough for every carousel of a member once the products shown before are left out
    carousels = related_feeds.round_robin(related, sb_styles,
                                          because["styles_per_carousel"] * because["carousels"] + 1)
    fallback_members = (fallback.select("member_id").distinct() if fallback is not None
                        else spark.createDataFrame([], "member_id string"))
    parts.append(because_lines(views, F.broadcast(carousels), fallback_members, cfg, because, version))
    return functools.reduce(DataFrame.unionByName, parts)


def data_set_lines(ranked: DataFrame, sb_styles: DataFrame, names: DataFrame, cfg: dict, version: str,
                   experiment_variant: str | None = None) -> DataFrame:
    """Every payload line of the launch with its `data_set`: `<feed>_<variant>` for members,
    `fallback` for the fallback 'members' (all six of theirs); with `experiment_variant`, the
    variant's members' payloads (which name it) in `<feed>_<variant>.<experiment variant>`."""
    parts = []
    for feed in lake.FEEDS:
        units = collections_t.feed_units(ranked, sb_styles, names, feed)
        for variant in lake.VARIANTS:
            groups = collections_t.attach_styles(collections_t.limit_groups(units, variant, cfg), sb_styles)
            rows = collections_t.payloads(groups, feed, variant, version, cfg["max_payload_bytes"])
            if experiment_variant is not None:
                rows = rows.withColumn("experiment", F.lit(experiment_variant))
            parts.append(with_data_set(payload_lines(rows, variant, cfg),
                                       lake.feed_folder(feed, variant, experiment_variant)))
    return functools.reduce(DataFrame.unionByName, parts)


def because_lines(views: DataFrame, carousels: DataFrame, fallback_members: DataFrame, cfg: dict,
                  because: dict, version: str) -> DataFrame:
    """The `because` card of every member with a recently viewed product whose related
    subclass-brands are on sale, and an empty one for every fallback 'member' (a member the
    model does not know has viewed nothing it knows of)."""
    groups = related_feeds.because_groups(views, carousels, cfg["min_saleable_products"],
                                          because["styles_per_carousel"], because["carousels"])
    empty = fallback_members.select("member_id", F.array().cast(groups.schema["groups"].dataType).alias("groups"))
    rows = groups.unionByName(empty).select(
        "member_id", F.lit(lake.BECAUSE).alias("feed"), F.lit("card").alias("variant"),
        F.lit(version).alias("version"), "groups", F.lit(0).alias("truncated_groups"))
    lines = payload_lines(rows, "card", {**cfg, "card_groups": because["carousels"]})
    return with_data_set(lines, lake.feed_folder(lake.BECAUSE, "card"))


def with_data_set(lines: DataFrame, data_set: str) -> DataFrame:
    """`data_set`: the given one for members, `fallback` for the fallback 'members'."""
    is_fallback = F.col("member_id").startswith(lake.FALLBACK_MEMBER_PREFIX)
    return lines.withColumn("data_set", F.when(is_fallback, F.lit(lake.FALLBACK_DATA_SET)).otherwise(F.lit(data_set)))


def product_lines(products: DataFrame, lists: dict[str, DataFrame], sb_styles: DataFrame, names: DataFrame,
                  settings: dict, version: str) -> DataFrame:
    """The `related` and `bought_together` payload of every product on sale, keyed in the table
    by `__style__#<style_id>` (in the member_id column, as the table's hash key)."""
    per_subclass_brand = {
        lake.RELATED: related_feeds.related_groups(lists[lake.RELATED], sb_styles, names,
                                                   settings["groups_per_style"],
                                                   settings["styles_per_group"]),
        lake.BOUGHT_TOGETHER: related_feeds.round_robin(lists[lake.BOUGHT_TOGETHER], sb_styles,
                                                        settings["bought_together_styles"]),
    }
    parts = [related_feeds.style_payloads(products, frame, feed, version).select(
        F.concat(F.lit(lake.STYLE_KEY_PREFIX), "style_id").alias("member_id"), "feed",
        F.lit("").alias("variant"), "line", F.lit(0).alias("truncated_groups"), F.lit(True).alias("full"),
        F.lit(feed).alias("data_set")) for feed, frame in per_subclass_brand.items()]
    return functools.reduce(DataFrame.unionByName, parts).withColumn("bytes", F.octet_length("line"))


def related_summary(metrics: dict) -> dict:
    """The related job's figures a reader of the manifest needs: what is served and how it tested,
    rule counts, support, confidence and lift."""
    cooccurrence, bought = metrics["cooccurrence"], metrics["bought_together"]
    return {
        lake.RELATED: {k: cooccurrence[k] for k in ("served", "pairs", "test")},
        lake.BOUGHT_TOGETHER: {k: bought[k] for k in ("served", "baskets", "rules", "one_to_one_rules", "support",
                                                      "confidence", "lift", "test") if k in bought},
    }


def size_stats(lines: DataFrame) -> dict[str, dict]:
    """Per data set: payloads, size percentiles, the largest payload, truncated payloads and the
    share of payloads as large as configured (one pass)."""
    stats = {}
    for row in lines.groupBy("data_set").agg(
        F.count("*").alias("payloads"),
        F.percentile_approx("bytes", list(SIZE_PERCENTILES)).alias("p"),
        F.max_by(F.struct("member_id", "feed", "variant", "bytes"), "bytes").alias("largest"),
        F.sum(F.when(F.col("truncated_groups") > 0, 1).otherwise(0)).alias("truncated_payloads"),
        F.avg(F.col("full").cast("double")).alias("full_share"),
    ).collect():
        largest = row["largest"].asDict()
        stats[row["data_set"]] = {
            "payloads": int(row["payloads"]), "largest": largest,
            "truncated_payloads": int(row["truncated_payloads"] or 0), "full_share": round(float(row["full_share"]), 4),
            "payload_bytes": {**{f"p{int(q * 100)}": int(v) for q, v in zip(SIZE_PERCENTILES, row["p"], strict=True)},
                              "max": int(largest["bytes"])},
        }
    return stats


def write_lines(fs: LakeFS, lines: DataFrame, staging: str, files_per_data_set: int) -> dict[str, list[dict]]:
    """Write every data set's JSON lines in one job into `<staging>/<data_set>/part-*.json`,
    hash-partitioned and sorted by member (byte-identical on re-runs); returns each data set's
    files with bytes, sha256 and payload count."""
    (
        lines.repartition(files_per_data_set, "member_id")
        .sortWithinPartitions("data_set", "member_id", "feed", "variant")
        .select("data_set", "line")
        .write.mode("overwrite").partitionBy("data_set").text(staging)
    )
    described: dict[str, list[dict]] = {}
    for folder in fs.list_dirs(staging):
        if not folder.startswith("data_set="):
            continue
        data_set = folder[len("data_set="):]
        fs.rename(f"{staging}/{folder}", f"{staging}/{data_set}")
        for uri in fs.list_files(f"{staging}/{data_set}"):
            name = uri.rsplit("/", 1)[1]
            if not name.startswith("part-"):
                continue
            target = uri[: -len(".txt")] + ".json" if uri.endswith(".txt") else uri
            if target != uri:
                fs.rename(uri, target)
            size, sha, count = fs.file_digest(target)
            described.setdefault(data_set, []).append(
                {"path": f"{data_set}/{target.rsplit('/', 1)[1]}", "bytes": size, "sha256": sha, "payloads": count})
    return described


def affinity_summary(fs: LakeFS, dt: date, groups: list[str], root: str) -> str:
    """Members, rows and model-or-fallback per group, from the metrics.json each group's
    training wrote next to its affinities: no Spark action over the affinities."""
    members, rows, fell_back, unknown = 0, 0, [], []
    for group in groups:
        metrics_uri = f"{lake.models(dt, group, root)}/metrics.json"
        if not fs.exists(metrics_uri):
            unknown.append(group)
            continue
        metrics = fs.read_json(metrics_uri)
        members += int(metrics.get("members_scored", 0))
        rows += int(metrics.get("affinity_rows", 0))
        if metrics.get("served_from") != "model":     # train_group.SERVED_FROM_MODEL
            fell_back.append(f"{group} ({metrics.get('served_from')})")
    return (f"{members} members, {rows} affinity rows; {len(groups) - len(fell_back) - len(unknown)} of "
            f"{len(groups)} groups served from their own model, fallback: {', '.join(fell_back) or 'none'}"
            + (f"; no metrics.json for {unknown}" if unknown else ""))


def short_data_sets(stats: dict[str, dict], data_sets: list[str], target: float) -> dict[str, float]:
    """The collections whose share of payloads as large as configured is below `target` (a data
    set without payloads counts as full)."""
    return {d: stats[d]["full_share"] for d in data_sets if stats.get(d, {}).get("full_share", 1.0) < target}


def files_per_data_set(members: int, payloads_per_file: int) -> int:
    return max(1, math.ceil(members / payloads_per_file))


@dataclass
class LaunchInputs:
    slot: calendar.LaunchSlot
    groups: list[str]
    affinity: DataFrame          # every group's affinities
    products: DataFrame          # the launch's scored products, persisted
    interest: DataFrame          # features/dt=D/recent_interest
    views: DataFrame             # features/dt=D/recent_views
    lists: dict[str, DataFrame]  # related/dt=D/{related, bought_together}
    related_metrics: dict        # related/dt=D/metrics.json
    paths: dict[str, str]        # affinity, products, features, related: what the manifest names


@dataclass
class LaunchOutputs:
    lines: DataFrame             # every payload line, persisted on disk
    stats: dict[str, dict]       # per data set (size_stats)
    members: int
    largest: dict
    data_sets: list[str]         # in order
    experiment: experiments.Experiment | None


def extract(spark, fs: LakeFS, slot: calendar.LaunchSlot, cfg: dict, root: str) -> LaunchInputs:
    """The launch's inputs once each is complete (sealed)."""
    affinity_day, products_path, features = (
        lake.affinity(slot.dt, root=root), lake.products(slot.dt, slot.hhmm, root), lake.features(slot.dt, root)
    )
    log.info("launch %s: reads %s, %s, %s/recent_interest; boost %s on the top %s subclasses, at most %s "
             "subclass-brands per class, %s products per member, card %s x %s, max payload %s bytes",
             slot.version, affinity_day, products_path, features, cfg["boost"], cfg["boost_top_subclasses"],
             cfg["max_subclass_brands_per_class"], cfg["products_per_member"], cfg["card_groups"],
             cfg["card_products"], cfg["max_payload_bytes"])
    fs.require(affinity_day, f"affinities for {slot.dt}",
               f"let flashfeed_daily_model for {slot.dt} finish (its publish_affinity task seals them), or run it; "
               "then clear this task")
    fs.require(products_path, f"product scores for launch {slot.version}",
               f"run score_products for launch {slot.version} first (flashfeed_launch_feeds, same run), "
               "then clear this task")
    fs.require(features, f"features for {slot.dt}", features_next_step(slot.dt))
    related_day = lake.related(slot.dt, root)
    fs.require(related_day, f"related subclass-brands for {slot.dt}",
               f"let flashfeed_daily_model for {slot.dt} finish its related_items task, or run it; "
               "then clear this task")
    groups = fs.read_json(f"{affinity_day}/groups.json")["groups"]
    affinity = spark.read.parquet(*[lake.affinity(slot.dt, g, root) for g in groups])
    products = spark.read.parquet(products_path).persist()
    interest = spark.read.parquet(f"{features}/recent_interest")
    n_products = products.count()
    log.info("launch %s: affinities of %d groups %s: %s; %d scored products",
             slot.version, len(groups), groups, affinity_summary(fs, slot.dt, groups, root), n_products)
    if n_products == 0:
        raise JobError(f"product scores {products_path} hold no product",
                       f"re-run score_products for launch {slot.version}, then clear this task")
    lists = {feed: spark.read.parquet(f"{related_day}/{feed}") for feed in lake.PRODUCT_FEEDS}
    return LaunchInputs(slot, groups, affinity, products, interest, spark.read.parquet(f"{features}/recent_views"),
                        lists, fs.read_json(f"{related_day}/metrics.json"),
                        {"affinity": affinity_day, "products": products_path, "features": features,
                         "related": related_day})


def transform(inputs: LaunchInputs, config: dict) -> LaunchOutputs:
    """Affinity of saleable subclass-brands -> boost -> variety limit -> per-member cap -> six
    data sets for members, all six for the fallback 'members', the per-product feeds; their
    sizes, refused when no member has a payload or one cannot be a DynamoDB item."""
    slot, cfg, spark = inputs.slot, config["collections"], inputs.products.sparkSession
    names, member_affinity, sb_styles = launch_frames(inputs.products, inputs.affinity)
    fallback = collections_t.fallback_affinity(inputs.products)
    experiment = experiments.from_config(config)
    # Read twice (sizes, then the write): kept on local disk, as every member's six payloads
    # (about 2 GB at 100,000 members) need not take the heap.
    lines = functools.reduce(DataFrame.unionByName, [
        member_lines(spark, member_affinity, inputs.interest, fallback, inputs.views, sb_styles, names,
                     inputs.lists[lake.RELATED], config, slot.version, experiment),
        product_lines(inputs.products, inputs.lists, sb_styles, names, config["related"], slot.version),
    ]).persist(StorageLevel.DISK_ONLY)
    with timed(log, f"building the payloads of {slot.version}"):
        stats = size_stats(lines)
    members = stats.get(lake.feed_folder("products", "full"), {}).get("payloads", 0)
    if not members:
        raise JobError(
            f"no member payload for launch {slot.version}: none of the members' affinities "
            f"({inputs.paths['affinity']}) is for a subclass-brand with products in {inputs.paths['products']}",
            f"check that the sale calendar of {slot.dt} covers this launch's window, re-run score_products, then "
            "clear this task",
        )
    data_sets = lake.data_sets(experiment)
    for number, data_set in enumerate(data_sets, start=1):
        data = stats.get(data_set, {"payloads": 0})
        log.info("[%d/%d] %s: %d payloads, %s bytes, %d truncated to %s bytes, %.1f %% full", number,
                 len(data_sets), data_set, data["payloads"], data.get("payload_bytes"),
                 data.get("truncated_payloads", 0), cfg["max_payload_bytes"], 100 * data.get("full_share", 0.0))
    target = cfg["full_share_warning"]
    short = short_data_sets(stats, [lake.feed_folder(f, v) for f in lake.FEEDS for v in lake.VARIANTS], target)
    if short:
        log.warning("fewer than %.0f %% of members have collections as large as configured: %s. The sale may be "
                    "small; if not, the daily model keeps too few affinities for this catalogue: raise "
                    "als.top_k_products (measure with bench/top_k_evidence.py)", 100 * target, short)
    largest = max((d["largest"] for d in stats.values()), key=lambda x: x["bytes"])
    problem = item_limit_problem(largest)
    if problem:
        raise JobError(problem, f"lower collections.max_payload_bytes (now {cfg['max_payload_bytes']}) in "
                                "include/flashfeed.yaml to 400000 or less, then clear this task")
    return LaunchOutputs(lines, stats, members, largest, data_sets, experiment)


def load(fs: LakeFS, inputs: LaunchInputs, outputs: LaunchOutputs, cfg: dict, root: str) -> dict:
    """The JSON lines of every data set, then manifest.json; returns the manifest."""
    slot, paths = inputs.slot, inputs.paths
    manifest = {
        "version": slot.version, "dt": slot.dt.isoformat(), "launch": slot.hhmm,
        "window": {"starts_at": slot.starts_at.isoformat(), "ends_at": slot.ends_at.isoformat()},
        "data_sets": {},
        "inputs": {"affinity": paths["affinity"], "groups": inputs.groups, "products": paths["products"],
                   "features": paths["features"], "models": [lake.models(slot.dt, g, root) for g in inputs.groups],
                   "related": paths["related"]},
        # what /related and /bought-together serve: the model (or popularity), its offline test, the rules
        "related": related_summary(inputs.related_metrics),
    }
    if outputs.experiment:
        manifest["experiment"] = outputs.experiment.as_dict()
    files = files_per_data_set(outputs.members, cfg["payloads_per_file"])
    with timed(log, f"writing feeds for {slot.version} ({len(outputs.data_sets)} data sets, {files} files each)"), \
            staged_partition(fs, lake.feeds(slot.dt, slot.hhmm, root), log) as staging:
        described = write_lines(fs, outputs.lines, staging, files)
        for data_set in outputs.data_sets:
            manifest["data_sets"][data_set] = {**outputs.stats.get(data_set, {"payloads": 0}),
                                               "files": described.get(data_set, [])}
        manifest["members"] = outputs.members
        manifest["total_payloads"] = sum(d["payloads"] for d in manifest["data_sets"].values())
        manifest["largest_payload"] = outputs.largest
        fs.write_json(f"{staging}/manifest.json", manifest)
    log.info("launch %s: %d members, %d payloads in total, largest %d bytes",
             slot.version, outputs.members or 0, manifest["total_payloads"], outputs.largest["bytes"])
    return manifest


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv, launch=True)
    slot = calendar.slot(date.fromisoformat(args.dt), args.launch, config)
    spark = spark_session(f"flashfeed-collections-{slot.version}", config)
    fs = LakeFS(spark)
    inputs = extract(spark, fs, slot, config["collections"], root)
    outputs = transform(inputs, config)
    load(fs, inputs, outputs, config["collections"], root)
    log.info("launch %s feeds done in %.1f s: wrote %s (manifest.json, %d data sets)", slot.version,
             time.monotonic() - started, lake.feeds(slot.dt, slot.hhmm, root), len(outputs.data_sets))
    spark.stop()


if __name__ == "__main__":
    run_job(main, log)
