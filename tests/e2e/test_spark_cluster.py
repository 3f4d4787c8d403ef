"""Cluster mode end to end: the same DAGs on a Spark standalone master, by changing only the
Airflow connection `spark_default`.

Starts a standalone master and one worker on free 127.0.0.1 ports (flashfeed.local.spark_standalone),
builds a small world like test_pipeline.py, points AIRFLOW_CONN_SPARK_DEFAULT at the master and
runs the daily model and the 11:00 launch with `airflow dags test`. Then checks that the launch's
version is served and that every Spark application of both DAGs ran on the cluster (the
master lists them as finished applications, and the worker's executors ran their tasks), not
in local mode; every group's ALS and the global one are fit by Spark here
(`als.driver_fit_max_ratings` 0). The world has its own DynamoDB table prefix, so
test_pipeline.py's served version on the session's DynamoDB is untouched. Also checks that
master and worker listen on loopback only, that executors run this venv's Python, and that a
daemon that cannot start is reported with its log file. The cluster is stopped by its PIDs at
the end, also when a test fails.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest

from flashfeed.core import calendar, lake
from flashfeed.local import spark_standalone
from flashfeed.serving import control, tables
from tests.conftest import LOOPBACK_HEX, config_with_table_prefix, free_port, listening_ports
from tests.e2e.helpers import NY, REPO, dag_test, e2e_env, run

DAY, LAUNCH = "2026-11-22", "1100"
MEMBERS, DAYS, SEED = 400, 14, 11     # small: every Spark application costs two JVM start-ups here
LEAD = timedelta(minutes=45)
WORKER_CORES = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone master + worker on free loopback ports, stopped by PID in the finalizer."""
    home = tmp_path_factory.mktemp("spark-standalone")
    port, webui_port = free_port(), free_port()
    try:
        # The worker offers its default: one executor of the config's spark.executor_memory.
        url = spark_standalone.start(home, port, webui_port, WORKER_CORES,
                                     worker_webui_port=free_port())
        yield {"home": home, "url": url, "port": port, "webui_port": webui_port,
               "connection": spark_standalone.spark_connection(port)}
    finally:
        spark_standalone.stop(home)


@pytest.fixture(scope="module")
def world(tmp_path_factory, dynamodb_endpoint, demo_world):
    """The local-mode world of test_pipeline.py, smaller (own tables on the shared DynamoDB)."""
    home = tmp_path_factory.mktemp("flashfeed-cluster-home")
    prefix = "cluster-"
    # Every group is fit by Spark's ALS here, so that the fit too large for a driver runs on the
    # cluster's executors (by default these small groups are fit on the driver without a session).
    config = config_with_table_prefix(home, prefix, {"driver_fit_max_ratings: 10000000": "driver_fit_max_ratings: 0"})
    env = e2e_env(home, FLASHFEED_DYNAMODB_ENDPOINT=dynamodb_endpoint, FLASHFEED_CONFIG=str(config))
    run(["flashfeed", "airflow-init"], env)
    demo_world(env["FLASHFEED_LAKE"], members=MEMBERS, days=DAYS, end_date=DAY, seed=SEED)
    return env, prefix


def test_cluster_listens_on_loopback_only(cluster):
    state = json.loads(spark_standalone.state_file(cluster["home"]).read_text())
    master, worker = listening_ports(state["master_pid"]), listening_ports(state["worker_pid"])
    assert set(master) == {cluster["port"], cluster["webui_port"]}, master      # no REST server (6066)
    assert len(worker) == 2, worker                                              # RPC + web UI
    for addresses in [*master.values(), *worker.values()]:
        assert addresses <= LOOPBACK_HEX, (master, worker)


