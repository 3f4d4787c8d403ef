"""Small lake tasks of the DAGs: which partitions a run owns, which groups to train, publishing.

They run inside Airflow workers (plain Python, fsspec for the lake), never at DAG parse time.
"""
from __future__ import annotations

import json
import logging
from datetime import date, datetime, timedelta, timezone
from typing import Any

from flashfeed.core import calendar, lake
from flashfeed.core.config import lake_root, load_config
from flashfeed_airflow.aws import DEFAULT_AWS_CONN_ID, dynamodb_client

log = logging.getLogger(__name__)


def run_date(logical_date: datetime | None, run_after: datetime) -> datetime:
    """Manual runs without a logical date are planned from the time they were asked for."""
    return logical_date or run_after


def spark_submit_settings(config: dict | None = None) -> dict[str, str]:
    """What the DAGs' SparkSubmitOperators pass as `--conf` (schedules.spark_submit_conf): the
    driver's and the executors' memory from config `spark` (in local mode the driver does all
    the work and the executor setting is unused)."""
    spark = (config or load_config())["spark"]
    return {"spark.driver.memory": spark["driver_memory"], "spark.executor.memory": spark["executor_memory"]}


def plan_model_day(when: datetime) -> dict[str, Any]:
    """Partitions of one daily-model run: day D (local date of the run) and its inputs."""
    dt = calendar.model_date_for_run(when)
    root = lake_root()
    previous = dt - timedelta(days=1)
    plan = {
        "dt": dt.isoformat(),
        "raw": {
            "events": lake.raw("events", previous, root),
            "returns": lake.raw("returns", previous, root),
            "catalog": lake.raw("catalog", dt, root),
            "sale_calendar": lake.raw("sale_calendar", dt, root),
        },
        "features": lake.features(dt, root),
        "models": lake.models(dt, root=root),
        "affinity": lake.affinity(dt, root=root),
        "spark_submit": spark_submit_settings(),
    }
    log.info("daily model for %s: reads events up to %s, writes %s and %s",
             dt, previous, plan["features"], plan["affinity"])
    return plan


def plan_tune_week(when: datetime) -> dict[str, Any]:
    """The weekly tune's day D (as the daily model's) and where it writes the chosen settings."""
    dt = calendar.model_date_for_run(when)
    plan = {"dt": dt.isoformat(), "tuning": lake.tuning(dt, lake_root()), "spark_submit": spark_submit_settings()}
    log.info("weekly tune on the history before %s: writes %s/settings.json", dt, plan["tuning"])
    return plan


