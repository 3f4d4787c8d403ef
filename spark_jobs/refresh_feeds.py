"""Freshness: rebuild the served payloads of the members who acted in the newest quarter hour.

Reads   raw/events_intraday/dt=*/hhmm=* (the quarter hours sealed since D 00:00 UTC, up to the
        quarter), raw/catalog/dt=D, features/dt=D/events (the look-back's events), affinity/dt=D,
        products/dt=D/launch=HHMM, related/dt=D, feeds/dt=D/launch=HHMM/manifest.json (the
        served version's experiment)
Writes  feeds/dt=D/launch=HHMM/refresh/quarter=Q/{<feed>_<variant>[.<experiment variant>]/part-*.json,
        manifest.json}: the six collections and `because` of every member with an event in the
        quarter hour Q, with her recent-activity boost and recent views recomputed from every
        event up to the quarter's end. `flashfeed_freshness` then writes them into the served
        table (flashfeed.serving.loader.refresh_served).
Re-run  `spark-submit spark_jobs/refresh_feeds.py --dt D --launch HHMM --quarter YYYYMMDDtHHMM`
        replaces that quarter's partition only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flashfeed.core import calendar, experiments, lake
from spark_jobs.build_collections import files_per_data_set, launch_frames, member_lines, size_stats, write_lines
from spark_jobs.common import (
    LakeFS,
    check_contract,
    features_next_step,
    get_logger,
    parse_job_args,
    read_contract,
    read_raw,
    run_job,
    spark_session,
    staged_partition,
)
from spark_jobs.transforms import catalog as catalog_t
from spark_jobs.transforms import cleaning, groups
from spark_jobs.transforms import related as related_t

log = get_logger("refresh_feeds")
QUARTER = timedelta(minutes=lake.QUARTER_MINUTES)
QUARTER_FORMAT = "%Y%m%dt%H%M"


def quarter_starts(since: datetime, last: datetime) -> list[datetime]:
    """The quarter hours from `since` (a quarter boundary) to `last`, inclusive."""
    count = int((last - since) / QUARTER) + 1
    return [since + i * QUARTER for i in range(max(count, 0))]


def parse_quarter(value: str) -> datetime:
    quarter = datetime.strptime(value, QUARTER_FORMAT).replace(tzinfo=timezone.utc)
    if quarter.minute % lake.QUARTER_MINUTES:
        raise ValueError(f"--quarter {value} does not start a quarter hour (minute 00, 15, 30 or 45)")
    return quarter


def acted_members(clean_intraday, quarter: datetime):
    """(member_id, newest_event_at) of the members with an event in the quarter hour."""
    in_quarter = (F.col("occurred_at") >= F.lit(quarter)) & (F.col("occurred_at") < F.lit(quarter + QUARTER))
    return clean_intraday.where(in_quarter).groupBy("member_id").agg(F.max("occurred_at").alias("newest_event_at"))


@dataclass
class RefreshInputs:
    slot: calendar.LaunchSlot
    quarter: datetime                   # start of the quarter hour refreshed
    quarters: list[datetime]            # the sealed quarter hours read
    intraday: DataFrame                 # their events (lake contract)
    catalog: DataFrame                  # with its subclass-brand, persisted
    day_events: DataFrame               # features/dt=D/events (the look-back's)
    affinity: DataFrame                 # every group's affinities
    products: DataFrame                 # persisted
    related: DataFrame                  # related/dt=D/related
    experiment: experiments.Experiment | None   # the served version's (its manifest)
    paths: dict[str, str]               # features, affinity, products, related


@dataclass
class RefreshOutputs:
    lines: DataFrame                    # the acted members' payload lines, persisted
    acted: DataFrame                    # member_id, newest_event_at; persisted


def refresh_manifest(inputs: RefreshInputs, quarter_name: str, members: int, data_sets: dict,
                     newest_events: tuple | None) -> dict:
    """The quarter's manifest, in the launch's format (flashfeed.serving.loader reads it)."""
    manifest = {
        "version": inputs.slot.version, "quarter": quarter_name, "quarter_end": (inputs.quarter + QUARTER).isoformat(),
        "members": members, "data_sets": data_sets,
        "total_payloads": sum(d["payloads"] for d in data_sets.values()),
        # each acted member's newest event: the refresh's delay from event to served payload
        "newest_event_at": dict(zip(("min", "p50", "max"), newest_events, strict=True)) if newest_events else None,
        "inputs": {"intraday_quarters": len(inputs.quarters), **inputs.paths},
    }
    if inputs.experiment:
        manifest["experiment"] = inputs.experiment.as_dict()
    return manifest


def extract(spark, fs: LakeFS, slot: calendar.LaunchSlot, quarter: datetime, config: dict,
            root: str) -> RefreshInputs:
    """Every input once it is complete; the quarter hours sealed since D 00:00 UTC."""
    cutoff = datetime.combine(slot.dt, datetime.min.time(), timezone.utc)     # the features' end
    features, affinity_day = lake.features(slot.dt, root), lake.affinity(slot.dt, root=root)
    products_path, related_day = lake.products(slot.dt, slot.hhmm, root), lake.related(slot.dt, root)
    newest = lake.intraday_events(quarter.date(), quarter.strftime("%H%M"), root)
    fs.require(newest, f"intraday events of {quarter:%Y-%m-%d %H:%M} UTC",
               "the upstream export seals each quarter hour with _SUCCESS; when it arrives, clear this task")
    for partition, what in ((features, f"features for {slot.dt}"), (affinity_day, f"affinities for {slot.dt}"),
                            (products_path, f"product scores of {slot.version}"),
                            (related_day, f"related subclass-brands for {slot.dt}"),
                            (lake.feeds(slot.dt, slot.hhmm, root), f"the feeds of {slot.version}")):
        fs.require(partition, what, features_next_step(slot.dt) if partition == features else
                   f"the served version {slot.version} was built from it: re-run its launch, then clear this task")
    quarters = [q for q in quarter_starts(cutoff, quarter)
                if fs.exists(lake.success(lake.intraday_events(q.date(), q.strftime("%H%M"), root)))]
    log.info("refresh of %s after the quarter hour %s UTC: %d sealed quarter hours since %s (%s .. %s); recent "
             "days %s, because view days %s", slot.version, f"{quarter:%Y-%m-%d %H:%M}", len(quarters), cutoff,
             quarters[0], quarters[-1], config["features"]["recent_days"], config["because"]["view_days"])
    sealed = [lake.intraday_events(q.date(), q.strftime("%H%M"), root) for q in quarters]
    check_contract("events", sealed, "fix the upstream export of these quarter hours, then clear this task")
    intraday = read_contract(spark, "events", sealed)
    catalog = catalog_t.with_subclass_brand(read_raw(spark, fs, "catalog", slot.dt, root)).persist()
    groups_of_day = fs.read_json(f"{affinity_day}/groups.json")["groups"]
    return RefreshInputs(
        slot, quarter, quarters, intraday, catalog, spark.read.parquet(f"{features}/events"),
        spark.read.parquet(*[lake.affinity(slot.dt, g, root) for g in groups_of_day]),
        spark.read.parquet(products_path).persist(), spark.read.parquet(f"{related_day}/{lake.RELATED}"),
        # the served version's experiment (its manifest), whatever the config says now
        experiments.from_dict(fs.read_json(f"{lake.feeds(slot.dt, slot.hhmm, root)}/manifest.json").get("experiment")),
        {"features": features, "affinity": affinity_day, "products": products_path, "related": related_day})


def transform(inputs: RefreshInputs, config: dict, root: str) -> RefreshOutputs:
    """Clean the intraday events (counted; refused when too many are rejected), the members who
    acted in the quarter, their recent activity and their payloads."""
    cfg, because, catalog = config["collections"], config["because"], inputs.catalog
    quarter_end = inputs.quarter + QUARTER
    labelled = cleaning.label_events(inputs.intraday, catalog, config["cleaning"]["event_types"],
                                     quarter_end).persist()
    reasons = cleaning.reject_summary(labelled)
    kept = reasons.pop(None, 0)
    log.info("intraday events read: %d; kept %d; rejected %d %s", kept + sum(reasons.values()), kept,
             sum(reasons.values()), reasons or "")
    # The rejects are logged, not kept: the day's build_features keeps them once the day is complete.
    cleaning.check_reject_share(kept + sum(reasons.values()), reasons, config["cleaning"]["max_reject_share"],
                                f"the intraday events under {lake.intraday_events('*', '*', root)}",
                                "this task (refresh_payloads)")
    clean, _ = cleaning.split_labelled(labelled)
    clean = clean.join(catalog.select("style_id", "subclass_brand_id"), "style_id").select(*related_t.EVENT_COLUMNS)
    acted = acted_members(clean, inputs.quarter).persist()
    recent = (inputs.day_events.select(*related_t.EVENT_COLUMNS).unionByName(clean)
              .join(F.broadcast(acted.select("member_id")), "member_id"))
    recent_since = quarter_end - timedelta(days=config["features"]["recent_days"])
    interest = groups.recent_interest(recent, catalog, recent_since, cfg["boost_top_subclasses"])
    views = related_t.recent_views(recent, quarter_end - timedelta(days=because["view_days"]),
                                   because["event_types"], because["carousels"]).join(
        catalog.select("style_id", "brand", "subclass"), "style_id")
    affinity = inputs.affinity.join(F.broadcast(acted.select("member_id")), "member_id")
    names, member_affinity, sb_styles = launch_frames(inputs.products, affinity)
    lines = member_lines(inputs.products.sparkSession, member_affinity, interest, None, views, sb_styles, names,
                         inputs.related, config, inputs.slot.version, inputs.experiment).persist()
    return RefreshOutputs(lines, acted)


def load(fs: LakeFS, inputs: RefreshInputs, outputs: RefreshOutputs, quarter_name: str, cfg: dict,
         partition: str) -> dict:
    """The quarter's partition with its manifest (only the manifest when no member acted)."""
    members = outputs.acted.count()
    stats = size_stats(outputs.lines) if members else {}
    iso = "yyyy-MM-dd'T'HH:mm:ss'+00:00'"        # the session's time zone is UTC (spark_session)
    newest_events = outputs.acted.agg(*[F.date_format(f, iso) for f in (
        F.min("newest_event_at"), F.percentile_approx("newest_event_at", 0.5), F.max("newest_event_at"))]).first() \
        if members else None
    with staged_partition(fs, partition, log) as staging:
        files = files_per_data_set(members, cfg["payloads_per_file"])
        described = write_lines(fs, outputs.lines, staging, files) if members else {}
        data_sets = {name: {**stats[name], "files": described.get(name, [])} for name in sorted(stats)}
        manifest = refresh_manifest(inputs, quarter_name, members, data_sets, newest_events)
        fs.write_json(f"{staging}/manifest.json", manifest)
    if not members:
        log.info("no member acted in the quarter hour %s: nothing to refresh", quarter_name)
    return manifest


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv, launch=True, extra=[
        ("--quarter", "start of the newest quarter hour, UTC, YYYYMMDDtHHMM")])
    slot, quarter = calendar.slot(date.fromisoformat(args.dt), args.launch, config), parse_quarter(args.quarter)
    spark = spark_session(f"flashfeed-refresh-{slot.version}-{args.quarter}", config)
    fs = LakeFS(spark)
    inputs = extract(spark, fs, slot, quarter, config, root)
    outputs = transform(inputs, config, root)
    partition = lake.refresh(slot.dt, slot.hhmm, args.quarter, root)
    manifest = load(fs, inputs, outputs, args.quarter, config["collections"], partition)
    log.info("refresh of %s after %s done in %.1f s: %d members acted, %d payloads in %s", slot.version, args.quarter,
             time.monotonic() - started, manifest["members"], manifest["total_payloads"], partition)
    spark.stop()


if __name__ == "__main__":
    run_job(main, log)
