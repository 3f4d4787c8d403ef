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

import time
from collections.abc import Callable
from dataclasses import dataclass
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
    lazy_session,
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


@dataclass
class GlobalInputs:
    dt: date
    groups: list[str]
    train: pd.DataFrame          # the gate's training part of every group (member_sk, subclass_brand_id, rating)
    ratings: pd.DataFrame        # every rating (member_id, member_sk, subclass_brand_id, rating, group)
    spark: Callable[[], SparkSession]


@dataclass
class GlobalOutputs:
    metrics: dict
    gate_items: pd.DataFrame | None = None     # None: the fit failed
    members: pd.DataFrame | None = None        # continued on every rating, with their group
    items: pd.DataFrame | None = None
    gate_fit: bool = True                      # fit on the gate's training part (else on every rating)


def fit_frame(train: pd.DataFrame, ratings: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """(what the model is fit on, whether that is the gate's training part): without a training
    part (a history shorter than the gate's parts) no gate judges the model, so it is fit on
    every rating, as the groups' own models are then."""
    return (train, True) if not train.empty else (ratings, False)


def extract(fs: LakeFS, dt: date, root: str, params: dict, spark: Callable[[], SparkSession]) -> GlobalInputs:
    features = lake.features(dt, root)
    fs.require(features, f"features for {dt}", features_next_step(dt))
    groups = fs.read_json(f"{features}/groups.json")["groups"]
    train = read_groups(features, groups, "gate/ratings", ["member_sk", "subclass_brand_id", "rating", "part"])
    train = train[train["part"] == "train"]
    ratings = read_groups(features, groups, "ratings", ["member_id", "member_sk", "subclass_brand_id", "rating"])
    log.info("global ALS on %s: %d groups, %d members, %d ratings (%d in the gate's training part); rank=%s "
             "maxIter=%s regParam=%s alpha=%s serve_iterations=%s", dt, len(groups), ratings["member_id"].nunique(),
             len(ratings), len(train), params["rank"], params["max_iter"], params["reg_param"], params["alpha"],
             params["serve_iterations"])
    return GlobalInputs(dt, groups, train, ratings, spark)


def transform(inputs: GlobalInputs, params: dict) -> GlobalOutputs:
    """Fit on the gate's training part, then continue on every rating; a failed fit is recorded
    (`failed`), not raised: the groups judge their other candidates."""
    ratings = inputs.ratings
    metrics = {"dt": inputs.dt.isoformat(), "members": int(ratings["member_id"].nunique()), "ratings": len(ratings),
               "gate_training_ratings": len(inputs.train), "failed": None,
               "params": {key: params[key] for key in ("rank", "max_iter", "reg_param", "alpha", "seed",
                                                       "serve_iterations", "driver_fit_max_ratings")}}
    frame, gate_fit = fit_frame(inputs.train, ratings)
    try:
        blocks, _ = als.blocks_for(frame["member_sk"].nunique(), params)
        where = "in numpy on the driver" if als.fits_on_driver(len(frame), params) else f"with Spark, {blocks} blocks"
        what = "of the gate's training part" if gate_fit else "(every rating: no gate training part)"
        with timed(log, f"fitting the global ALS on {len(frame)} ratings {what} {where}"):
            _, gate_items = als.fitted_factors(inputs.spark, frame, params, blocks)
        with timed(log, f"continuing it on all {len(ratings)} ratings ({params['serve_iterations']} iterations)"):
            members, items = als.continued_model(gate_items, ratings, params)
    except Exception as error:  # noqa: BLE001 - the groups judge their other candidates
        metrics["failed"] = f"training failed: {first_line(error)}"
        log.error("global ALS of %s FAILED (%s): no group can choose global_als today. Next step: fix the cause "
                  "(e.g. als.group_overrides.global in include/flashfeed.yaml), then clear this task and the "
                  "train_group_als tasks", inputs.dt, metrics["failed"])
        return GlobalOutputs(metrics, gate_fit=gate_fit)
    by_member = members.merge(ratings[["member_id", "group"]].drop_duplicates(), on="member_id")
    return GlobalOutputs(metrics, gate_items, by_member, items, gate_fit)


def load(fs: LakeFS, folder: str, outputs: GlobalOutputs) -> None:
    with staged_partition(fs, folder, log) as staging:
        if outputs.gate_items is not None:
            if outputs.gate_fit:
                lake.write_table(f"{staging}/gate_items", [outputs.gate_items], als.ITEM_FACTORS_SCHEMA)
            lake.write_table(f"{staging}/factors/items", [outputs.items], als.ITEM_FACTORS_SCHEMA)
            for group, part in outputs.members.groupby("group"):
                lake.write_table(f"{staging}/factors/members/group={group}", [part[["member_id", "features"]]],
                                 als.MEMBER_FACTORS_SCHEMA)
        fs.write_json(f"{staging}/metrics.json", outputs.metrics)


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv)
    dt, params = date.fromisoformat(args.dt), group_settings(config, "als", GLOBAL)
    app_name, folder = f"flashfeed-als-{dt}-global", lake.global_model(dt, root)
    spark = lazy_session(lambda: spark_session(app_name, config), folder + ".__checkpoints")
    fs = LakeFS()
    log_driver_ready(app_name, "a Spark session starts only for a fit too large for the driver")
    outputs = transform(extract(fs, dt, root, params, spark), params)
    outputs.metrics["fit_on"] = "spark" if spark.cache_info().currsize else "driver"
    load(fs, folder, outputs)
    fs.delete(folder + ".__checkpoints")
    failed = outputs.metrics["failed"]
    log.info("global ALS of %s done in %.1f s%s: wrote %s", dt, time.monotonic() - started,
             f" ({failed})" if failed else "", folder)
    if spark.cache_info().currsize:
        spark().stop()


if __name__ == "__main__":
    run_job(main, log)
