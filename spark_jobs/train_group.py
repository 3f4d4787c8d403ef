"""Train one member group's implicit ALS model and predict its members' top affinities,
unless the quality gate says the model is worse than popularity.

Reads   features/dt=D/{ratings, gate}/group=G, raw/catalog/dt=D, raw/sale_calendar/dt=D
        (and, to fall back, models/dt=D'/group=G and features/dt=D'/members of the last good day D')
Writes  models/dt=D/group=G/{model, metrics.json}, affinity/dt=D/group=G/ (top-K per member,
        only subclass-brands with saleable stock in day D's launch windows)
Re-run  `spark-submit spark_jobs/train_group.py --dt D --group G` replaces that group's partitions.

Quality gate: a model trained on the gate's training part must reach popularity's NDCG@k on
the held-out part minus `evaluation.gate_ndcg_margin`. When it does not, or when training
fails, the group is served from its last good model (the newest earlier day whose
metrics.json says `served_from: model`), or from popularity when there is none. metrics.json
records the gate's figures, `served_from` and the reason.
"""
from __future__ import annotations

import time
from datetime import date

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from flashfeed import calendar, lake
from flashfeed.config import group_settings
from spark_jobs.common import (
    JobError,
    LakeFS,
    check_columns,
    features_next_step,
    first_line,
    get_logger,
    parse_job_args,
    raw_next_step,
    read_raw,
    run_job,
    spark_session,
    staged_partition,
    timed,
)
from spark_jobs.transforms import affinity as affinity_t
from spark_jobs.transforms import als, evaluation, scoring
from spark_jobs.transforms import catalog as catalog_t

log = get_logger("train_group")
SERVED_FROM_MODEL = "model"
SERVED_FROM_POPULARITY = "popularity"


def quality_gate(spark: SparkSession, fs: LakeFS, features: str, group: str, params: dict,
                 k: int, margin: float) -> dict:
    """NDCG@k etc. of this group's model and of popularity on the gate's held-out part."""
    train_path, relevant_path = (f"{features}/gate/{name}/group={group}" for name in ("train_ratings", "relevant"))
    if not (fs.exists(train_path) and fs.exists(relevant_path)):
        return {"evaluated": False, "passed": True, "k": k, "margin": margin,
                "reason": "no member of the group has held-out events in the gate window: not evaluated"}
    train = spark.read.parquet(train_path).persist()
    relevant = spark.read.parquet(relevant_path).select("member_id", "subclass_brand_id").persist()
    candidates = spark.read.parquet(f"{features}/gate/candidates")
    members = relevant.select("member_id").distinct()
    seen = train.select("member_id", "subclass_brand_id")
    with timed(log, f"quality gate: training group {group}'s ALS on the gate's training part"):
        model = als.fit(train, params)
    model_top = evaluation.top_k_unseen(
        evaluation.only(als.member_scores(model, train, members), candidates), seen, k)
    popularity_top = evaluation.top_k_unseen(evaluation.popularity_scores(train, members, k, candidates), seen, k)
    result = {"evaluated": True, "k": k, "margin": margin,
              "model": evaluation.evaluate(model_top, relevant, k),
              "popularity": evaluation.evaluate(popularity_top, relevant, k)}
    train.unpersist()
    relevant.unpersist()
    return judge(result)


def judge(gate: dict) -> dict:
    """Pass when the model's NDCG@k >= popularity's - margin; says why not otherwise."""
    model, baseline, margin, k = gate["model"]["ndcg@k"], gate["popularity"]["ndcg@k"], gate["margin"], gate["k"]
    passed = model >= baseline - margin
    reason = (f"NDCG@{k} {model:.4f} >= popularity {baseline:.4f} - margin {margin}" if passed else
              f"NDCG@{k} {model:.4f} is below popularity {baseline:.4f} - margin {margin}")
    return {**gate, "passed": passed, "reason": reason}


def last_good_model(fs: LakeFS, root: str, group: str, dt: date) -> str | None:
    """The newest day before `dt` whose model of `group` was served (and still exists)."""
    days = [name[len("dt="):] for name in fs.list_dirs(f"{root}/models") if name.startswith("dt=")]
    for day in sorted((d for d in days if d < dt.isoformat()), reverse=True):
        folder = lake.models(day, group, root)
        if not (fs.exists(f"{folder}/metrics.json") and fs.exists(f"{folder}/model")
                and fs.exists(f"{lake.features(day, root)}/members")):
            continue
        if fs.read_json(f"{folder}/metrics.json").get("served_from") == SERVED_FROM_MODEL:
            return day
    return None


def factors_by_today(user_factors: DataFrame, then_members: DataFrame, today: DataFrame) -> DataFrame:
    """An earlier day's user factors re-keyed to today's member_sk via member_id (member_sk is
    numbered per day); members unknown then are left out (they get the fallback payload)."""
    then = then_members.select("member_id", F.col("member_sk").alias("id"))
    return (user_factors.join(then, "id").join(today.select("member_id", "member_sk"), "member_id")
            .select(F.col("member_sk").alias("id"), "features"))


def popularity_affinity(ratings: DataFrame, candidates: DataFrame, k: int) -> DataFrame:
    """(member_sk, subclass_brand_id, affinity, affinity_rank): every member of the group gets
    the group's most popular candidates; affinity = share of the group's members who rated it."""
    members = ratings.select("member_sk").distinct()
    total = members.count()
    order = Window.orderBy(F.desc("affinity"), F.asc("subclass_brand_id"))
    top = (evaluation.only(evaluation.popularity(ratings), candidates)
           .withColumn("affinity", F.col("score") / F.lit(float(max(total, 1))))
           .withColumn("affinity_rank", F.row_number().over(order)).where(F.col("affinity_rank") <= k)
           .select("subclass_brand_id", "affinity", "affinity_rank"))
    return members.crossJoin(F.broadcast(top))


