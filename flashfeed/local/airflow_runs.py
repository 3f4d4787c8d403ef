"""DAG runs through a running Airflow's REST API, as the UI makes them: start Airflow for
triggered runs only, trigger a run for a logical date, wait for it with progress in the log, and
the table of its task instances (state, start and end relative to the run, seconds), so a reader
sees which tasks ran side by side. Used by `flashfeed demo` (flashfeed/demo/run.py) and the
end-to-end tests.

Locally the API needs no login (SimpleAuthManager, all admins: flashfeed/local/env.py).
"""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from flashfeed.local.daemons import port_in_use

if TYPE_CHECKING:
    from flashfeed.local.airflow import AirflowComponents

log = logging.getLogger("flashfeed.airflow")
REQUEST_TIMEOUT_S = 30          # one API call; the api-server answers in milliseconds when healthy
POLL_S = 5
PROGRESS_EVERY_S = 30
FINISHED = {"success", "failed"}
PAGE = 100


START_TIMEOUT_S = 300           # the DAG processor's first parse of every DAG on a busy machine


class AirflowRunError(RuntimeError):
    """A run could not be made or did not finish; the message says why and what to look at."""


class AirflowAPI:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        # Loopback: no proxy, whatever HTTP_PROXY says.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=REQUEST_TIMEOUT_S) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise AirflowRunError(f"{method} {path}: HTTP {error.code} {error.read()[:500].decode(errors='replace')}"
                                  ) from None
        return json.loads(raw) if raw else {}

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.call("GET", f"/api/v2/dags?limit={PAGE}")["dags"]}

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def run(self, dag_id: str, run_id: str) -> dict | None:
        try:
            return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}")
        except AirflowRunError as error:
            if "HTTP 404" in str(error):
                return None
            raise

    def trigger(self, dag_id: str, run_id: str, logical_date: datetime, conf: dict | None = None) -> dict:
        """A new run `run_id` for `logical_date`; an earlier run of that id is deleted first, so a
        repeated demo runs every task again."""
        if self.run(dag_id, run_id) is not None:
            self.call("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}")
        return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                         {"dag_run_id": run_id, "logical_date": logical_date.isoformat(), "conf": conf or {}})

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        found, offset = [], 0
        while True:
            page = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances"
                                    f"?limit={PAGE}&offset={offset}")
            found += page["task_instances"]
            offset += PAGE
            if offset >= page["total_entries"]:
                return found

    def wait_for(self, dag_id: str, run_id: str, timeout_s: float,
                 alive: Callable[[], str | None] = lambda: None) -> dict:
        """Poll the run until it finishes; log progress (task states) now and then. `alive`
        names a stopped Airflow component, if any: waiting for it would be in vain."""
        started = time.monotonic()
        next_progress = started
        while True:
            run = self.run(dag_id, run_id)
            if run is not None and run["state"] in FINISHED:
                return run
            now = time.monotonic()
            if now >= next_progress:
                rows = task_rows(self.task_instances(dag_id, run_id))
                states: dict[str, int] = {}
                for row in rows:
                    states[row["state"]] = states.get(row["state"], 0) + 1
                running = [row["task"] for row in rows if row["state"] == "running"]
                log.info("%s: %s after %.0f s (tasks: %s)%s", dag_id, run["state"] if run else "not created yet",
                         now - started, ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none yet",
                         f"; running: {', '.join(running)}" if running else "")
                next_progress = now + PROGRESS_EVERY_S
            stopped = alive()
            if stopped:
                raise AirflowRunError(f"Airflow's {stopped} stopped while {dag_id} run {run_id} was running")
            if now - started > timeout_s:
                raise AirflowRunError(f"{dag_id} run {run_id} did not finish within {timeout_s:.0f} s")
            time.sleep(POLL_S)


def start_for_triggered_runs(env: dict[str, str], log_dir: Path, dag_ids: tuple[str, ...],
                             timeout_s: float = START_TIMEOUT_S) -> tuple[AirflowComponents, AirflowAPI]:
    """Airflow's components (`make airflow`'s, port AIRFLOW__API__PORT of `env`) with the
    scheduler's own schedule off, so unpausing `dag_ids` creates no run for today's date and only
    triggered runs run; their logs in `log_dir`. Returns once the API lists `dag_ids`, unpaused."""
    from flashfeed.local.airflow import AirflowComponents, scheduler_environment

    port = env.get("AIRFLOW__API__PORT", "8080")
    if port_in_use("127.0.0.1", int(port), 1.0):
        raise AirflowRunError(f"port {port} is in use (is `make airflow` running?): stop it, or set AIRFLOW__API__PORT")
    airflow = AirflowComponents(port, scheduler_environment({**env, "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}),
                                log_dir).start()
    api = AirflowAPI(airflow.url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if set(dag_ids) <= api.dag_ids():
                    break
            except (OSError, AirflowRunError):
                pass
            stopped = airflow.stopped()
            if stopped or time.monotonic() > deadline:
                raise AirflowRunError(f"Airflow did not list {', '.join(dag_ids)} within {timeout_s:.0f} s"
                                      f"{f' ({stopped} exited)' if stopped else ''}: see the logs in {log_dir}")
            time.sleep(1)
        for dag_id in dag_ids:
            api.set_paused(dag_id, False)
    except BaseException:
        airflow.stop()
        raise
    return airflow, api


def _quote(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def _parse(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp) if stamp else None


def task_rows(instances: list[dict]) -> list[dict]:
    """One row per task instance, in start order: task (mapped ones with their label), state,
    start and end in seconds after the run's first task started, duration in seconds."""
    starts = [_parse(i["start_date"]) for i in instances if i["start_date"]]
    origin = min(starts) if starts else None
    rows = []
    for instance in instances:
        start, end = _parse(instance["start_date"]), _parse(instance["end_date"])
        label = instance.get("rendered_map_index") or (str(instance["map_index"]) if instance["map_index"] >= 0 else "")
        rows.append({"task": instance["task_id"] + (f" [{label}]" if label else ""),
                     "state": instance["state"] or "none",
                     "start_s": (start - origin).total_seconds() if start and origin else None,
                     "end_s": (end - origin).total_seconds() if end and origin else None,
                     "seconds": instance["duration"]})
    return sorted(rows, key=lambda r: (r["start_s"] is None, r["start_s"] or 0.0, r["task"]))


def format_task_table(rows: list[dict]) -> str:
    """The rows as a text table; tasks whose [start, end] intervals overlap ran side by side."""
    def seconds(value: float | None) -> str:
        return "" if value is None else f"{value:8.1f}"

    width = max([len(r["task"]) for r in rows] + [len("task")])
    lines = [f"{'task':<{width}}  {'state':<15} {'start s':>8} {'end s':>8} {'seconds':>8}"]
    lines += [f"{r['task']:<{width}}  {r['state']:<15} {seconds(r['start_s']):>8} {seconds(r['end_s']):>8} "
              f"{seconds(r['seconds']):>8}" for r in rows]
    return "\n".join(lines)


def most_at_once(rows: list[dict]) -> int:
    """How many task instances ran at the same time, at most (from their start and end)."""
    events = sorted([(r["start_s"], 1) for r in rows if r["start_s"] is not None and r["end_s"] is not None]
                    + [(r["end_s"], -1) for r in rows if r["start_s"] is not None and r["end_s"] is not None])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak
