"""Build the six collections of every member for one launch, plus fallback payloads, as JSON lines.

Reads   affinity/dt=D (groups listed in groups.json), products/dt=D/launch=HHMM,
        features/dt=D/recent_interest
Writes  feeds/dt=D/launch=HHMM/{<feed>_<variant>/part-*.json, fallback/part-*.json, manifest.json}
Re-run  `spark-submit spark_jobs/build_collections.py --dt D --launch HHMM` replaces that slot only.
"""
from __future__ import annotations

import math
import time
from datetime import date

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from flashfeed import calendar, lake
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

log = get_logger("build_collections")
DYNAMODB_ITEM_LIMIT_BYTES = 400 * 1024
KEY_OVERHEAD_BYTES = 200  # member_id, feed and attribute names also count towards an item's size
SIZE_PERCENTILES = (0.5, 0.95, 0.99)


def payload_lines(payload_rows: DataFrame) -> DataFrame:
    """(member_id, feed, variant, line, bytes, truncated_groups): the exact JSON line served."""
    line = F.to_json(F.struct("member_id", "feed", "variant", "version", "groups"))
    return payload_rows.select("member_id", "feed", "variant", line.alias("line"), "truncated_groups").withColumn(
        "bytes", F.octet_length("line")
    )


def write_lines(fs: LakeFS, lines: DataFrame, folder: str, files: int) -> list[dict]:
    """Write JSON lines sorted by member (byte-identical on re-runs); name the parts *.json."""
    (
        lines.repartition(files, "member_id")
        .sortWithinPartitions("member_id", "feed", "variant")
        .select("line")
        .write.text(folder)
    )
    described = []
    for uri in fs.list_files(folder):
        name = uri.rsplit("/", 1)[1]
        if not name.startswith("part-"):
            continue
        target = uri[: -len(".txt")] + ".json" if uri.endswith(".txt") else uri
        if target != uri:
            fs.rename(uri, target)
        size, sha, count = fs.file_digest(target)
        described.append({"path": target.rsplit("/", 2)[1] + "/" + target.rsplit("/", 1)[1],
                          "bytes": size, "sha256": sha, "payloads": count})
    return described


