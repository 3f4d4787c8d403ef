"""The main job on the embedded defaults: `make demo` runs `flashfeed demo`.

Starts the local DynamoDB and PostgreSQL, prepares Airflow's database, generates the demo world,
starts Airflow as production runs it (API server, scheduler with the LocalExecutor, DAG
processor, triggerer: flashfeed/local/airflow.py), triggers `flashfeed_daily_model` and then
`flashfeed_launch_feeds` for one day and one launch, waits for each run and prints its tasks'
states, start and end times and durations (independent tasks run side by side within the
`flashfeed_spark` pool), then one member's served payload from the read API.

Only the triggered runs run: the scheduler is started with `use_job_schedule` off, so unpausing
the two DAGs creates no run for today's date, and they are paused again at the end. Every step
is safe to repeat: a second run re-uses what is there and re-runs both DAG runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

from flashfeed.core import calendar, lake
from flashfeed.core.config import flashfeed_home, lake_root
from flashfeed.local import airflow_runs
from flashfeed.local.airflow import AirflowComponents
from flashfeed.local.airflow_runs import AirflowAPI, AirflowRunError

log = logging.getLogger("flashfeed.demo.run")
API_START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 4 * 3600           # a demo of a million members runs for hours on two cores
DEMO_DAGS = ("flashfeed_daily_model", "flashfeed_launch_feeds")
DEFAULT_API_PORT = 8088
DEMO_DATE, DEMO_LAUNCH, DEMO_MEMBERS, DEMO_DAYS, DEMO_SEED = "2026-11-22", "1100", 2000, 30, 7


def _run(cmd: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    started = time.monotonic()
    result = subprocess.run(cmd, env=os.environ.copy())
    if result.returncode != 0:
        raise SystemExit(f"{what} failed (exit {result.returncode}); see the output above")
    log.info("%s finished in %.0f s", what, time.monotonic() - started)


def airflow_db_ready() -> None:
    """`flashfeed airflow-init` is idempotent: it starts the local PostgreSQL when needed, creates
    or upgrades Airflow's database and sets the Spark pool."""
    _run(["flashfeed", "airflow-init"], "preparing Airflow's database and pool")


