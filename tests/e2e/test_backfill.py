"""Backfills through a real scheduler (issue 6, item 2).

Airflow runs as `make airflow` runs it (scheduler creating no run of its own for today).
`airflow backfill create` backfills the daily model for two past days, one run at a time, each
from its own day's data. Then the launch feeds: the 11:00 slot of day 2 through `POST
/api/v2/backfills` (the request the UI's Backfill dialog sends), which is served since nothing
was; then the 20:00 slot of day 1, older than the served one, which is built in the lake but
neither loaded nor flipped (skipped, saying why). Re-run with `allow_older_version`
(`--reprocess-behavior completed`, as from the dialog), day 1's feeds come out byte for byte
the same and are served. Five DAG runs: each costs minutes of Spark on two cores, so the
scenario takes the fewest that show every behaviour.
"""
from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from flashfeed.core import calendar, lake
from flashfeed.serving import control, tables
from tests.conftest import config_with_table_prefix, free_port
from tests.e2e.helpers import api_get, api_post, e2e_env, local_time, run, running_airflow, tail, task_log, task_states
from tests.e2e.helpers import manifest as feeds_manifest

DAY1, DAY2 = "2026-11-20", "2026-11-21"
MEMBERS, DAYS, END_DATE, SEED = 400, 14, "2026-11-22", 11   # the world of test_spark_cluster.py (demo_world)
PREFIX = "backfill-"
MODEL, LAUNCH = "flashfeed_daily_model", "flashfeed_launch_feeds"
BACKFILL_TIMEOUT_S = 1500
POLL_S = 5


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, dynamodb_endpoint, demo_world):
    home = tmp_path_factory.mktemp("backfill-home")
    # Only the backfills' runs: unpausing creates no scheduled run for today (use_job_schedule off).
    env = e2e_env(home, AIRFLOW__API__PORT=str(free_port()), FLASHFEED_DYNAMODB_ENDPOINT=dynamodb_endpoint,
                  FLASHFEED_CONFIG=str(config_with_table_prefix(home, PREFIX)),
                  AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False")
    demo_world(env["FLASHFEED_LAKE"], members=MEMBERS, days=DAYS, end_date=END_DATE, seed=SEED)
    with running_airflow(env, home / "airflow.log", {MODEL, LAUNCH}) as url:
        # Backfill runs are scheduled like any other run: only for unpaused DAGs.
        for dag_id in (MODEL, LAUNCH):
            run(["airflow", "dags", "unpause", dag_id], env)
        yield {"env": env, "url": url, "log": home / "airflow.log"}


def _backfill(airflow, dag_id: str, start: datetime, end: datetime, reprocess: str = "none",
              via: str = "cli", conf: dict | None = None) -> list[dict]:
    """Backfill [start, end] one run at a time, from the CLI or as the UI does (REST API); wait
    until the scheduler marks the backfill complete and return its runs, oldest first. (A
    reprocessed date keeps its run id: the backfill clears and re-runs it.)"""
    def backfills() -> dict[int, dict]:
        listed = api_get(airflow["url"], f"/api/v2/backfills?dag_id={dag_id}&limit=100")["backfills"]
        return {b["id"]: b for b in listed}

    before = set(backfills())
    if via == "cli":
        run(["airflow", "backfill", "create", "--dag-id", dag_id, "--from-date", start.isoformat(),
             "--to-date", end.isoformat(), "--max-active-runs", "1", "--reprocess-behavior", reprocess,
             "--dag-run-conf", json.dumps(conf or {})], airflow["env"])
    else:
        api_post(airflow["url"], "/api/v2/backfills", {
            "dag_id": dag_id, "from_date": start.isoformat(), "to_date": end.isoformat(),
            "max_active_runs": 1, "reprocess_behavior": reprocess, "dag_run_conf": conf or {}})
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while True:
        [backfill] = [b for i, b in backfills().items() if i not in before]
        if backfill["completed_at"]:
            break
        assert time.monotonic() < deadline, f"{dag_id} backfill did not finish:\n{tail(airflow['log'])}"
        time.sleep(POLL_S)
    runs = api_get(airflow["url"], f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
    return sorted((r for r in runs if r["run_type"] == "backfill"
                   and start <= datetime.fromisoformat(r["logical_date"]) <= end), key=lambda r: r["logical_date"])


def _never_overlap(runs: list[dict]) -> bool:
    spans = sorted((r["start_date"], r["end_date"]) for r in runs)
    return all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:]))


