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
master and worker listen on loopback only, and that a daemon that cannot start is reported with
its log file. The cluster is stopped by its PIDs at the end, also when a test fails.

Its workers have no checkout either: master and worker run in a temporary folder without
PYTHONPATH, and a job of the installed wheel (driver: the venv of tests/test_installed_package.py)
runs on executors whose Python holds the pinned set but no flashfeed; they import flashfeed and
spark_jobs from the zip the job's Spark session ships (spark_jobs/executor_code.py).
"""
from __future__ import annotations

import json
import os
import subprocess
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
        # The worker offers its default: one executor of the config's spark.executor_memory. The
        # daemons (and the executors they start) run in `home` and get no PYTHONPATH.
        url = spark_standalone.start(home, port, webui_port, WORKER_CORES, worker_webui_port=free_port(),
                                     env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
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


# A job of the installed package: a flashfeed function, mapped over an RDD on the executors.
EXECUTOR_PROBE = """
import json, sys
import flashfeed
from flashfeed.core.config import load_config
from spark_jobs.common import spark_session

spark = spark_session("flashfeed-probe", load_config())

def on_executor(division):
    import flashfeed.core.divisions, spark_jobs.transforms
    return {"python": sys.executable, "flashfeed": flashfeed.core.divisions.__file__,
            "spark_jobs": spark_jobs.transforms.__file__, "key": flashfeed.core.divisions.division_key(division)}

rows = spark.sparkContext.parallelize(["Women's Apparel", "Home & D\u00e9cor"], 2).map(on_executor).collect()
print("PROBE", json.dumps({"master": spark.sparkContext.master, "driver": flashfeed.__file__, "rows": rows}))
spark.stop()
"""


def test_executors_without_flashfeed_import_the_code_the_job_ships(cluster, installed_flashfeed, pinned_environment,
                                                                   tmp_path):
    """The driver is the installed wheel, started outside the checkout; the executors' Python
    (PYSPARK_PYTHON) has the pinned set and cannot import flashfeed: what they run of flashfeed and
    spark_jobs comes from the zip the job's Spark session added (--py-files from inside the job)."""
    for daemon in (spark_standalone.MASTER_CLASS, spark_standalone.WORKER_CLASS):
        pid = int(spark_standalone.pid_file(cluster["home"].resolve(), daemon).read_text())
        assert not Path(f"/proc/{pid}/cwd").resolve().is_relative_to(REPO), f"{daemon} runs in the checkout"
    probe = tmp_path / "probe.py"
    probe.write_text(EXECUTOR_PROBE, encoding="utf-8")
    home = tmp_path / "home"
    driver = installed_flashfeed
    env = driver.env(FLASHFEED_HOME=str(home), SPARK_HOME=str(driver.site_packages / "pyspark"),
                     SPARK_LOCAL_IP="127.0.0.1", PYSPARK_DRIVER_PYTHON=str(driver.python),
                     PYSPARK_PYTHON=str(pinned_environment.python))
    spark_submit = driver.site_packages / "pyspark" / "bin" / "spark-submit"
    result = subprocess.run([str(spark_submit), "--master", cluster["url"], str(probe)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    probe_line = next(line for line in result.stdout.splitlines() if line.startswith("PROBE "))
    report = json.loads(probe_line.removeprefix("PROBE "))
    assert report["master"] == cluster["url"]
    assert report["driver"].startswith(f"{driver.site_packages}/")          # the installed package
    (shipped,) = (home / "spark-py-files").glob("flashfeed-code-*.zip")
    assert [row["key"] for row in report["rows"]] == ["womens_apparel", "home_decor"]
    for row in report["rows"]:
        assert row["python"] == str(pinned_environment.python)
        assert f"/{shipped.name}/flashfeed/core/divisions.py" in row["flashfeed"], row
        assert f"/{shipped.name}/spark_jobs/transforms/__init__.py" in row["spark_jobs"], row
    apps = spark_standalone.master_json(cluster["webui_port"])["completedapps"]
    assert [app["state"] for app in apps if app["name"] == "flashfeed-probe"] == ["FINISHED"]


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