def run_dag(api: AirflowAPI, airflow: AirflowComponents, dag_id: str, logical_date: datetime,
            conf: dict | None = None) -> None:
    """Trigger one run through the API, as the UI's Trigger button does, wait for it and print its
    task table; fail with the failed tasks and where their logs are unless it succeeded."""
    run_id = f"demo__{logical_date.astimezone(timezone.utc).strftime('%Y-%m-%dT%H%M')}"
    log.info("triggering %s for %s (run %s): %s/dags/%s/runs/%s", dag_id, logical_date.isoformat(), run_id,
             airflow.url, dag_id, run_id)
    api.trigger(dag_id, run_id, logical_date, conf)
    run = api.wait_for(dag_id, run_id, RUN_TIMEOUT_S, airflow.stopped)
    rows = airflow_runs.task_rows(api.task_instances(dag_id, run_id))
    took = (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds()
    print(f"\n{dag_id} run {run_id}: {run['state']} in {took:.0f} s, "
          f"at most {airflow_runs.most_at_once(rows)} tasks at once\n{airflow_runs.format_task_table(rows)}\n",
          flush=True)
    if run["state"] != "success":
        failed = [r["task"] for r in rows if r["state"] not in ("success", "skipped")]
        raise SystemExit(f"{dag_id} run {run_id} ended {run['state']!r}; not successful: {', '.join(failed)}. "
                         f"Read their logs in the UI ({airflow.url}/dags/{dag_id}/runs/{run_id}, while `make "
                         f"airflow` runs) or under {flashfeed_home() / 'airflow' / 'logs'}")


def api_port() -> int:
    return int(os.environ.get("FLASHFEED_API_PORT", DEFAULT_API_PORT))


def _get(url: str) -> tuple[int, dict, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode("utf-8")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def show_member(member_id: str, feed: str = "products", variant: str = "card") -> int:
    """Print the served version and a member's payload, asked of the read API over HTTP.

    Uses an API already listening on the port (e.g. `make api`), else starts one for the call.
    """
    port = api_port()
    base = f"http://127.0.0.1:{port}"
    server = None
    if not _port_open(port):
        server = subprocess.Popen([sys.executable, "-m", "flashfeed.serving.api"], env=os.environ.copy(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + API_START_TIMEOUT_S
        while not _port_open(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the read API did not start on {base}; run `make api` to see why")
            time.sleep(0.2)
    try:
        status, _, body = _get(f"{base}/v1/ready")
        print(f"GET /v1/ready -> {status}\n{body}")
        status, headers, body = _get(f"{base}/v1/members/{member_id}/feeds/{feed}?variant={variant}")
        print(f"GET /v1/members/{member_id}/feeds/{feed}?variant={variant} -> {status} "
              f"(X-Feed-Version: {headers.get('x-feed-version') or headers.get('X-Feed-Version')})")
        try:
            payload = json.loads(body)
            print(json.dumps(payload, indent=2))
        except ValueError:
            print(body)
            return 1
        if status != 200:
            return 1
        # The seventh collection and a product page's feeds, in one line each.
        style_id = payload["groups"][0]["styles"][0]
        for path in (f"members/{member_id}/feeds/because", f"styles/{style_id}/related",
                     f"styles/{style_id}/bought-together"):
            status, _, body = _get(f"{base}/v1/{path}")
            answer = json.loads(body)
            summary = ([g.get("name") or g["key"] for g in answer["groups"]] if "groups" in answer
                       else answer.get("styles", answer))
            print(f"GET /v1/{path} -> {status}: {summary}")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


def first_member(feeds_partition: str) -> str:
    """A member with a served payload: the first line of the products card data set."""
    folder = Path(feeds_partition) / lake.feed_folder("products", "card")
    for part in sorted(folder.glob("part-*.json")):
        with open(part, encoding="utf-8") as handle:
            line = handle.readline()
            if line:
                return json.loads(line)["member_id"]
    raise SystemExit(f"no member payload under {folder}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashfeed demo", description=__doc__.splitlines()[0])
    parser.add_argument("--date", default=DEMO_DATE, help="model and launch day (local date)")
    parser.add_argument("--launch", default=DEMO_LAUNCH, help="launch slot HHMM")
    parser.add_argument("--members", type=int, default=DEMO_MEMBERS)
    parser.add_argument("--days", type=int, default=DEMO_DAYS)
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    started = time.monotonic()
    day = date.fromisoformat(args.date)

    from flashfeed.demo import generator as demo_data
    from flashfeed.local import dynamodb as local_dynamodb

    endpoint = local_dynamodb.start()
    log.info("local DynamoDB at %s (data under %s)", endpoint, flashfeed_home() / "dynamodb")
    airflow_db_ready()
    demo_data.generate(lake_root(), members=args.members, days=args.days, end_date=day, seed=args.seed)

    from flashfeed_airflow.schedules import LAUNCH_LEAD_MINUTES, TIMEZONE

    tz = ZoneInfo(TIMEZONE)
    slot = calendar.slot(day, args.launch)
    try:
        airflow, api = airflow_runs.start_for_triggered_runs(
            os.environ.copy(), flashfeed_home() / "airflow" / "components", DEMO_DAGS)
    except AirflowRunError as error:
        raise SystemExit(str(error)) from None
    log.info("Airflow UI: %s (the runs are there while the demo runs; `make airflow` shows them later)",
             airflow.url)
    try:
        run_dag(api, airflow, "flashfeed_daily_model", datetime.combine(day, dtime(5, 0), tz))
        # A second demo re-runs the slot it serves already: reloaded into a new table and switched
        # to once verified (without the param, a load of the served version is refused).
        run_dag(api, airflow, "flashfeed_launch_feeds",
                slot.starts_at - timedelta(minutes=LAUNCH_LEAD_MINUTES), conf={"reload_served_version": True})
    finally:
        try:
            for dag_id in DEMO_DAGS:
                api.set_paused(dag_id, True)
        except (OSError, AirflowRunError) as error:
            log.warning("could not pause %s again: %s", ", ".join(DEMO_DAGS), error)
        airflow.stop()

    member = first_member(lake.feeds(day, args.launch))
    code = show_member(member)
    log.info("demo finished in %.0f s: launch %s is served", time.monotonic() - started, slot.version)
    return code
