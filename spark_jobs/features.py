"""Features for day D: clean events, implicit ratings, member groups, recent interest, style activity.

Reads   raw/events and raw/returns for the look-back days before D (UTC dates), raw/catalog/dt=D,
        raw/sale_calendar/dt=D
Writes  features/dt=D/{ratings (by group), members, recent_interest, style_activity, groups.json,
        events (the clean events of the look-back with their subclass-brand: item-to-item and
        bought together, spark_jobs/related.py), recent_views (anchors of "because you viewed"),
        candidates (subclass-brands with stock on sale in any launch window of D and how many of
        their products a collection can show; shared by every group),
        gate/{ratings (by group, by part: train, validation, test), live (subclass-brands rated in each
        part)}: the quality gate's time split}
        rejects/dt=D/ (every rejected event with its reason)
Re-run  `spark-submit spark_jobs/features.py --dt D` replaces both partitions of day D only.
"""
from __future__ import annotations

import time as clock
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flashfeed.core import calendar, lake
from spark_jobs.common import (
    JobError,
    LakeFS,
    check_contract,
    get_logger,
    parse_job_args,
    raw_next_step,
    read_contract,
    read_raw,
    run_job,
    spark_session,
    staged_partition,
    timed,
)
from spark_jobs.transforms import affinity as affinity_t
from spark_jobs.transforms import catalog as catalog_t
from spark_jobs.transforms import cleaning, evaluation, groups, ratings, related, scoring

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
    partitions = [lake.raw(dataset, d, root) for d in present]
    # Every day's footer is checked: Spark would take the schema of the union from one file.
    check_contract(dataset, partitions, raw_next_step(dataset, days[0]))
    return read_contract(spark, dataset, partitions)


def quality_gate_split(ratings_by_part: DataFrame, members: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The daily quality gate's split, from ratings kept apart by `part` (train, validation,
    test; evaluation.mark_gate_parts): (every group's ratings by part with member_sk and group;
    the subclass-brands someone rated in each part, i.e. live then, shared by the groups). Each
    model is fit on the training part, tuned on the validation part and judged on the test part."""
    by_part = ratings_by_part.join(members.select("member_id", "member_sk", "group"), "member_id")
    return by_part, ratings_by_part.select("subclass_brand_id", "part").distinct()


def newest_complete_before(names: Iterable[str], dt: date, complete: Callable[[date], bool]) -> date | None:
    """The newest day before `dt` among partition folder `names` (dt=YYYY-MM-DD; others are
    ignored) for which `complete(day)`; looked at newest first, no further than the first."""
    days = sorted((date.fromisoformat(name[len("dt="):]) for name in names
                   if name.startswith("dt=") and len(name) == len("dt=YYYY-MM-DD")), reverse=True)
    return next((d for d in days if d < dt and complete(d)), None)


def previous_catalog_day(fs: LakeFS, dt: date, root: str) -> date | None:
    """The newest complete raw catalogue before `dt`, if the lake holds one."""
    return newest_complete_before(fs.list_dirs(f"{root}/raw/catalog"), dt,
                                  lambda d: fs.exists(lake.success(lake.raw("catalog", d, root))))


def check_catalog(spark, fs: LakeFS, catalog: DataFrame, dt: date, root: str, max_share: float) -> dict:
    """Refuse a catalogue listing a style under two subclass-brands, or moving more than
    `max_share` of the styles since the previous catalogue; log the moves below that. Every
    event is keyed by today's catalogue, so a moved style's whole history counts under its new
    subclass-brand."""
    uri = lake.raw("catalog", dt, root)
    conflicts = catalog_t.conflicting_styles(catalog).orderBy("style_id").limit(5).collect()
    if conflicts:
        raise JobError(f"raw catalog {uri} lists styles more than once with different subclass or brand: "
                       + "; ".join(f"{r.style_id}: {' | '.join(r.hierarchies)}" for r in conflicts),
                       raw_next_step("catalog", dt))
    previous_day = previous_catalog_day(fs, dt, root)
    if previous_day is None:
        log.info("catalog: no earlier catalogue in the lake, so changes of hierarchy are not checked")
        return {"previous": None}
    previous = catalog_t.with_subclass_brand(read_raw(spark, fs, "catalog", previous_day, root))
    changes = catalog_t.hierarchy_changes(catalog, previous).persist()
    counts = changes.agg(F.count("*").alias("in_both"), F.sum(F.col("changed").cast("int")).alias("changed")).first()
    in_both, changed = int(counts["in_both"]), int(counts["changed"] or 0)
    examples = "; ".join(f"{r.style_id}: {r.before} -> {r.after}"
                         for r in changes.where("changed").orderBy("style_id").limit(5).collect())
    changes.unpersist()
    problem = catalog_t.hierarchy_change_problem(changed, in_both, max_share)
    if problem:
        raise JobError(f"raw catalog {uri} against {lake.raw('catalog', previous_day, root)}: {problem}, e.g. "
                       f"{examples}", f"if the export is wrong, {raw_next_step('catalog', dt)}; if the "
                       "re-classification is intended, raise cleaning.max_hierarchy_change_share in "
                       "include/flashfeed.yaml for this run, then clear build_features")
    if changed:
        log.warning("catalog: %d of %d styles changed subclass or brand since %s; their history counts under the "
                    "new one: %s", changed, in_both, previous_day, examples)
    else:
        log.info("catalog: no style changed subclass or brand since %s (%d styles in both)", previous_day, in_both)
    return {"previous": previous_day.isoformat(), "styles_in_both": in_both, "hierarchy_changes": changed}


def history_window(dt: date, lookback_days: int, interaction_months: int) -> tuple[datetime, list[date], int]:
    """(cutoff: midnight UTC starting D, the UTC dates read newest first, days of interactions):
    the events of the days before D, as far back as the longer of the ratings' look-back and the
    scores' interaction months."""
    interaction_days = interaction_months * DAYS_PER_MONTH
    history_days = max(lookback_days, interaction_days)
    return (datetime.combine(dt, time(0), timezone.utc), [dt - timedelta(days=i) for i in range(1, history_days + 1)],
            interaction_days)


