"""What the end-to-end tests share: the project's environment for a test home, commands run as a
user runs them (with their output when they fail), `airflow dags test` and a run's state, reading
feeds and task logs back from the lake and Airflow's log folder, and Airflow as `make airflow`
runs it (`running_airflow`, for tests that need a real scheduler) or as `make demo` runs it
(`triggered_runs`: the scheduler runs only the runs a test triggers).

Session-wide fixtures built on these (one generated demo world per set of parameters, the UCI
sample as CSV) are in tests/e2e/conftest.py.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from flashfeed.core import lake
from flashfeed.core.config import REPO_ROOT
from flashfeed.local.env import project_env

REPO = REPO_ROOT
FLASHFEED = str(REPO / ".venv" / "bin" / "flashfeed")
NY = ZoneInfo("America/New_York")
DAG_TEST_TIMEOUT_S = 1200
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60
POLL_S = 2


# --- the project's environment and commands ---------------------------------------------------

# The session's PostgreSQL (FLASHFEED_POSTGRES_PORT, PGPASSFILE), set by the autouse fixture
# `airflow_postgres` in tests/e2e/conftest.py: one server, one Airflow database per test home.
POSTGRES: dict[str, str] = {}


def e2e_env(home: Path | str, **variables: str) -> dict[str, str]:
    """The project's environment (flashfeed.local.env.project_env) for FLASHFEED_HOME `home`, this
    process's PATH and `variables` (e.g. FLASHFEED_DYNAMODB_ENDPOINT, FLASHFEED_CONFIG). Airflow's
    database is the home's own on the session's PostgreSQL (`flashfeed airflow-init` creates it)."""
    database = "airflow_" + hashlib.sha256(str(home).encode()).hexdigest()[:16]
    return project_env({"PATH": os.environ["PATH"], "FLASHFEED_HOME": str(home), **POSTGRES,
                        "FLASHFEED_POSTGRES_DATABASE": database, **variables})


def run(cmd: list[str], env: dict[str, str], timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run `cmd` in the repository; fail with the end of its output unless it exits 0."""
    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def flashfeed(args: list[str], env: dict[str, str], timeout: float = 1200) -> str:
    """The venv's `flashfeed` command as a user types it; its stdout."""
    return run([FLASHFEED, *args], env, timeout).stdout


def local_time(day: str, hhmm: str) -> datetime:
    """`hhmm` on `day` in New York, the retailer's time zone."""
    return datetime.fromisoformat(f"{day}T{hhmm[:2]}:{hhmm[2:]}").replace(tzinfo=NY)


# --- airflow dags test ------------------------------------------------------------------------

def dag_state(dag_id: str, logical: datetime | str, env: dict[str, str], airflow: Iterable[str] = ("airflow",)) -> str:
    """The run's state as `airflow dags state` prints it (its last line)."""
    when = logical if isinstance(logical, str) else logical.isoformat()
    return run([*airflow, "dags", "state", dag_id, when], env).stdout.strip().splitlines()[-1]


def dag_test(dag_id: str, logical: datetime | str, env: dict[str, str], expect: str = "success",
             conf: dict | None = None, airflow: Iterable[str] = ("airflow",),
             timeout: float = DAG_TEST_TIMEOUT_S, exact: bool = False) -> str:
    """`airflow dags test` of one run (`airflow`: the command, e.g. `flashfeed airflow`); assert
    that the run's state starts with `expect` (is `expect` when `exact`; a run may be meant to
    fail, e.g. the launch watch), and that the command exited 0 when it was to succeed.
    Returns the command's output."""
    when = logical if isinstance(logical, str) else logical.isoformat()
    result = subprocess.run([*airflow, "dags", "test", dag_id, when, *(["--conf", json.dumps(conf)] if conf else [])],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    output = result.stdout + result.stderr
    state = dag_state(dag_id, when, env, airflow)
    assert (state == expect) if exact else state.startswith(expect), \
        f"{dag_id} {when}: {state}, expected {expect}\n{output[-4000:]}"
    if expect == "success":
        assert result.returncode == 0, f"{dag_id} {when}: exit {result.returncode}\n{output[-4000:]}"
    return output


class TriggeredRuns:
    """DAG runs through a running scheduler, as `make demo` makes them (flashfeed/local/airflow_runs.py)."""

    def __init__(self, api, airflow, env: dict[str, str]):
        self.api, self.airflow, self.env = api, airflow, env

    def run(self, dag_id: str, logical: datetime, expect: str = "success", conf: dict | None = None,
            timeout: float = DAG_TEST_TIMEOUT_S) -> str:
        """Trigger a run of `dag_id` for `logical`, wait for it, assert it ended `expect`; its run id."""
        from flashfeed.local import airflow_runs

        run_id = f"test__{logical.isoformat()}"
        self.api.trigger(dag_id, run_id, logical, conf)
        run = self.api.wait_for(dag_id, run_id, timeout, self.airflow.stopped)
        if run["state"] != expect:
            rows = airflow_runs.task_rows(self.api.task_instances(dag_id, run_id))
            logs = "\n".join(task_log(self.env, dag_id, run_id, r["task"].split(" [")[0])[-3000:]
                              for r in rows if r["state"] not in ("success", "skipped"))
            raise AssertionError(f"{dag_id} {run_id}: {run['state']}, expected {expect}\n"
                                 f"{airflow_runs.format_task_table(rows)}\n{logs}")
        return run_id


@contextlib.contextmanager
def triggered_runs(env: dict[str, str], log_dir: Path, dag_ids: Iterable[str]) -> Iterator[TriggeredRuns]:
    """Airflow's components with `env` (its own AIRFLOW__API__PORT) for triggered runs only, the
    DAGs unpaused; every component stopped by its own process group at the end."""
    from flashfeed.local import airflow_runs

    airflow, api = airflow_runs.start_for_triggered_runs(env, log_dir, tuple(dag_ids), START_TIMEOUT_S)
    try:
        yield TriggeredRuns(api, airflow, env)
    finally:
        airflow.stop()


def task_log(env: dict[str, str], dag_id: str, run_id: str, task_id: str) -> str:
    """The task's log files as the UI shows them (LocalExecutor: the local log folder)."""
    folder = Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"], f"dag_id={dag_id}", f"run_id={run_id}",
                  f"task_id={task_id}")
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*.log")))