def main(argv: list[str] | None = None) -> None:
    started_job = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv, group=True)
    dt, group = date.fromisoformat(args.dt), args.group
    params = group_settings(config, "als", group)
    gate_cfg = config["evaluation"]
    spark = spark_session(f"flashfeed-als-{dt}-group-{group}", config)
    fs = LakeFS(spark)

    # Extract
    features = lake.features(dt, root)
    ratings_path = f"{features}/ratings/group={group}"
    log.info("group %s on %s: reads %s, %s and %s; als rank=%s maxIter=%s regParam=%s alpha=%s top_k=%s; "
             "gate k=%s margin=%s", group, dt, ratings_path, lake.raw("catalog", dt, root),
             lake.raw("sale_calendar", dt, root), params["rank"], params["max_iter"], params["reg_param"],
             params["alpha"], params["top_k"], gate_cfg["k"], gate_cfg["gate_ndcg_margin"])
    fs.require(features, f"features for {dt}", features_next_step(dt))
    if not fs.exists(ratings_path):
        known = fs.read_json(f"{features}/groups.json")["groups"]
        raise JobError(
            f"group {group!r} has no ratings on {dt} ({ratings_path} does not exist); groups of that day: {known}",
            "the features were rebuilt with other groups after this run planned its tasks: clear discover_groups "
            "of this run (with its downstream tasks) so that the mapped tasks follow the day's groups.json",
        )
    ratings = check_columns(spark.read.parquet(ratings_path),
                            ("member_id", "member_sk", "subclass_brand_id", "rating"), "ratings", ratings_path,
                            f"re-run build_features of flashfeed_daily_model for {dt}").persist()
    catalog = catalog_t.with_subclass_brand(read_raw(spark, fs, "catalog", dt, root))
    window_start, window_end = calendar.day_window(dt, config)
    live = scoring.live_products(read_raw(spark, fs, "sale_calendar", dt, root), window_start, window_end)
    candidates = affinity_t.saleable_subclass_brands(live, catalog, int(config["scoring"]["min_qty_on_hand"])).persist()

    members = ratings.select("member_sk").distinct().count()
    items = ratings.select("subclass_brand_id").distinct().count()
    n_ratings = ratings.count()
    n_candidates = candidates.count()
    blocks, divisor = als.blocks_for(members, params)
    size = "small" if divisor == int(params["user_blocks_divisor_small"]) else "large"
    log.info("group %s on %s: %d members, %d subclass-brands, %d ratings; %d saleable candidates",
             group, dt, members, items, n_ratings, n_candidates)
    log.info("user blocks: %d (%s group, divisor %d, threshold %s)", blocks, size, divisor,
             params["user_blocks_threshold"])
    if n_candidates == 0:
        raise JobError(
            f"no subclass-brand has {config['scoring']['min_qty_on_hand']}+ on hand in any launch window of {dt} "
            f"({window_start} .. {window_end} UTC) in {lake.raw('sale_calendar', dt, root)}: nothing to predict",
            raw_next_step("sale_calendar", dt),
        )
    k = int(params["top_k"])
    if n_candidates < k:
        log.warning("top_k %d is higher than the %d saleable subclass-brands; keeping %d per member", k, n_candidates,
                    n_candidates)
        k = n_candidates

    # Transform: quality gate, then the day's model (both before anything is written)
    models = lake.models(dt, group, root)
    checkpoints = models + ".__checkpoints"
    spark.sparkContext.setCheckpointDir(checkpoints)
    model, gate, fallback_reason = None, None, None
    started = time.monotonic()
    try:
        gate = quality_gate(spark, fs, features, group, params, int(gate_cfg["k"]),
                            float(gate_cfg["gate_ndcg_margin"]))
        if gate["evaluated"]:
            log.info("quality gate %s in %.1f s: %s (model: recall@%d %.4f on %d members; popularity: recall@%d %.4f)",
                     "PASSED" if gate["passed"] else "FAILED", time.monotonic() - started, gate["reason"],
                     gate["k"], gate["model"]["recall@k"], gate["model"]["members"], gate["k"],
                     gate["popularity"]["recall@k"])
        else:
            log.warning("quality gate skipped: %s", gate["reason"])
        # One fit call: Spark ML reports no per-iteration progress, so the line before says how
        # much work it is and the line after how long it took.
        with timed(log, f"training group {group}'s ALS on {n_ratings} ratings ({params['max_iter']} iterations, "
                        f"rank {params['rank']}, {blocks} user blocks)"):
            model = als.estimator(params, blocks).fit(ratings)
    except Exception as error:  # noqa: BLE001 - any training failure falls back, with its cause logged
        fallback_reason = f"training failed: {first_line(error)}"
        gate = gate or {"evaluated": False, "passed": False, "reason": fallback_reason}
        log.error("ALS training of group %s FAILED (%s); the group falls back. Next step: fix the cause (e.g. "
                  "the group's als settings in include/flashfeed.yaml), then clear this map index", group,
                  fallback_reason)
    if model is not None and not gate["passed"]:
        fallback_reason = f"quality gate failed: {gate['reason']}"

    # Transform: affinities from today's model, the last good one, or popularity
    if fallback_reason is None:
        served_from = SERVED_FROM_MODEL
        candidate_factors = model.itemFactors.join(candidates, F.col("id") == F.col("subclass_brand_id"), "left_semi")
        top = affinity_t.top_k_affinities(model.userFactors, candidate_factors, k)
    else:
        good_day = last_good_model(fs, root, group, dt)
        if good_day:
            served_from = f"last_good_model:{good_day}"
            earlier = ALSModel.load(f"{lake.models(good_day, group, root)}/model")
            users = factors_by_today(earlier.userFactors, spark.read.parquet(f"{lake.features(good_day, root)}/members"),
                                     ratings.select("member_id", "member_sk").distinct())
            candidate_factors = earlier.itemFactors.join(candidates, F.col("id") == F.col("subclass_brand_id"), "left_semi")
            top = affinity_t.top_k_affinities(users, candidate_factors, k)
        else:
            served_from = SERVED_FROM_POPULARITY
            top = popularity_affinity(ratings, candidates, k)
        log.warning("group %s is served from %s because %s", group, served_from, fallback_reason)
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
    log.info("affinities: %d rows for %d of %d members (%d candidates), from %s", rows, scored_members, members,
             n_candidates, served_from)
    with staged_partition(fs, models, log) as staging:
        if model is not None:   # kept even when the gate refused it, for inspection
            model.write().overwrite().save(f"{staging}/model")
        fs.write_json(f"{staging}/metrics.json", {
            "dt": dt.isoformat(), "group": group, "members": members, "subclass_brands": items,
            "ratings": n_ratings, "candidates": n_candidates, "top_k": k, "affinity_rows": rows,
            "members_scored": scored_members, "user_blocks": blocks, "user_blocks_divisor": divisor,
            "gate": gate, "served_from": served_from, "fallback_reason": fallback_reason,
            "params": {key: params[key] for key in ("rank", "max_iter", "reg_param", "alpha", "item_blocks", "seed")},
        })
    fs.delete(checkpoints)
    log.info("group %s on %s done in %.1f s (served from %s): wrote %s and %s", group, dt,
             time.monotonic() - started_job, served_from, lake.affinity(dt, group, root), models)
    spark.stop()


if __name__ == "__main__":
    run_job(main, log)