def size_stats(lines: DataFrame) -> dict:
    row = lines.agg(
        F.count("*").alias("payloads"),
        F.percentile_approx("bytes", list(SIZE_PERCENTILES)).alias("p"),
        F.max_by(F.struct("member_id", "feed", "variant", "bytes"), "bytes").alias("largest"),
        F.sum(F.when(F.col("truncated_groups") > 0, 1).otherwise(0)).alias("truncated_payloads"),
    ).first()
    if not row["payloads"]:
        return {"payloads": 0}
    largest = row["largest"].asDict()
    stats = {"payloads": int(row["payloads"]), "largest": largest,
             "truncated_payloads": int(row["truncated_payloads"] or 0)}
    stats["payload_bytes"] = {f"p{int(q * 100)}": int(v) for q, v in zip(SIZE_PERCENTILES, row["p"])}
    stats["payload_bytes"]["max"] = int(largest["bytes"])
    return stats


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


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv, launch=True)
    slot = calendar.slot(date.fromisoformat(args.dt), args.launch, config)
    cfg = config["collections"]
    spark = spark_session(f"flashfeed-collections-{slot.version}", config)
    fs = LakeFS(spark)

    # Extract
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

    # Transform: affinity of saleable subclass-brands -> boost -> variety limit -> per-member cap
    names = products.select("subclass_brand_id", "brand", "subclass", "subclass_key", "class_key").distinct()
    member_affinity = affinity.join(F.broadcast(names.select("subclass_brand_id", "subclass_key", "class_key")),
                                    "subclass_brand_id")
    boosted = affinity_t.apply_boost(member_affinity, interest, float(cfg["boost"])).select(
        "member_id", "subclass_brand_id", "subclass_key", "class_key", "affinity", "boost"
    )
    fallback = collections_t.fallback_affinity(products)
    variety_sql = read_sql("variety_limit.sql")
    limited = affinity_t.variety_limit(spark, boosted.unionByName(fallback), variety_sql,
                                       int(cfg["max_subclass_brands_per_class"]))
    per_member = Window.partitionBy("member_id").orderBy(F.desc("affinity"), F.asc("subclass_brand_id"))
    ranked = (
        limited.withColumn("_n", F.row_number().over(per_member))
        .where(F.col("_n") <= int(cfg["subclass_brands_per_member"]))
        .drop("_n")
        .persist()
    )
    sb_styles = F.broadcast(collections_t.styles_by_subclass_brand(products))
    is_fallback = F.col("member_id").startswith(lake.FALLBACK_MEMBER_PREFIX)

    # Load: six data sets for members, all six for the fallback 'members', then the manifest
    partition = lake.feeds(slot.dt, slot.hhmm, root)
    manifest = {
        "version": slot.version, "dt": slot.dt.isoformat(), "launch": slot.hhmm,
        "window": {"starts_at": slot.starts_at.isoformat(), "ends_at": slot.ends_at.isoformat()},
        "data_sets": {},
        "inputs": {"affinity": affinity_day, "groups": groups, "products": products_path, "features": features,
                   "models": [lake.models(slot.dt, g, root) for g in groups]},
    }
    data_sets = len(lake.FEEDS) * len(lake.VARIANTS)
    with timed(log, f"writing feeds for {slot.version}"), staged_partition(fs, partition, log) as staging:
        fallback_lines = []
        members = None
        for feed in lake.FEEDS:
            units = collections_t.feed_units(ranked, sb_styles, names, feed).persist()
            for variant in lake.VARIANTS:
                rows = collections_t.payloads(collections_t.limit_groups(units, variant, cfg), feed, variant,
                                              slot.version, int(cfg["max_payload_bytes"]))
                lines = payload_lines(rows).persist()
                member_lines = lines.where(~is_fallback)
                stats = size_stats(member_lines)
                data_set = lake.feed_folder(feed, variant)
                files = max(1, math.ceil(stats["payloads"] / int(cfg["payloads_per_file"])))
                stats["files"] = write_lines(fs, member_lines, f"{staging}/{data_set}", files)
                manifest["data_sets"][data_set] = stats
                log.info("[%d/%d] %s: %d payloads, %s bytes, %d truncated to %s bytes", len(manifest["data_sets"]),
                         data_sets, data_set, stats["payloads"], stats.get("payload_bytes"),
                         stats.get("truncated_payloads", 0), cfg["max_payload_bytes"])
                if feed == "products" and variant == "full":
                    members = stats["payloads"]
                    if not members:   # raised inside: the previous partition stays as it was
                        raise JobError(
                            f"no member payload for launch {slot.version}: none of the members' affinities "
                            f"({affinity_day}) is for a subclass-brand with products in {products_path}",
                            f"check that the sale calendar of {slot.dt} covers this launch's window, re-run "
                            "score_products, then clear this task",
                        )
                fallback_lines.append(lines.where(is_fallback))
            units.unpersist()
        all_fallback = fallback_lines[0]
        for more in fallback_lines[1:]:
            all_fallback = all_fallback.unionByName(more)
        stats = size_stats(all_fallback)
        stats["files"] = write_lines(fs, all_fallback, f"{staging}/fallback", 1)
        manifest["data_sets"]["fallback"] = stats
        log.info("fallback: %d payloads (divisions and global)", stats["payloads"])
        manifest["members"] = members
        manifest["total_payloads"] = sum(d["payloads"] for d in manifest["data_sets"].values())
        largest = max((d["largest"] for d in manifest["data_sets"].values() if d.get("largest")),
                      key=lambda x: x["bytes"])
        manifest["largest_payload"] = largest
        if largest["bytes"] + KEY_OVERHEAD_BYTES > DYNAMODB_ITEM_LIMIT_BYTES:
            raise JobError(
                f"payload of member {largest['member_id']} feed {largest['feed']}#{largest['variant']} is "
                f"{largest['bytes']} bytes, over DynamoDB's 400 KB item limit",
                f"lower collections.max_payload_bytes (now {cfg['max_payload_bytes']}) in include/flashfeed.yaml "
                "to 400000 or less, then clear this task",
            )
        fs.write_json(f"{staging}/manifest.json", manifest)
    log.info("launch %s: %d members, %d payloads in total, largest %d bytes",
             slot.version, members or 0, manifest["total_payloads"], largest["bytes"])
    log.info("launch %s feeds done in %.1f s: wrote %s (manifest.json, %d data sets and fallback)", slot.version,
             time.monotonic() - started, partition, data_sets)
    spark.stop()


if __name__ == "__main__":
    run_job(main, log)