def test_executors_run_the_projects_python(cluster, world, tmp_path):
    """The jobs have no Python UDFs today, so the DAGs alone would not show it: Python code on
    the executors runs with the driver's PYSPARK_PYTHON (this venv) and imports the project."""
    env, _ = world
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.appName('flashfeed-probe').getOrCreate()\n"
        "def where(_):\n"
        "    import sys, flashfeed, spark_jobs.transforms\n"
        "    return sys.executable + ' ' + flashfeed.__file__\n"
        "print('PROBE', spark.sparkContext.master, sorted(set(\n"
        "    spark.sparkContext.parallelize(range(4), 2).map(where).collect())))\n"
        "spark.stop()\n")
    out = run(["spark-submit", "--master", cluster["url"], str(probe)], env, timeout=300).stdout
    line = next(line for line in out.splitlines() if line.startswith("PROBE"))
    assert line == f"PROBE {cluster['url']} {[sys.executable + ' ' + str(REPO / 'flashfeed' / '__init__.py')]}"


def test_daily_model_and_launch_run_on_the_standalone_cluster(cluster, world):
    env, prefix = world
    env = {**env, "AIRFLOW_CONN_SPARK_DEFAULT": cluster["connection"]}   # the only change
    root = env["FLASHFEED_LAKE"]

    daily_log = dag_test("flashfeed_daily_model", datetime.combine(datetime.fromisoformat(DAY), time(5), NY), env)
    groups = json.loads(Path(lake.affinity(DAY, root=root), "groups.json").read_text())["groups"]
    assert groups, "no member group was trained"
    assert Path(lake.success(lake.affinity(DAY, root=root))).exists()
    for group in groups:
        assert json.loads(Path(lake.models(DAY, group, root), "metrics.json").read_text())["fit_on"] == "spark"
    assert json.loads(Path(lake.global_model(DAY, root), "metrics.json").read_text())["fit_on"] == "spark"

    slot = calendar.slot(DAY, LAUNCH)
    launch_log = dag_test("flashfeed_launch_feeds", slot.starts_at - LEAD, env)
    client = tables.dynamodb_client(endpoint=env["FLASHFEED_DYNAMODB_ENDPOINT"])
    assert control.served_version(client, prefix)["version"] == slot.version
    manifest = json.loads(Path(lake.feeds(DAY, LAUNCH, root), "manifest.json").read_text())
    assert manifest["members"] > 0

    # spark-submit was told the standalone master, never local[*] ...
    for log in (daily_log, launch_log):
        assert f"--master {cluster['url']}" in log
        assert "--master local" not in log

    # ... and the master ran every application of both DAGs, each on the worker's executors.
    master = spark_standalone.master_json(cluster["webui_port"])
    assert master["activeapps"] == []
    apps = [app for app in master["completedapps"] if app["name"].startswith("flashfeed-")
            and app["name"] != "flashfeed-probe"]
    names = sorted(app["name"] for app in apps)   # the jobs' own application names
    assert names == sorted([f"flashfeed-features-{DAY}", f"flashfeed-als-{DAY}-global", f"flashfeed-related-{DAY}",
                            *[f"flashfeed-als-{DAY}-group-{g}" for g in groups],
                            f"flashfeed-score-{slot.version}", f"flashfeed-collections-{slot.version}"]), names
    assert all(app["state"] == "FINISHED" for app in apps), apps
    work = spark_standalone.work_dir(cluster["home"])
    for app in apps:
        stderr = [p.read_text(errors="replace") for p in (work / app["id"]).glob("*/stderr")]
        assert stderr, f"{app['name']} {app['id']}: no executor ran on the worker ({work})"
        assert any("Finished task" in text for text in stderr), f"{app['name']}: executors ran no task"


def test_a_daemon_that_fails_to_start_is_named_with_its_log_and_cleaned_up(tmp_path):
    """A worker that exits at once (bad --memory): the error names its log, and the master that
    did start is stopped again, so nothing is left running."""
    home = tmp_path / "broken-cluster"
    with pytest.raises(spark_standalone.SparkStandaloneError) as error:
        spark_standalone.start(home, free_port(), free_port(), 1, "not-a-size", worker_webui_port=0)
    log = spark_standalone.log_file(home.resolve(), spark_standalone.WORKER_CLASS)
    assert str(log) in str(error.value) and "exited before it was ready" in str(error.value)
    assert not spark_standalone.status(home)["master_running"]
    assert not list(spark_standalone.pid_dir(home).glob("*.pid"))
