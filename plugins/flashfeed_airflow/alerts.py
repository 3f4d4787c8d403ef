"""Alerts for the people who run flashfeed: a task that failed for good, and a launch whose
feeds are not flipped 15 minutes before it goes live.

An alert is one plain ERROR line in the task log and, when FLASHFEED_ALERT_WEBHOOK is set, a
JSON POST `{"text": ..., "alert": {...}}` to it (the shape Slack- and Teams-style incoming
webhooks accept). A webhook that cannot be reached is logged, never raised: an alert must not
fail a task or hide the error it reports.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.request
from datetime import datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from flashfeed_airflow.aws import DEFAULT_AWS_CONN_ID, dynamodb_client
from flashfeed_airflow.schedules import FLIP_DEADLINE_BEFORE_LAUNCH

WEBHOOK_ENV = "FLASHFEED_ALERT_WEBHOOK"
WEBHOOK_TIMEOUT_S = 10
LAUNCH_DAG_ID = "flashfeed_launch_feeds"
LAUNCH_WATCH_DAG_ID = "flashfeed_launch_watch"
MODEL_DAG_ID = "flashfeed_daily_model"

log = logging.getLogger(__name__)


class LaunchNotFlipped(AirflowFailException):
    """The launch watch's failure (no retry): it has alerted already, with the launch's progress."""


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def run_subject(dag_id: str, logical_date: Any, run_after: Any, launch: str | None = None) -> dict[str, str]:
    """What a run is about, in the business's words: the launch slot or the model day.

    Computed from the run itself (not from its plan task's XCom), so that it is also known
    when planning is what failed.
    """
    from flashfeed.core import calendar
    from flashfeed_airflow.planning import run_date

    when = run_date(_as_datetime(logical_date), _as_datetime(run_after))
    if dag_id in (LAUNCH_DAG_ID, LAUNCH_WATCH_DAG_ID):
        slot = calendar.slot_for_run(when)
        if launch:
            slot = calendar.slot(slot.dt, launch)
        return {"dt": slot.dt.isoformat(), "launch": slot.hhmm, "version": slot.version,
                "what": f"launch {slot.dt.isoformat()} {slot.hhmm[:2]}:{slot.hhmm[2:]} (version {slot.version})"}
    if dag_id == MODEL_DAG_ID:
        dt = calendar.model_date_for_run(when).isoformat()
        return {"dt": dt, "what": f"model day {dt}"}
    return {"what": f"run at {when.isoformat()}"}


def stage_of(task_id: str) -> str:
    """A task's stage is its task group (`serve.load_feeds` -> `serve`), else the task itself."""
    return task_id.split(".", 1)[0]


def send_alert(text: str, details: dict[str, Any], logger: Any = None) -> bool:
    """Log the alert and POST it to the webhook if one is configured; True if it was posted."""
    logger = logger or log
    logger.error("ALERT: %s", text)
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return False
    body = json.dumps({"text": text, "alert": details}, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read()
        return True
    except Exception as error:  # noqa: BLE001 - the alert is already in the log
        logger.error("could not post the alert to %s (%s: %s); it is only in this log",
                     WEBHOOK_ENV, type(error).__name__, error)
        return False


def task_failed(context: dict[str, Any]) -> None:
    """on_failure_callback of every flashfeed task (after its last retry)."""
    if isinstance(context.get("exception"), LaunchNotFlipped):
        return
    ti, dag_run = context["ti"], context["dag_run"]
    params = context.get("params") or {}
    subject = run_subject(ti.dag_id, dag_run.logical_date, dag_run.run_after, params.get("launch") or None)
    error = context.get("exception")
    map_index = getattr(ti, "map_index", -1)
    task = ti.task_id + (f"[{map_index}]" if map_index is not None and map_index >= 0 else "")
    details = {
        "dag_id": ti.dag_id, "run_id": dag_run.run_id, "run_type": str(dag_run.run_type),
        "logical_date": dag_run.logical_date, "stage": stage_of(ti.task_id), "task": task,
        "try_number": ti.try_number, "error": f"{type(error).__name__}: {error}" if error else None,
        "log_url": getattr(ti, "log_url", None), **subject,
    }
    text = (f"{ti.dag_id} FAILED for {subject['what']} at stage '{details['stage']}' (task {task}, "
            f"try {ti.try_number}, run {dag_run.run_id}): {details['error'] or 'no exception recorded'}. "
            f"Next step: read this task's log, fix the cause, then clear the task to re-run it")
    send_alert(text, details, getattr(ti, "log", None))


def check_launch_flipped(when: datetime, launch: str | None = None,
                         aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> dict[str, Any]:
    """The launch watch (`flashfeed_launch_watch`, FLIP_DEADLINE_BEFORE_LAUNCH before each
    launch): is the launch's version (or a newer one) served? If not, alert with how far its
    feeds got, then fail so the run shows red in the UI. If the check itself fails (DynamoDB
    or the lake unreachable), the failure callback alerts instead."""
    from flashfeed.core import lake
    from flashfeed.serving import control
    from flashfeed_airflow.planning import plan_launch

    plan = plan_launch(when, launch)
    client = dynamodb_client(aws_conn_id)
    served = control.served_version(client)
    served_version = served["version"] if served else None
    if served_version and not control.is_older_version(served_version, plan["version"]):
        # served is this launch's version or a newer one (a later launch already flipped)
        log.info("launch %s is served (served version %s): on time", plan["version"], served_version)
        return {"version": plan["version"], "served": served_version, "on_time": True}

    fs, _ = lake.filesystem(plan["feeds"])
    progress = {
        "affinity of the day sealed": fs.exists(lake.success(plan["affinity"])),
        "products scored": fs.exists(lake.success(plan["products"])),
        "collections built": fs.exists(lake.success(plan["feeds"])),
        "table loaded and verified": plan["version"] in control.loaded_versions(client),
    }
    done = [step for step, ok in progress.items() if ok]
    missing = [step for step, ok in progress.items() if not ok]
    minutes = int(FLIP_DEADLINE_BEFORE_LAUNCH.total_seconds() // 60)
    subject = run_subject(LAUNCH_DAG_ID, when, when, launch)
    text = (f"{subject['what']} is NOT flipped {minutes} minutes before it goes live; the served version is "
            f"still {served_version or 'nothing'}. Done: {', '.join(done) or 'nothing'}; not yet: "
            f"{', '.join(missing) or 'only the flip'}. Next step: open the flashfeed_launch_feeds run for this "
            "slot and read the log of its running or failed task; if it cannot make it, the served version "
            "keeps serving")
    send_alert(text, {"dag_id": LAUNCH_DAG_ID, "served_version": served_version, "progress": progress, **subject})
    raise LaunchNotFlipped(text)
