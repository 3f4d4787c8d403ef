"""Features for day D: clean events, implicit ratings, member groups, recent interest, style activity.

Reads   raw/events and raw/returns for the look-back days before D (UTC dates), raw/catalog/dt=D
Writes  features/dt=D/{ratings (by group), members, recent_interest, style_activity, groups.json,
        gate/{train_ratings, relevant (by group), candidates}: the quality gate's time split}
        rejects/dt=D/ (every rejected event with its reason)
Re-run  `spark-submit spark_jobs/features.py --dt D` replaces both partitions of day D only.
"""
from __future__ import annotations

import time as clock
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import functions as F

from flashfeed import lake
from flashfeed.demo_data import SCHEMAS
from spark_jobs.common import (
    JobError,
    LakeFS,
    check_columns,
    get_logger,
    parse_job_args,
    raw_next_step,
    read_raw,
    run_job,
    spark_session,
    staged_partition,
    timed,
)
from spark_jobs.transforms import catalog as catalog_t
from spark_jobs.transforms import cleaning, evaluation, groups, ratings, scoring

log = get_logger("features")
DAYS_PER_MONTH = 30


def read_daily(spark, fs: LakeFS, dataset: str, days: list[date], root: str):
    """Union of the daily partitions that exist; the newest day must be complete.

    Days before the oldest complete one are history the lake does not hold (yet); a missing
    day between two complete ones is a failed import, counted as no events: a warning.
    """
    fs.require(lake.raw(dataset, days[0], root), f"raw {dataset} for {days[0]}", raw_next_step(dataset, days[0]))
    present = [d for d in days if fs.exists(lake.success(lake.raw(dataset, d, root)))]
    gaps = [d for d in days if d not in present and d > present[-1]]
    log.info("reading %s: %d of %d daily partitions present (%s .. %s) under %s", dataset, len(present), len(days),
             present[-1], present[0], lake.raw(dataset, "*", root))
    if gaps:
        log.warning("raw %s has no complete partition for %d days between %s and %s (%s): they count as no %s. "
                    "If they should exist, re-import them and re-run build_features", dataset, len(gaps),
                    present[-1], present[0], ", ".join(str(d) for d in sorted(gaps)[:10]) +
                    (" ..." if len(gaps) > 10 else ""), dataset)
    frame = spark.read.parquet(*[lake.raw(dataset, d, root) for d in present])
    # Spark takes the schema of the union from one file, so the message names the whole range.
    return check_columns(frame, SCHEMAS[dataset].names, f"raw {dataset} of {present[-1]} .. {present[0]}",
                         lake.raw(dataset, "*", root), raw_next_step(dataset, days[0]))


def quality_gate_split(events, catalog, members, weights: dict, holdout_days: int):
    """The daily quality gate's time split (each member's last `holdout_days` held out), as
    (training ratings with member_sk and group, relevant pairs with group, live candidates):
    each group's model is trained on the first and must find the second (evaluation.py)."""
    train, test = evaluation.time_split(events, holdout_days)
    train_ratings = ratings.implicit_ratings(train, catalog, weights).join(
        members.select("member_id", "member_sk", "group"), "member_id")
    test_ratings = ratings.implicit_ratings(test, catalog, weights)
    relevant = evaluation.relevant_items(train_ratings, test_ratings).join(members.select("member_id", "group"), "member_id")
    return train_ratings, relevant, test_ratings.select("subclass_brand_id").distinct()


