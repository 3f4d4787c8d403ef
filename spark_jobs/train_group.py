"""Train one member group's implicit ALS model and predict its members' top affinities.

Reads   features/dt=D/ratings/group=G, raw/catalog/dt=D, raw/sale_calendar/dt=D
Writes  models/dt=D/group=G/{model, metrics.json}, affinity/dt=D/group=G/ (top-K per member,
        only subclass-brands with saleable stock in day D's launch windows)
Re-run  `spark-submit spark_jobs/train_group.py --dt D --group G` replaces that group's partitions.
"""
from __future__ import annotations

import sys
import time
from datetime import date

from pyspark.ml.recommendation import ALS
from pyspark.sql import functions as F

from flashfeed import calendar, lake
from flashfeed.config import group_settings
from spark_jobs.common import LakeFS, parse_job_args, get_logger, spark_session, staged_partition
from spark_jobs.transforms import affinity as affinity_t
from spark_jobs.transforms import catalog as catalog_t
from spark_jobs.transforms import scoring

log = get_logger("train_group")


def main(argv: list[str] | None = None) -> None:
    args, config, root = parse_job_args(__doc__, argv, group=True)
    dt, group = date.fromisoformat(args.dt), args.group
    params = group_settings(config, "als", group)
    spark = spark_session(f"flashfeed-als-{dt}-group-{group}", config)
    fs = LakeFS(spark)

    # Extract
    features = lake.features(dt, root)
    fs.require(features, f"features for {dt}")
    ratings_path = f"{features}/ratings/group={group}"
    if not fs.exists(ratings_path):
        known = fs.read_json(f"{features}/groups.json")["groups"]
        raise ValueError(f"group {group!r} has no ratings on {dt}; groups of that day: {known}")
    ratings = spark.read.parquet(ratings_path).persist()
    for dataset in ("catalog", "sale_calendar"):
        fs.require(lake.raw(dataset, dt, root), f"raw {dataset} for {dt}")
    catalog = catalog_t.with_subclass_brand(spark.read.parquet(lake.raw("catalog", dt, root)))
    window_start, window_end = calendar.day_window(dt, config)
    live = scoring.live_products(spark.read.parquet(lake.raw("sale_calendar", dt, root)), window_start, window_end)
    candidates = affinity_t.saleable_subclass_brands(live, catalog, int(config["scoring"]["min_qty_on_hand"]))

    members = ratings.select("member_sk").distinct().count()
    items = ratings.select("subclass_brand_id").distinct().count()
    n_ratings = ratings.count()
    blocks, divisor = affinity_t.user_blocks(
        members, int(params["user_blocks_threshold"]),
        int(params["user_blocks_divisor_small"]), int(params["user_blocks_divisor_large"]),
    )
    size = "small" if divisor == int(params["user_blocks_divisor_small"]) else "large"
    log.info("group %s on %s: %d members, %d subclass-brands, %d ratings", group, dt, members, items, n_ratings)
    log.info("user blocks: %d (%s group, divisor %d, threshold %s); params rank=%s maxIter=%s regParam=%s alpha=%s",
             blocks, size, divisor, params["user_blocks_threshold"], params["rank"], params["max_iter"],
             params["reg_param"], params["alpha"])

    # Transform: train
    models = lake.models(dt, group, root)
    checkpoints = models + ".__checkpoints"
    spark.sparkContext.setCheckpointDir(checkpoints)
    als = ALS(
        rank=int(params["rank"]), maxIter=int(params["max_iter"]), regParam=float(params["reg_param"]),
        alpha=float(params["alpha"]), implicitPrefs=True, userCol="member_sk", itemCol="subclass_brand_id",
        ratingCol="rating", numUserBlocks=blocks, numItemBlocks=int(params["item_blocks"]),
        checkpointInterval=int(params["checkpoint_interval"]), seed=int(params["seed"]),
    )
    started = time.monotonic()
    model = als.fit(ratings)
    train_seconds = time.monotonic() - started
    log.info("trained in %.1f s", train_seconds)

    # Transform: predict only for subclass-brands with stock on sale in day D's windows
    candidate_factors = model.itemFactors.join(candidates, F.col("id") == F.col("subclass_brand_id"), "left_semi")
    n_candidates = candidate_factors.count()
    k = int(params["top_k"])
    if n_candidates < k:
        log.warning("top_k %d is higher than the %d saleable subclass-brands this group knows; keeping %d per member",
                    k, n_candidates, n_candidates)
        k = n_candidates
    top = affinity_t.top_k_affinities(model.userFactors, candidate_factors, k)
    ids = ratings.select("member_sk", "member_id").distinct()
    observed = ratings.select("member_sk", "subclass_brand_id", "rating")
    affinity = (
        top.join(ids, "member_sk")
        .join(observed, ["member_sk", "subclass_brand_id"], "left")
        .fillna(0.0, subset=["rating"])
        .select("member_id", "subclass_brand_id", "affinity", "rating", "affinity_rank")
    )

    # Load
    with staged_partition(fs, lake.affinity(dt, group, root), log) as staging:
        affinity.write.parquet(staging)
        written = spark.read.parquet(staging)
        rows = written.count()
        scored_members = written.select("member_id").distinct().count()
    log.info("affinities: %d rows for %d members (%d candidates)", rows, scored_members, n_candidates)
    with staged_partition(fs, models, log) as staging:
        model.write().overwrite().save(f"{staging}/model")
        fs.write_json(f"{staging}/metrics.json", {
            "dt": dt.isoformat(), "group": group, "members": members, "subclass_brands": items,
            "ratings": n_ratings, "candidates": n_candidates, "top_k": k, "affinity_rows": rows,
            "members_scored": scored_members, "user_blocks": blocks, "user_blocks_divisor": divisor,
            "train_seconds": round(train_seconds, 2),
            "params": {key: params[key] for key in ("rank", "max_iter", "reg_param", "alpha", "item_blocks", "seed")},
        })
    fs.delete(checkpoints)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