def _feed_bytes(root: str, dt: str, launch: str) -> dict[str, list[str]]:
    """sha256 of every feeds file per data set (file names carry Spark's random job ids)."""
    return {name: sorted(f["sha256"] for f in data_set["files"])
            for name, data_set in feeds_manifest(root, dt, launch)["data_sets"].items()}


def test_backfill_runs_past_days_in_order_and_never_serves_an_older_slot(airflow):
    env, root = airflow["env"], airflow["env"]["FLASHFEED_LAKE"]
    client = tables.dynamodb_client(env["FLASHFEED_DYNAMODB_ENDPOINT"])

    # 1. The daily model for two past days (05:00 runs), one run at a time.
    model_runs = _backfill(airflow, MODEL, local_time(DAY1, "0000"), local_time(DAY2, "2359"))
    assert [r["state"] for r in model_runs] == ["success", "success"], model_runs
    assert [r["dag_run_id"].startswith("backfill__") for r in model_runs] == [True, True]
    assert _never_overlap(model_runs)
    for day in (DAY1, DAY2):   # each run wrote its own day, from that day's data
        assert Path(lake.success(lake.affinity(day, root=root))).exists()
        assert json.loads(Path(lake.features(day, root), "groups.json").read_text())["dt"] == day

    # 2. The launch feeds for the 11:00 slot of day 2 (its run fires at 10:15), as the UI's
    #    Backfill dialog creates it. Nothing is served yet, so it flips.
    first, second = calendar.slot(DAY1, "2000"), calendar.slot(DAY2, "1100")
    [served_run] = _backfill(airflow, LAUNCH, local_time(DAY2, "1000"), local_time(DAY2, "1030"), via="api")
    assert served_run["state"] == "success", served_run
    assert control.served_version(client, PREFIX)["version"] == second.version

    # 3. The 20:00 slot of day 1 (fires at 19:15), older than the served one: built, but neither
    #    loaded nor flipped, and the log says why and what to do.
    [older] = _backfill(airflow, LAUNCH, local_time(DAY1, "1900"), local_time(DAY1, "1930"))
    assert older["state"] == "success"
    states = task_states(airflow["url"], LAUNCH, older["dag_run_id"])
    assert states["build.build_collections"] == "success" and states["serve.validate_feeds"] == "success"
    assert states["serve.load_feeds"] == "skipped" and states["serve.flip_served_version"] == "skipped"
    assert control.served_version(client, PREFIX)["version"] == second.version
    log = task_log(env, LAUNCH, older["dag_run_id"], "serve.load_feeds")
    assert f"older than the served version {second.version}" in log and "allow_older_version=true" in log
    day1_feeds = _feed_bytes(root, DAY1, "2000")

    # 4. Asked to (the param, from the UI's dialog), the re-run of that slot builds the same
    #    bytes and serves them; the version it replaced becomes the previous one.
    [allowed] = _backfill(airflow, LAUNCH, local_time(DAY1, "1900"), local_time(DAY1, "1930"), "completed",
                          via="api", conf={"allow_older_version": True})
    assert allowed["dag_run_id"] == older["dag_run_id"]             # the same run, cleared and run again
    states = task_states(airflow["url"], LAUNCH, allowed["dag_run_id"])
    assert states["serve.load_feeds"] == "success" and states["serve.flip_served_version"] == "success"
    assert _feed_bytes(root, DAY1, "2000") == day1_feeds
    served = control.served_version(client, PREFIX)
    assert (served["version"], served["previous"]) == (first.version, second.version)
