"""Score every product on sale in one launch's window and keep the best of each subclass-brand.

Reads   raw/sale_calendar/dt=D, raw/catalog/dt=D, features/dt=D/style_activity
Writes  products/dt=D/launch=HHMM/ (top products per subclass-brand, with their features)
Re-run  `spark-submit spark_jobs/score_products.py --dt D --launch HHMM` replaces that slot only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from flashfeed.core import calendar, lake
from spark_jobs.common import (
    JobError,
    LakeFS,
    check_columns,
    features_next_step,
    get_logger,
    parse_job_args,
    raw_next_step,
    read_raw,
    read_sql,
    run_job,
    spark_session,
    staged_partition,
)
from spark_jobs.transforms import catalog as catalog_t
from spark_jobs.transforms import scoring

log = get_logger("score_products")


@dataclass
class ScoreInputs:
    sale_calendar: DataFrame
    catalog: DataFrame          # with its subclass-brand
    activity: DataFrame         # features/dt=D/style_activity
    calendar_uri: str           # for the messages
    catalog_uri: str


@dataclass
class ScoreOutputs:
    top: DataFrame              # the best products of each subclass-brand, with their features
    live: int                   # products on sale in the window
    stocked: int                # of those, with enough on hand


def no_stock_problem(stocked: int, live: int, min_qty: int, slot: calendar.LaunchSlot,
                     calendar_uri: str) -> JobError | None:
    """The refusal when no product on sale in the launch's window has `min_qty` on hand."""
    if stocked:
        return None
    return JobError(f"no product with {min_qty}+ on hand is on sale in {slot.starts_at} .. {slot.ends_at} "
                    f"({live} on sale in all) according to {calendar_uri}", raw_next_step("sale_calendar", slot.dt))


def no_product_problem(products: int, stocked: int, slot: calendar.LaunchSlot, catalog_uri: str) -> JobError | None:
    """The refusal when none of the stocked products on sale is in the day's catalogue."""
    if products:
        return None
    return JobError(f"none of the {stocked} stocked products on sale is in the catalog {catalog_uri}: no product to "
                    "score", "check that the catalog and the sale calendar of the same day were delivered together; "
                    f"{raw_next_step('catalog', slot.dt)}")


def extract(spark, fs: LakeFS, slot: calendar.LaunchSlot, cfg: dict, root: str) -> ScoreInputs:
    features = lake.features(slot.dt, root)
    calendar_uri, catalog_uri = lake.raw("sale_calendar", slot.dt, root), lake.raw("catalog", slot.dt, root)
    log.info("launch %s: window %s .. %s (UTC); reads %s, %s, %s/style_activity; min on hand %s, "
             "%s products per subclass-brand", slot.version, slot.starts_at, slot.ends_at, calendar_uri,
             catalog_uri, features, cfg["min_qty_on_hand"], cfg["products_per_subclass_brand"])
    sale_calendar = read_raw(spark, fs, "sale_calendar", slot.dt, root).persist()
    catalog = catalog_t.with_subclass_brand(read_raw(spark, fs, "catalog", slot.dt, root))
    fs.require(features, f"features for {slot.dt}", features_next_step(slot.dt))
    activity_uri = f"{features}/style_activity"
    activity = check_columns(spark.read.parquet(activity_uri), ("style_id",), "style activity", activity_uri,
                             f"re-run build_features of flashfeed_daily_model for {slot.dt}")
    return ScoreInputs(sale_calendar, catalog, activity, calendar_uri, catalog_uri)


def transform(inputs: ScoreInputs, slot: calendar.LaunchSlot, cfg: dict) -> ScoreOutputs:
    """Products on sale in the window with enough on hand, scored; the best of each subclass-brand."""
    live = scoring.live_products(inputs.sale_calendar, slot.starts_at, slot.ends_at).persist()
    n_live = live.count()
    stocked = live.where(F.col("qty_on_hand") >= cfg["min_qty_on_hand"])
    n_stocked = stocked.count()
    log.info("products on sale in the window: %d; culled for low inventory (< %s on hand): %d",
             n_live, cfg["min_qty_on_hand"], n_live - n_stocked)
    problem = no_stock_problem(n_stocked, n_live, cfg["min_qty_on_hand"], slot, inputs.calendar_uri)
    if problem:
        raise problem
    feats = scoring.product_features(stocked, inputs.sale_calendar, inputs.catalog, inputs.activity, slot.starts_at,
                                      cfg["brand_persistence_days"])
    scored = scoring.product_scores(feats, cfg["weights"])
    top = scoring.top_products(scored.sparkSession, scored, read_sql("top_products_per_subclass_brand.sql"),
                               cfg["products_per_subclass_brand"])
    return ScoreOutputs(top, n_live, n_stocked)


def load(spark, fs: LakeFS, outputs: ScoreOutputs, partition: str, slot: calendar.LaunchSlot, catalog_uri: str) -> Row:
    """Write the products; refuse (inside the write: the previous partition stays as it was) when
    none is left. Returns the counts of what was written."""
    with staged_partition(fs, partition, log) as staging:
        outputs.top.write.mode("overwrite").parquet(staging)
        summary = spark.read.parquet(staging).agg(
            F.count("*").alias("products"),
            F.countDistinct("subclass_brand_id").alias("subclass_brands"),
            F.sum(F.col("is_new").cast("int")).alias("never_seen"),
        ).first()
        problem = no_product_problem(summary["products"], outputs.stocked, slot, catalog_uri)
        if problem:
            raise problem
    log.info("kept %d products in %d subclass-brands (%d never seen before)",
             summary["products"], summary["subclass_brands"], summary["never_seen"] or 0)
    return summary


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv, launch=True)
    slot = calendar.slot(date.fromisoformat(args.dt), args.launch, config)
    spark = spark_session(f"flashfeed-score-{slot.version}", config)
    fs = LakeFS(spark)
    inputs = extract(spark, fs, slot, config["scoring"], root)
    outputs = transform(inputs, slot, config["scoring"])
    partition = lake.products(slot.dt, slot.hhmm, root)
    load(spark, fs, outputs, partition, slot, inputs.catalog_uri)
    log.info("launch %s products done in %.1f s: wrote %s", slot.version, time.monotonic() - started, partition)
    spark.stop()


if __name__ == "__main__":
    run_job(main, log)