def plan_refresh(when: datetime, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> dict[str, Any]:
    """One freshness run: the quarter hour that ended at or before `when` (UTC), the version
    served now (read from the control item) and its lake partitions. Raises LookupError when
    nothing is served."""
    from flashfeed.serving import control

    utc = when.astimezone(timezone.utc).replace(second=0, microsecond=0)
    quarter = utc - timedelta(minutes=utc.minute % lake.QUARTER_MINUTES + lake.QUARTER_MINUTES)
    served = control.served_version(dynamodb_client(aws_conn_id), None)
    if served is None:
        raise LookupError("nothing is served yet: no version to refresh")
    version = served["version"]
    dt, launch = date(int(version[:4]), int(version[4:6]), int(version[6:8])).isoformat(), version[9:]
    root = lake_root()
    quarter_id = quarter.strftime("%Y%m%dt%H%M")
    plan = {
        "version": version, "dt": dt, "launch": launch, "quarter": quarter_id,
        "quarter_starts_at": quarter.isoformat(),
        "intraday_events": lake.intraday_events(quarter.date(), quarter.strftime("%H%M"), root),
        "refresh": lake.refresh(dt, launch, quarter_id, root),
        "spark_submit": spark_submit_settings(),
    }
    log.info("refresh of the served version %s with the events of %s .. +%d min UTC (%s), written to %s",
             version, quarter.isoformat(), lake.QUARTER_MINUTES, plan["intraday_events"], plan["refresh"])
    return plan


def apply_refresh(refresh: str, finished_at: datetime | None = None,
                  aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> dict[str, Any]:
    """Write a refresh partition into the served table (loader.refresh_served) and log the
    delay from the acted members' newest events to their served payloads."""
    from flashfeed.serving import loader

    manifest = lake.read_json(f"{refresh}/manifest.json")
    result = loader.refresh_served(dynamodb_client(aws_conn_id), None, refresh, manifest, log=log)
    outcome = {"version": result.version, "outcome": result.outcome, "members": result.members,
               "items": result.written, "served": result.served, "acted": manifest["members"]}
    if result.outcome == "refreshed" and manifest.get("newest_event_at"):
        done = finished_at or datetime.now(timezone.utc)     # a measurement for the log, not an input
        delays = {k: round((done - datetime.fromisoformat(v)).total_seconds())
                  for k, v in manifest["newest_event_at"].items()}
        # the newest event is the shortest delay: min delay <- max event time
        outcome["delay_seconds"] = {"min": delays["max"], "p50": delays["p50"], "max": delays["min"]}
        log.info("freshness: %d of %d members who acted in quarter %s refreshed (%d items) in %s; delay from "
                 "their newest event to the served payload: p50 %d s, max %d s", result.members,
                 manifest["members"], manifest["quarter"], result.written, result.version,
                 outcome["delay_seconds"]["p50"], outcome["delay_seconds"]["max"])
    return outcome


def plan_launch(when: datetime, launch: str | None = None) -> dict[str, Any]:
    """Partitions of one launch-feeds run; `launch` (HHMM) overrides the scheduled slot."""
    slot = calendar.slot_for_run(when)
    if launch:
        slot = calendar.slot(slot.dt, launch)
    root = lake_root()
    plan = {
        "dt": slot.dt.isoformat(),
        "launch": slot.hhmm,
        "version": slot.version,
        "window": [slot.starts_at.isoformat(), slot.ends_at.isoformat()],
        "affinity": lake.affinity(slot.dt, root=root),
        "sale_calendar": lake.raw("sale_calendar", slot.dt, root),
        "related": lake.related(slot.dt, root),
        "products": lake.products(slot.dt, slot.hhmm, root),
        "feeds": lake.feeds(slot.dt, slot.hhmm, root),
        "spark_submit": spark_submit_settings(),
    }
    log.info("launch %s (%s local): window %s .. %s UTC, feeds at %s",
             slot.version, slot.hhmm, plan["window"][0], plan["window"][1], plan["feeds"])
    return plan


def discover_groups(features: str, only: list[str] | None = None) -> list[str]:
    """The member groups of a day, read from features' groups.json (optionally a subset)."""
    summary = lake.read_json(f"{features}/groups.json")
    groups = summary["groups"]
    for group in groups:
        counts = summary["per_group"][group]
        log.info("group %s: %d members, %d ratings", group, counts["members"], counts["ratings"])
    if only:
        unknown = sorted(set(only) - set(groups))
        if unknown:
            raise ValueError(f"param groups asks for {unknown}, which do not exist on {summary['dt']}; existing "
                             f"groups: {groups}. Next step: trigger again with existing groups, or none to "
                             "train every group")
        groups = [g for g in groups if g in only]
    log.info("training %d groups: %s", len(groups), groups)
    return groups


def publish_affinity(affinity_day: str, features: str) -> list[str]:
    """Seal a day's affinities once every group of the day has its own `_SUCCESS`.

    Groups that no longer exist (e.g. merged today) are removed so readers never mix days.
    """
    groups = lake.read_json(f"{features}/groups.json")["groups"]
    fs, base = lake.filesystem(affinity_day)
    missing = [g for g in groups if not fs.exists(f"{base}/group={g}/{lake.SUCCESS}")]
    if missing:
        raise FileNotFoundError(
            f"affinities of groups {missing} are not complete: "
            f"{', '.join(f'{affinity_day}/group={g}/{lake.SUCCESS}' for g in missing)} missing. "
            "Next step: read the log of those groups' train_group_als tasks (map index 'group G'), clear them, "
            "then this task"
        )
    for entry in fs.ls(base, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("group=") and name[len("group="):] not in groups:
            log.info("removing stale affinity partition %s", entry)
            fs.rm(entry, recursive=True)
    lake.write_bytes(f"{affinity_day}/groups.json", (json.dumps({"groups": groups}, indent=2) + "\n").encode())
    lake.write_bytes(lake.success(affinity_day), b"")
    log.info("affinities of %d groups sealed: %s", len(groups), lake.success(affinity_day))
    return groups


def report_quality(models_day: str, features: str, dt: str) -> dict:
    """Log which groups serve today's model and which fell back (and why); write the day's
    models/dt=D/metrics.json and report.png."""
    from flashfeed.quality.report import write_report

    return write_report(models_day, lake.read_json(f"{features}/groups.json")["groups"], dt, log)


def validate_feeds(feeds: str, version: str) -> dict[str, Any]:
    """Refuse to load a feeds partition whose manifest is incomplete or inconsistent."""
    manifest = lake.read_json(f"{feeds}/manifest.json")
    problems = []
    if manifest.get("version") != version:
        problems.append(f"manifest version {manifest.get('version')!r} is not {version!r}")
    from flashfeed.core import experiments

    expected = set(lake.data_sets(experiments.from_dict(manifest.get("experiment"))))
    data_sets = manifest.get("data_sets", {})
    if set(data_sets) != expected:
        problems.append(f"data sets {sorted(data_sets)} differ from {sorted(expected)}")
    for name, data_set in data_sets.items():
        # because_card is empty when no member viewed a product lately (e.g. purchase-only data)
        if not data_set.get("payloads") and name != lake.feed_folder(lake.BECAUSE, "card"):
            problems.append(f"{name} has no payloads")
        if sum(f["payloads"] for f in data_set.get("files", [])) != data_set.get("payloads"):
            problems.append(f"{name}: files hold a different number of payloads than counted")
    if manifest.get("total_payloads") != sum(d.get("payloads", 0) for d in data_sets.values()):
        problems.append("total_payloads does not add up")
    if problems:
        raise ValueError(f"feeds {feeds} failed validation: {'; '.join(problems)}. Next step: clear "
                         "build_collections of this run (it rewrites the feeds and the manifest)")
    log.info("feeds %s valid: %d members, %d payloads, largest %s bytes",
             version, manifest["members"], manifest["total_payloads"], manifest["largest_payload"]["bytes"])
    return {"members": manifest["members"], "total_payloads": manifest["total_payloads"]}
