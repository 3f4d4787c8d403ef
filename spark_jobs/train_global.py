"""Train the day's one global implicit ALS over every member: a candidate of every group's gate.

Reads   features/dt=D/gate/ratings (every group's training part), features/dt=D/ratings
Writes  models/dt=D/global/{gate_items (item factors fit on the gate's training part: each group's
        gate folds its own members in), factors/{members/group=G, items} (the model continued on
        every rating: what a group whose gate chooses global_als serves), metrics.json}
Re-run  `spark-submit spark_jobs/train_global.py --dt D` replaces models/dt=D/global.

Settings: the `als` section with `group_overrides.global`. The fit runs in numpy on the driver
up to `als.driver_fit_max_ratings`, else with Spark's ALS (as train_group). A failed fit is
recorded in metrics.json (`failed`) and the task succeeds: the groups' gates then judge their
other candidates, as they do when their own fit fails.
"""
from __future__ import annotations

import functools
import time
from datetime import date

import pandas as pd
from pyspark.sql import SparkSession

from flashfeed.core import lake
from flashfeed.core.config import group_settings
from spark_jobs.common import (
    LakeFS,
    features_next_step,
    first_line,
    get_logger,
    log_driver_ready,
    parse_job_args,
    run_job,
    spark_session,
    staged_partition,
    timed,
)
from spark_jobs.transforms import als

log = get_logger("train_global")
GLOBAL = "global"   # its settings: als.group_overrides.global


def read_groups(features: str, groups: list[str], path: str, columns: list[str]) -> pd.DataFrame:
    """One table of every group's partition `path` (…/group=G), with its group."""
    return pd.concat([lake.read_table(f"{features}/{path}/group={group}", columns).assign(group=group)
                      for group in groups], ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv)
    dt = date.fromisoformat(args.dt)
    params = group_settings(config, "als", GLOBAL)
    app_name = f"flashfeed-als-{dt}-global"
    folder = lake.global_model(dt, root)

    @functools.cache
    def spark() -> SparkSession:
        """Started only for a fit too large for the driver (`als.driver_fit_max_ratings`)."""
        session = spark_session(app_name, config)
        session.sparkContext.setCheckpointDir(folder + ".__checkpoints")
        return session

    fs = LakeFS()
    log_driver_ready(app_name, "a Spark session starts only for a fit too large for the driver")

    # Extract
    features = lake.features(dt, root)
    fs.require(features, f"features for {dt}", features_next_step(dt))
    groups = fs.read_json(f"{features}/groups.json")["groups"]
    train = read_groups(features, groups, "gate/ratings", ["member_sk", "subclass_brand_id", "rating", "part"])
    train = train[train["part"] == "train"]
    # Without a training part (a history shorter than the gate's parts) no gate judges the model:
    # it is fit on every rating, as the groups' own models are then.
    gate_fit = not train.empty
    ratings = read_groups(features, groups, "ratings", ["member_id", "member_sk", "subclass_brand_id", "rating"])
    log.info("global ALS on %s: %d groups, %d members, %d ratings (%d in the gate's training part); rank=%s "
             "maxIter=%s regParam=%s alpha=%s serve_iterations=%s", dt, len(groups), ratings["member_id"].nunique(),
             len(ratings), len(train), params["rank"], params["max_iter"], params["reg_param"], params["alpha"],
             params["serve_iterations"])

    # Transform: fit on the gate's training part, then continue on every rating
    metrics = {"dt": dt.isoformat(), "members": int(ratings["member_id"].nunique()), "ratings": len(ratings),
               "gate_training_ratings": len(train), "failed": None,
               "params": {key: params[key] for key in ("rank", "max_iter", "reg_param", "alpha", "seed",
                                                       "serve_iterations", "driver_fit_max_ratings")}}
    try:
        fit_frame = train if gate_fit else ratings
        blocks, _ = als.blocks_for(fit_frame["member_sk"].nunique(), params)
        where = ("in numpy on the driver" if als.fits_on_driver(len(fit_frame), params)
                 else f"with Spark, {blocks} blocks")
        what = "of the gate's training part" if gate_fit else "(every rating: no gate training part)"
        with timed(log, f"fitting the global ALS on {len(fit_frame)} ratings {what} {where}"):
            _, gate_items = als.fitted_factors(spark, fit_frame, params, blocks)
        with timed(log, f"continuing it on all {len(ratings)} ratings ({params['serve_iterations']} iterations)"):
            members, items = als.continued_model(gate_items, ratings, params)
    except Exception as error:  # noqa: BLE001 - the groups judge their other candidates
        metrics["failed"] = f"training failed: {first_line(error)}"
        log.error("global ALS of %s FAILED (%s): no group can choose global_als today. Next step: fix the cause "
                  "(e.g. als.group_overrides.global in include/flashfeed.yaml), then clear this task and the "
                  "train_group_als tasks", dt, metrics["failed"])
        gate_items = None
    metrics["fit_on"] = "spark" if spark.cache_info().currsize else "driver"

    # Load
    with staged_partition(fs, folder, log) as staging:
        if gate_items is not None:
            if gate_fit:
                lake.write_table(f"{staging}/gate_items", [gate_items], als.ITEM_FACTORS_SCHEMA)
            lake.write_table(f"{staging}/factors/items", [items], als.ITEM_FACTORS_SCHEMA)
            by_member = members.merge(ratings[["member_id", "group"]].drop_duplicates(), on="member_id")
            for group, part in by_member.groupby("group"):
                lake.write_table(f"{staging}/factors/members/group={group}", [part[["member_id", "features"]]],
                                 als.MEMBER_FACTORS_SCHEMA)
        fs.write_json(f"{staging}/metrics.json", metrics)
    fs.delete(folder + ".__checkpoints")
    log.info("global ALS of %s done in %.1f s%s: wrote %s", dt, time.monotonic() - started,
             f" ({metrics['failed']})" if metrics["failed"] else "", folder)
    if spark.cache_info().currsize:
        spark().stop()


if __name__ == "__main__":
    run_job(main, log)