def reject_refusal(total: int, reasons: dict, limit: float, rejects_path: str) -> cleaning.TooManyRejects | None:
    """The refusal of the day when more than `limit` of its events were rejected, or None."""
    try:
        cleaning.check_reject_share(total, reasons, limit, rejects_path)
    except cleaning.TooManyRejects as refusal:
        return refusal
    return None


def per_group_counts(rows) -> dict[str, dict]:
    """Ratings, members and subclass-brands per group, from rows (group, ratings, members, items)."""
    return {str(r["group"]): {"ratings": int(r["ratings"]), "members": int(r["members"]),
                              "subclass_brands": int(r["items"])} for r in rows}


@dataclass
class FeatureInputs:
    dt: date
    root: str
    cutoff: datetime                 # midnight UTC starting D: nothing may be newer
    days: list[date]                 # the UTC dates read, newest first
    interaction_days: int
    events: DataFrame
    returns: DataFrame
    catalog: DataFrame               # with its subclass-brand, persisted
    sale_calendar: DataFrame
    catalog_check: dict              # against the previous catalogue (check_catalog)
    rejects_path: str


@dataclass
class FeatureOutputs:
    rejects: DataFrame
    events: dict                     # read, kept, rejected (by reason)
    refusal: JobError | None = None  # too many rejects: only the rejects are written
    frames: dict[str, tuple[DataFrame, bool]] = field(default_factory=dict)   # name -> (frame, by group)
    candidates: DataFrame | None = None
    grouping: dict = field(default_factory=dict)
    division_codes: dict = field(default_factory=dict)
    window: tuple[datetime, datetime] | None = None


def extract(spark, fs: LakeFS, dt: date, config: dict, root: str) -> FeatureInputs:
    """Read the raw partitions of the look-back (checked against the lake contract) and check
    the day's catalogue."""
    feats = config["features"]
    cutoff, days, interaction_days = history_window(dt, feats["lookback_days"],
                                                    config["scoring"]["interaction_months"])
    log.info("features for %s: events and returns of %s .. %s (UTC dates), raw catalog %s, raw sale calendar %s; "
             "lookback %s days, history %d days, recent %s days, max reject share %s, min group members %s; lake %s",
             dt, days[-1], days[0], lake.raw("catalog", dt, root), lake.raw("sale_calendar", dt, root),
             feats["lookback_days"], len(days), feats["recent_days"], config["cleaning"]["max_reject_share"],
             feats["min_group_members"], root)
    events = read_daily(spark, fs, "events", days, root)
    returns = read_daily(spark, fs, "returns", days, root)
    catalog = catalog_t.with_subclass_brand(read_raw(spark, fs, "catalog", dt, root)).persist()
    sale_calendar = read_raw(spark, fs, "sale_calendar", dt, root)
    styles = catalog.count()
    if styles == 0:
        raise JobError(f"raw catalog {lake.raw('catalog', dt, root)} has no styles: every event would be "
                       "rejected as unknown_style", raw_next_step("catalog", dt))
    catalog_t.check_key_collisions(catalog)
    log.info("catalog: %d styles", styles)
    catalog_check = check_catalog(spark, fs, catalog, dt, root, config["cleaning"]["max_hierarchy_change_share"])
    return FeatureInputs(dt, root, cutoff, days, interaction_days, events, returns, catalog, sale_calendar,
                         catalog_check, lake.rejects(dt, root))