# --- the lake's feeds -------------------------------------------------------------------------

def feed_lines(root: str, day: str, launch: str, data_set: str) -> list[str]:
    """Every payload line of a data set of a launch's feeds (local lake)."""
    folder = Path(lake.feeds(day, launch, root)) / data_set
    return [line for part in sorted(folder.glob("part-*.json")) for line in part.read_text().splitlines()]


def lake_line(root: str, day: str, launch: str, owner: str, data_set: str = "products_card",
              key: str = "member_id") -> str:
    """The payload line of `owner` (its `key`) as the launch wrote it to the lake."""
    for line in feed_lines(root, day, launch, data_set):
        if json.loads(line)[key] == owner:
            return line
    raise AssertionError(f"{owner} not in {Path(lake.feeds(day, launch, root)) / data_set}")


def first_payload(root: str, day: str, launch: str, data_set: str) -> dict:
    """The first payload of the data set's first file."""
    part = next(Path(lake.feeds(day, launch, root), data_set).glob("part-*.json"))
    return json.loads(part.read_text().splitlines()[0])


def manifest(root: str, day: str, launch: str) -> dict:
    return json.loads(Path(lake.feeds(day, launch, root), "manifest.json").read_text())


# --- Airflow as `make airflow` runs it --------------------------------------------------------

def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def api_get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.load(response)


def api_post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def task_states(url: str, dag_id: str, run_id: str) -> dict[str, str]:
    """task_id -> state of a run's task instances, from the REST API."""
    quoted = urllib.parse.quote(run_id, safe="")
    instances = api_get(url, f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=100")
    return {t["task_id"]: t["state"] for t in instances["task_instances"]}


def process_tree(pid: int) -> set[int]:
    """`pid` and every process below it (from /proc; also those in process groups of their own)."""
    children: dict[int, set[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:   # ended meanwhile
            continue
        children.setdefault(int(fields[1]), set()).add(int(stat.parent.name))
    tree, todo = set(), [pid]
    while todo:
        tree.add(todo[-1])
        todo.extend(children.get(todo.pop(), set()) - tree)
    return tree


class AirflowUI:
    """`flashfeed airflow-ui` started by `start_airflow`: its URL, process and log; `stop()` sends
    SIGTERM (airflow-ui stops its components, each in its own process group) and returns the exit
    code, SIGKILLing the process group when it does not stop in time."""

    def __init__(self, proc: subprocess.Popen, url: str, port: int, log: Path):
        self.proc, self.url, self.port, self.log = proc, url, port, log
        self.returncode: int | None = None

    def stop(self) -> int:
        if self.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.returncode = self.proc.wait()
        return self.returncode


def start_airflow(env: dict[str, str], log_path: Path, dag_ids: Iterable[str]) -> AirflowUI:
    """Start `flashfeed airflow-ui` with `env` (its AIRFLOW__API__PORT) and wait until the API
    lists `dag_ids`; stopped again (by its PID) when it does not get there."""
    port = int(env["AIRFLOW__API__PORT"])
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["flashfeed", "airflow-ui"], env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    airflow = AirflowUI(proc, url, port, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"flashfeed airflow-ui exited early:\n{tail(log_path)}"
            try:
                if set(dag_ids) <= {d["dag_id"] for d in api_get(url, "/api/v2/dags")["dags"]}:
                    return airflow
            except OSError:
                pass
            assert time.monotonic() < deadline, f"Airflow did not list the DAGs in time:\n{tail(log_path)}"
            time.sleep(POLL_S)
    except BaseException:
        airflow.stop()
        raise


@contextlib.contextmanager
def running_airflow(env: dict[str, str], log_path: Path, dag_ids: Iterable[str]) -> Iterator[str]:
    """`start_airflow`, yield the UI's URL, stop every component by its own PID at the end."""
    airflow = start_airflow(env, log_path, dag_ids)
    try:
        yield airflow.url
    finally:
        airflow.stop()
