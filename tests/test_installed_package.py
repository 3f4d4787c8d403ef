"""The wheel, installed into a fresh venv with the pinned set and nothing of the checkout, runs
the command line and parses every DAG; its Spark tasks submit the installed job files.

Everything runs with its working directory outside the checkout and without PYTHONPATH. The
venv is the session fixture `installed_flashfeed` (tests/installed_package.py), shared with
tests/e2e/test_spark_cluster.py, whose cluster runs a job of it on executors without flashfeed.
"""
from __future__ import annotations

import json
import zipfile

import pytest

from tests.installed_package import REPO, run

pytestmark = pytest.mark.slow   # builds a wheel and two venvs: tens of seconds

EXPECTED_DAGS = {"flashfeed_daily_model", "flashfeed_launch_feeds", "flashfeed_launch_watch", "flashfeed_rollback",
                 "flashfeed_weekly_tune", "flashfeed_experiment", "flashfeed_freshness"}

# Run by the installed Python: parse the installed DAG folder as Airflow does and report where
# everything was found.
PARSE_INSTALLED_DAGS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
import flashfeed, flashfeed_airflow, spark_jobs
from flashfeed.core import config

bag = DagBag(dag_folder=str(config.project_path("dags")))
tasks = [task for dag in bag.dags.values() for task in dag.tasks if hasattr(task, "application")]
print(json.dumps({
    "import_errors": {path: str(error) for path, error in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "packages": [flashfeed.__file__, flashfeed_airflow.__file__, spark_jobs.__file__],
    "dags_folder": str(config.project_path("dags")),
    "config": str(config.config_path()),
    "timezone": config.load_config()["calendar"]["timezone"],
    "sql": str(config.project_path("include", "sql")),
    "applications": sorted({task.application for task in tasks}),
}))
"""


def test_the_wheel_holds_the_code_the_dags_and_the_files_read_at_run_time(installed_flashfeed):
    (wheel,) = installed_flashfeed.root.parent.glob("dist/flashfeed-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = ({f"flashfeed/{p.relative_to(REPO / 'flashfeed')}" for p in (REPO / "flashfeed").rglob("*.py")}
                | {f"spark_jobs/{p.relative_to(REPO / 'spark_jobs')}" for p in (REPO / "spark_jobs").rglob("*.py")}
                | {f"flashfeed_airflow/{p.name}" for p in (REPO / "plugins" / "flashfeed_airflow").glob("*.py")}
                | {f"flashfeed/_project/dags/{p.name}" for p in (REPO / "dags").glob("*.py")}
                | {f"flashfeed/_project/include/{p.relative_to(REPO / 'include')}"
                   for p in [REPO / "include" / "flashfeed.yaml", *(REPO / "include").glob("sql/*.sql"),
                             *(REPO / "include").glob("spark-conf/*")]}
                | {"flashfeed/local/dynalite_server.js"})
    assert expected - names == set()
    assert not [name for name in names if name.startswith(("tests/", "bench/", "plugins/", "dags/", "include/"))
                or "__pycache__" in name]


def test_installed_flashfeed_runs_its_command_and_parses_every_dag_without_the_checkout(installed_flashfeed,
                                                                                        tmp_path):
    environment = installed_flashfeed
    env = environment.env(AIRFLOW_HOME=str(tmp_path / "airflow"), FLASHFEED_HOME=str(tmp_path / "home"),
                          AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__UNIT_TEST_MODE="True")
    assert "flashfeed demo" in run([environment.bin / "flashfeed", "--help"], tmp_path, env).stdout

    report = json.loads(run([environment.python, "-c", PARSE_INSTALLED_DAGS], tmp_path, env).stdout.splitlines()[-1])
    assert report["import_errors"] == {}
    assert set(report["dag_ids"]) == EXPECTED_DAGS
    installed = environment.site_packages
    for path in [*report["packages"], report["dags_folder"], report["config"], report["sql"]]:
        assert path.startswith(f"{installed}/"), f"{path} is not the installed package's"
    assert report["timezone"] == "America/New_York"      # the installed include/flashfeed.yaml, validated
    # spark-submit starts the installed job files.
    assert report["applications"] and all(app.startswith(f"{installed}/spark_jobs/") for app in report["applications"])
    assert {app.rsplit("/", 1)[1] for app in report["applications"]} <= {
        p.name for p in (REPO / "spark_jobs").glob("*.py")}
