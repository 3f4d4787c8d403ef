"""Backfills through a real scheduler (issue 6, item 2).

Airflow runs as `make airflow` runs it. `airflow backfill create` backfills the daily model for
two past days; then the launch feeds for two past slots (20:00 on day 1, 11:00 on day 2) are
backfilled through `POST /api/v2/backfills`, the request the UI's Backfill dialog sends. Runs
go one at a time; each run reads its own day's data. Nothing was served before, so both slots
are flipped, in order. Then day 1 is backfilled again (`--reprocess-behavior completed`): its
feeds come out byte for byte the same, and because its slot is older than the served one, the
re-run builds the feeds in the lake but neither loads nor flips them (skipped, saying why),
until the backfill is created with `allow_older_version`.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flashfeed.core import calendar, lake
from flashfeed.serving import control, tables
from flashfeed.local.env import project_env
from tests.conftest import config_with_table_prefix, free_port
from tests.e2e.airflow_server import api_get, api_post, running_airflow, tail

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NY = ZoneInfo("America/New_York")
DAY1, DAY2 = "2026-11-20", "2026-11-21"
MEMBERS, DAYS, END_DATE, SEED = 400, 14, "2026-11-22", 5
PREFIX = "backfill-"
MODEL, LAUNCH = "flashfeed_daily_model", "flashfeed_launch_feeds"
BACKFILL_TIMEOUT_S = 1500
POLL_S = 5


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, dynamodb_endpoint):
    home = tmp_path_factory.mktemp("backfill-home")
    env = project_env({"PATH": os.environ["PATH"], "FLASHFEED_HOME": str(home),
                       "AIRFLOW__API__PORT": str(free_port()),
                       "FLASHFEED_DYNAMODB_ENDPOINT": dynamodb_endpoint,
                       "FLASHFEED_CONFIG": str(config_with_table_prefix(home, PREFIX))})
    _run(["flashfeed", "demo-data", "--lake", env["FLASHFEED_LAKE"], "--members", str(MEMBERS),
          "--days", str(DAYS), "--end-date", END_DATE, "--seed", str(SEED)], env)
    with running_airflow(env, home / "airflow.log", {MODEL, LAUNCH}) as url:
        # Backfill runs are scheduled like any other run: only for unpaused DAGs.
        for dag_id in (MODEL, LAUNCH):
            _run(["airflow", "dags", "unpause", dag_id], env)
        yield {"env": env, "url": url, "log": home / "airflow.log"}


def _run(cmd, env, timeout=600):
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _backfill(airflow, dag_id: str, start: datetime, end: datetime, reprocess: str = "none",
              via: str = "cli", conf: dict | None = None) -> list[dict]:
    """Backfill [start, end] one run at a time, from the CLI or as the UI does (REST API); wait
    until the scheduler marks the backfill complete and return its runs, oldest first. (A
    reprocessed date keeps its run id: the backfill clears and re-runs it.)"""
    def backfills() -> dict[int, dict]:
        return {b["id"]: b for b in api_get(airflow["url"], f"/api/v2/backfills?dag_id={dag_id}&limit=100")["backfills"]}

    before = set(backfills())
    if via == "cli":
        _run(["airflow", "backfill", "create", "--dag-id", dag_id, "--from-date", start.isoformat(),
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


def _task_states(airflow, dag_id: str, run_id: str) -> dict[str, str]:
    quoted = urllib.parse.quote(run_id, safe="")
    instances = api_get(airflow["url"], f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=100")
    return {t["task_id"]: t["state"] for t in instances["task_instances"]}


def _never_overlap(runs: list[dict]) -> bool:
    spans = sorted((r["start_date"], r["end_date"]) for r in runs)
    return all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:]))


def _feed_bytes(root: str, dt: str, launch: str) -> dict[str, list[str]]:
    """sha256 of every feeds file per data set (file names carry Spark's random job ids)."""
    manifest = json.loads(Path(lake.feeds(dt, launch, root), "manifest.json").read_text())
    return {name: sorted(f["sha256"] for f in data_set["files"]) for name, data_set in manifest["data_sets"].items()}


def _local(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm[:2]}:{hhmm[2:]}").replace(tzinfo=NY)


def test_backfill_runs_past_days_in_order_and_never_serves_an_older_slot(airflow):
    env, root = airflow["env"], airflow["env"]["FLASHFEED_LAKE"]
    client = tables.dynamodb_client(env["FLASHFEED_DYNAMODB_ENDPOINT"])

    # 1. The daily model for two past days (05:00 runs), one run at a time.
    model_runs = _backfill(airflow, MODEL, _local(DAY1, "0000"), _local(DAY2, "2359"))
    assert [r["state"] for r in model_runs] == ["success", "success"], model_runs
    assert [r["dag_run_id"].startswith("backfill__") for r in model_runs] == [True, True]
    assert _never_overlap(model_runs)
    for day in (DAY1, DAY2):   # each run wrote its own day, from that day's data
        assert Path(lake.success(lake.affinity(day, root=root))).exists()
        assert json.loads(Path(lake.features(day, root), "groups.json").read_text())["dt"] == day

    # 2. The launch feeds for the 20:00 slot of day 1 and the 11:00 slot of day 2 (their runs
    #    fire at 19:15 and 10:15), as the UI's Backfill dialog creates them. Nothing is served
    #    yet, so both flip, in order.
    first, second = calendar.slot(DAY1, "2000"), calendar.slot(DAY2, "1100")
    launch_runs = _backfill(airflow, LAUNCH, _local(DAY1, "1900"), _local(DAY2, "1030"), via="api")
    assert [r["state"] for r in launch_runs] == ["success", "success"], launch_runs
    assert _never_overlap(launch_runs)
    served = control.served_version(client, PREFIX)
    assert (served["version"], served["previous"]) == (second.version, first.version)
    day1_feeds = _feed_bytes(root, DAY1, "2000")

    # 3. Re-run day 1, model and launch: same bytes; the slot is older than the served one, so
    #    it is built but neither loaded nor flipped.
    [model_rerun] = _backfill(airflow, MODEL, _local(DAY1, "0000"), _local(DAY1, "2359"), "completed")
    assert model_rerun["state"] == "success"
    [launch_rerun] = _backfill(airflow, LAUNCH, _local(DAY1, "1900"), _local(DAY1, "1930"), "completed")
    assert launch_rerun["state"] == "success"
    states = _task_states(airflow, LAUNCH, launch_rerun["dag_run_id"])
    assert states["build.build_collections"] == "success" and states["serve.validate_feeds"] == "success"
    assert states["serve.load_feeds"] == "skipped" and states["serve.flip_served_version"] == "skipped"
    assert _feed_bytes(root, DAY1, "2000") == day1_feeds
    assert control.served_version(client, PREFIX)["version"] == second.version
    log = _task_log(env, launch_rerun["dag_run_id"], "serve.load_feeds")
    assert f"older than the served version {second.version}" in log and "allow_older_version=true" in log

    # 4. Asked to (the param, from the UI's dialog), the older slot is loaded and served.
    [allowed] = _backfill(airflow, LAUNCH, _local(DAY1, "1900"), _local(DAY1, "1930"), "completed",
                          via="api", conf={"allow_older_version": True})
    states = _task_states(airflow, LAUNCH, allowed["dag_run_id"])
    assert states["serve.load_feeds"] == "success" and states["serve.flip_served_version"] == "success"
    served = control.served_version(client, PREFIX)
    assert (served["version"], served["previous"]) == (first.version, second.version)


def _task_log(env, run_id: str, task_id: str) -> str:
    """The task's log file as the UI shows it (LocalExecutor: the local log folder)."""
    folder = Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"], f"dag_id={LAUNCH}", f"run_id={run_id}", f"task_id={task_id}")
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*.log")))