def transform(inputs: FeatureInputs, config: dict) -> FeatureOutputs:
    """Clean, then ratings, groups, the quality gate's split, recent interest, style activity and
    candidates; only the rejects when too many events were rejected."""
    feats, cutoff, catalog = config["features"], inputs.cutoff, inputs.catalog
    # The events are read once: every event is labelled with its reject reason (or none) and
    # cached; clean events, rejects and their counts all come from it.
    labelled = cleaning.label_events(inputs.events, catalog, config["cleaning"]["event_types"], cutoff).persist()
    reasons = cleaning.reject_summary(labelled)
    kept = reasons.pop(None, 0)
    rejected = sum(reasons.values())
    total = kept + rejected
    log.info("events read: %d; kept: %d; rejected: %d %s", total, kept, rejected, reasons or "")
    if total == 0:
        raise JobError(
            f"raw events of {inputs.days[-1]} .. {inputs.days[0]} hold no rows "
            f"(newest: {lake.raw('events', inputs.days[0], inputs.root)})",
            raw_next_step("events", inputs.days[0]),
        )
    clean, rejects = cleaning.split_labelled(labelled)
    counts = {"read": total, "kept": kept, "rejected": reasons}
    refusal = reject_refusal(total, reasons, config["cleaning"]["max_reject_share"], inputs.rejects_path)
    if refusal:
        return FeatureOutputs(rejects, counts, refusal)

    lookback_since = cutoff - timedelta(days=feats["lookback_days"])
    in_lookback = clean.where(F.col("occurred_at") >= F.lit(lookback_since))
    # Ratings kept apart by the gate's parts, once: the day's ratings are their sums.
    gate_cfg = config["evaluation"]
    parts = evaluation.mark_gate_parts(in_lookback, gate_cfg["gate_holdout_days"],
                                       gate_cfg["gate_validation_days"])
    ratings_by_part = ratings.implicit_ratings(parts, catalog, feats["event_weights"], by=("part",),
                                               recency=(cutoff, feats["history_half_life_days"])).persist()
    rated = ratings_by_part.groupBy("member_id", "subclass_brand_id").agg(
        F.sum("rating").alias("rating"), F.sum("recent_rating").alias("recent_rating")).persist()
    members, grouping, codes = groups.member_groups(rated, in_lookback, catalog_t.subclass_brands(catalog), feats)
    members = members.persist()
    gate_ratings, gate_live = quality_gate_split(ratings_by_part, members)
    interest = groups.recent_interest(clean, catalog, cutoff - timedelta(days=feats["recent_days"]),
                                      config["collections"]["boost_top_subclasses"])
    lookback_events = in_lookback.join(catalog.select("style_id", "subclass_brand_id"), "style_id").select(
        *related.EVENT_COLUMNS)
    because = config["because"]
    views = related.recent_views(lookback_events, cutoff - timedelta(days=because["view_days"]),
                                 because["event_types"], because["carousels"]).join(
        catalog.select("style_id", "brand", "subclass"), "style_id")
    activity = scoring.style_activity(clean, inputs.returns, cutoff - timedelta(days=inputs.interaction_days),
                                      cutoff - timedelta(days=scoring.EARLY_DAYS))
    window = calendar.day_window(inputs.dt, config)
    candidates = affinity_t.saleable_subclass_brands(
        scoring.live_products(inputs.sale_calendar, *window), catalog, config["scoring"]["min_qty_on_hand"],
        config["scoring"]["products_per_subclass_brand"])
    frames = {"ratings": (rated.join(members.select("member_id", "member_sk", "group"), "member_id"), True),
              "members": (members, False), "gate/ratings": (gate_ratings, True), "gate/live": (gate_live, False),
              "recent_interest": (interest, False), "style_activity": (activity, False),
              "events": (lookback_events, False), "recent_views": (views, False)}
    return FeatureOutputs(rejects, counts, None, frames, candidates, grouping, codes, window)