def main(argv: list[str] | None = None) -> None:
    started = clock.monotonic()
    args, config, root = parse_job_args(__doc__, argv)
    dt = date.fromisoformat(args.dt)
    feats, scoring_cfg = config["features"], config["scoring"]
    spark = spark_session(f"flashfeed-features-{dt}", config)
    fs = LakeFS(spark)
    # Rebuilding day D: its affinities stay unsealed until publish_affinity seals them again,
    # so that no launch reads a mix of old and new groups meanwhile.
    day_seal = lake.success(lake.affinity(dt, root=root))
    if fs.exists(day_seal):
        fs.delete(day_seal)
        log.info("unsealed %s while day %s is rebuilt", day_seal, dt)

    # Events of UTC dates before D; the cutoff is midnight UTC starting D (nothing may be newer).
    cutoff = datetime.combine(dt, time(0), timezone.utc)
    interaction_days = int(scoring_cfg["interaction_months"]) * DAYS_PER_MONTH
    history_days = max(int(feats["lookback_days"]), interaction_days)
    days = [dt - timedelta(days=i) for i in range(1, history_days + 1)]
    log.info("features for %s: events and returns of %s .. %s (UTC dates), raw catalog %s; lookback %s days, "
             "history %d days, recent %s days, max reject share %s, min group members %s; lake %s",
             dt, days[-1], days[0], lake.raw("catalog", dt, root), feats["lookback_days"], history_days,
             feats["recent_days"], config["cleaning"]["max_reject_share"], feats["min_group_members"], root)

    # Extract
    events = read_daily(spark, fs, "events", days, root)
    returns = read_daily(spark, fs, "returns", days, root)
    catalog = catalog_t.with_subclass_brand(read_raw(spark, fs, "catalog", dt, root))
    catalog.cache()
    # Materialises the cache the cleaning and the ratings read anyway; cheap (one row per style).
    styles = catalog.count()
    if styles == 0:
        raise JobError(f"raw catalog {lake.raw('catalog', dt, root)} has no styles: every event would be "
                       "rejected as unknown_style", raw_next_step("catalog", dt))
    catalog_t.check_key_collisions(catalog)
    log.info("catalog: %d styles", styles)

    # Transform: clean
    clean, rejects = cleaning.clean_events(events, catalog, config["cleaning"]["event_types"], cutoff)
    clean = clean.persist()
    kept = clean.count()
    with staged_partition(fs, lake.rejects(dt, root), log) as staging:
        rejects.write.mode("overwrite").parquet(staging)
    # Counted from the small written partition, not by scanning the raw events again.
    reasons = cleaning.reject_summary(spark.read.parquet(lake.rejects(dt, root)))
    rejected = sum(reasons.values())
    total = kept + rejected
    log.info("events read: %d; kept: %d; rejected: %d %s", total, kept, rejected, reasons or "")
    if total == 0:
        raise JobError(
            f"raw events of {days[-1]} .. {days[0]} hold no rows (newest: {lake.raw('events', days[0], root)})",
            raw_next_step("events", days[0]),
        )
    cleaning.check_reject_share(total, reasons, float(config["cleaning"]["max_reject_share"]), lake.rejects(dt, root))

    # Transform: ratings, groups, recent interest, style activity
    lookback_since = cutoff - timedelta(days=int(feats["lookback_days"]))
    in_lookback = clean.where(F.col("occurred_at") >= F.lit(lookback_since))
    rated = ratings.implicit_ratings(in_lookback, catalog, feats["event_weights"])
    names = catalog_t.subclass_brands(catalog)
    members, grouping, codes = groups.member_groups(rated, in_lookback, names, feats)
    members = members.persist()
    member_ratings = rated.join(members.select("member_id", "member_sk", "group"), "member_id")
    gate_train, gate_relevant, gate_candidates = quality_gate_split(
        in_lookback, catalog, members, feats["event_weights"], int(config["evaluation"]["gate_holdout_days"]))
    interest = groups.recent_interest(
        clean, catalog, cutoff - timedelta(days=int(feats["recent_days"])),
        int(config["collections"]["boost_top_subclasses"]),
    )
    activity = scoring.style_activity(
        clean, returns, cutoff - timedelta(days=interaction_days), cutoff - timedelta(days=scoring.EARLY_DAYS)
    )

    # Load
    partition = lake.features(dt, root)
    with timed(log, f"writing features for {dt}"), staged_partition(fs, partition, log) as staging:
        member_ratings.write.partitionBy("group").parquet(f"{staging}/ratings")
        members.write.parquet(f"{staging}/members")
        gate_train.write.partitionBy("group").parquet(f"{staging}/gate/train_ratings")
        gate_relevant.write.partitionBy("group").parquet(f"{staging}/gate/relevant")
        gate_candidates.write.parquet(f"{staging}/gate/candidates")
        interest.write.parquet(f"{staging}/recent_interest")
        activity.write.parquet(f"{staging}/style_activity")
        per_group = {
            str(r["group"]): {"ratings": int(r["ratings"]), "members": int(r["members"]), "subclass_brands": int(r["items"])}
            for r in spark.read.parquet(f"{staging}/ratings").groupBy("group").agg(
                F.count("*").alias("ratings"),
                F.countDistinct("member_id").alias("members"),
                F.countDistinct("subclass_brand_id").alias("items"),
            ).collect()
        }
        if not per_group:
            raise JobError(
                f"no member has a rating in the {feats['lookback_days']} days before {dt} ({kept} clean events "
                f"in {history_days} days): nothing to train",
                f"check that {lake.raw('events', '*', root)} holds the days before {dt} and that their styles are "
                f"in {lake.raw('catalog', dt, root)}; re-import what is missing, then clear build_features",
            )
        for group, counts in sorted(per_group.items()):
            log.info("group %s: %d members, %d subclass-brands, %d ratings",
                     group, counts["members"], counts["subclass_brands"], counts["ratings"])
        log.info("%d members in %d groups", sum(c["members"] for c in per_group.values()), len(per_group))
        if grouping["merged"]:
            log.info("small groups merged (min %s members): %s", feats["min_group_members"], grouping["merged"])
        fs.write_json(f"{staging}/groups.json", {
            "dt": dt.isoformat(),
            "groups": sorted(per_group),
            "per_group": per_group,
            "merged": grouping["merged"],
            "division_codes": codes,
            "events": {"read": total, "kept": kept, "rejected": reasons},
        })
    log.info("features for %s done in %.1f s: wrote %s (%d groups) and %s", dt, clock.monotonic() - started,
             partition, len(per_group), lake.rejects(dt, root))
    spark.stop()


if __name__ == "__main__":
    run_job(main, log)
