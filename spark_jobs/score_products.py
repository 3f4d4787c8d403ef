"""Score every product on sale in one launch's window and keep the best of each subclass-brand.

Reads   raw/sale_calendar/dt=D, raw/catalog/dt=D, features/dt=D/style_activity
Writes  products/dt=D/launch=HHMM/ (top products per subclass-brand, with their features)
Re-run  `spark-submit spark_jobs/score_products.py --dt D --launch HHMM` replaces that slot only.
"""
from __future__ import annotations

import sys
from datetime import date

from pyspark.sql import functions as F

from flashfeed import calendar, lake
from spark_jobs.common import (
    LakeFS, parse_job_args, get_logger, read_sql, spark_session, staged_partition,
)
from spark_jobs.transforms import catalog as catalog_t
from spark_jobs.transforms import scoring

log = get_logger("score_products")


def main(argv: list[str] | None = None) -> None:
    args, config, root = parse_job_args(__doc__, argv, launch=True)
    slot = calendar.slot(date.fromisoformat(args.dt), args.launch, config)
    cfg = config["scoring"]
    spark = spark_session(f"flashfeed-score-{slot.version}", config)
    fs = LakeFS(spark)
    log.info("launch %s: window %s .. %s (UTC)", slot.version, slot.starts_at, slot.ends_at)

    # Extract
    for dataset in ("sale_calendar", "catalog"):
        fs.require(lake.raw(dataset, slot.dt, root), f"raw {dataset} for {slot.dt}")
    features = lake.features(slot.dt, root)
    fs.require(features, f"features for {slot.dt}")
    sale_calendar = spark.read.parquet(lake.raw("sale_calendar", slot.dt, root)).persist()
    catalog = catalog_t.with_subclass_brand(spark.read.parquet(lake.raw("catalog", slot.dt, root)))
    activity = spark.read.parquet(f"{features}/style_activity")

    # Transform
    live = scoring.live_products(sale_calendar, slot.starts_at, slot.ends_at).persist()
    n_live = live.count()
    stocked = live.where(F.col("qty_on_hand") >= int(cfg["min_qty_on_hand"]))
    n_stocked = stocked.count()
    log.info("products on sale in the window: %d; culled for low inventory (< %s on hand): %d",
             n_live, cfg["min_qty_on_hand"], n_live - n_stocked)
    if n_stocked == 0:
        raise ValueError(
            f"no product with stock is on sale in {slot.starts_at} .. {slot.ends_at}: "
            f"check raw/sale_calendar/dt={slot.dt} before re-running"
        )
    feats = scoring.product_features(stocked, sale_calendar, catalog, activity, slot.starts_at,
                                      int(cfg["brand_persistence_days"]))
    scored = scoring.product_scores(feats, cfg["weights"])
    top = scoring.top_products(spark, scored, read_sql("top_products_per_subclass_brand.sql"),
                               int(cfg["products_per_subclass_brand"]))

    # Load
    with staged_partition(fs, lake.products(slot.dt, slot.hhmm, root), log) as staging:
        top.write.parquet(staging)
        written = spark.read.parquet(staging)
        summary = written.agg(
            F.count("*").alias("products"),
            F.countDistinct("subclass_brand_id").alias("subclass_brands"),
            F.sum(F.col("is_new").cast("int")).alias("never_seen"),
        ).first()
    log.info("kept %d products in %d subclass-brands (%d never seen before)",
             summary["products"], summary["subclass_brands"], summary["never_seen"] or 0)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