def load(spark, fs: LakeFS, inputs: FeatureInputs, outputs: FeatureOutputs, config: dict, root: str) -> dict:
    """Write the rejects (refusing the day after them when there are too many), then every
    feature and groups.json; returns the groups' counts."""
    dt, feats = inputs.dt, config["features"]
    with staged_partition(fs, inputs.rejects_path, log) as staging:
        outputs.rejects.write.mode("overwrite").parquet(staging)
    if outputs.refusal:
        raise outputs.refusal
    (window_start, window_end), min_qty = outputs.window, config["scoring"]["min_qty_on_hand"]
    with timed(log, f"writing features for {dt}"), staged_partition(fs, lake.features(dt, root), log) as staging:
        outputs.candidates.write.mode("overwrite").parquet(f"{staging}/candidates")
        n_candidates = spark.read.parquet(f"{staging}/candidates").count()
        if n_candidates == 0:
            raise JobError(
                f"no subclass-brand has {min_qty}+ on hand in any launch window of {dt} ({window_start} .. "
                f"{window_end} UTC) in {lake.raw('sale_calendar', dt, root)}: nothing to recommend",
                raw_next_step("sale_calendar", dt),
            )
        for name, (frame, by_group) in outputs.frames.items():
            with timed(log, f"writing {name}"):
                (frame.write.partitionBy("group") if by_group else frame.write).mode("overwrite").parquet(
                    f"{staging}/{name}")
        per_group = per_group_counts(spark.read.parquet(f"{staging}/ratings").groupBy("group").agg(
            F.count("*").alias("ratings"), F.countDistinct("member_id").alias("members"),
            F.countDistinct("subclass_brand_id").alias("items")).collect())
        if not per_group:
            raise JobError(
                f"no member has a rating in the {feats['lookback_days']} days before {dt} "
                f"({outputs.events['kept']} clean events in {len(inputs.days)} days): nothing to train",
                f"check that {lake.raw('events', '*', root)} holds the days before {dt} and that their styles are "
                f"in {lake.raw('catalog', dt, root)}; re-import what is missing, then clear build_features",
            )
        for group, counts in sorted(per_group.items()):
            log.info("group %s: %d members, %d subclass-brands, %d ratings",
                     group, counts["members"], counts["subclass_brands"], counts["ratings"])
        log.info("%d members in %d groups", sum(c["members"] for c in per_group.values()), len(per_group))
        log.info("%d saleable subclass-brands (candidates of every group) in %s .. %s UTC", n_candidates,
                 window_start, window_end)
        if outputs.grouping["merged"]:
            log.info("small groups merged (min %s members): %s", feats["min_group_members"], outputs.grouping["merged"])
        fs.write_json(f"{staging}/groups.json", {
            "dt": dt.isoformat(), "groups": sorted(per_group), "per_group": per_group,
            "merged": outputs.grouping["merged"], "division_codes": outputs.division_codes,
            "candidates": n_candidates, "events": outputs.events, "catalog": inputs.catalog_check,
        })
    return per_group


def unseal_day(fs: LakeFS, dt: date, root: str) -> None:
    """Rebuilding day D: its affinities stay unsealed until publish_affinity seals them again,
    so that no launch reads a mix of old and new groups meanwhile."""
    day_seal = lake.success(lake.affinity(dt, root=root))
    if fs.exists(day_seal):
        fs.delete(day_seal)
        log.info("unsealed %s while day %s is rebuilt", day_seal, dt)


def main(argv: list[str] | None = None) -> None:
    started = clock.monotonic()
    args, config, root = parse_job_args(__doc__, argv)
    dt = date.fromisoformat(args.dt)
    spark = spark_session(f"flashfeed-features-{dt}", config)
    fs = LakeFS(spark)
    unseal_day(fs, dt, root)
    inputs = extract(spark, fs, dt, config, root)
    per_group = load(spark, fs, inputs, transform(inputs, config), config, root)
    log.info("features for %s done in %.1f s: wrote %s (%d groups) and %s", dt, clock.monotonic() - started,
             lake.features(dt, root), len(per_group), lake.rejects(dt, root))
    spark.stop()


if __name__ == "__main__":
    run_job(main, log)
