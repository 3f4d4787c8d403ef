"""
### flashfeed_daily_model

Once a day at 05:00 America/New_York, before the first launch, learns every member's affinity
to the subclass-brands on sale today.

1. `plan_model_day` names the day D (local date) and the partitions this run owns.
2. `wait_for_*` wait for the day's raw inputs (`_SUCCESS`): events and returns of D-1,
   catalog and sale calendar of D.
3. `build_features` (Spark): cleaning, implicit ratings, member groups -> `features/dt=D`.
4. `discover_groups` reads the groups of the day; `train_group_als` is one Spark application
   per member group (mapped) -> `models/dt=D/group=G`, `affinity/dt=D/group=G`. Each first
   passes a quality gate (NDCG@k on a time holdout against popularity): a group that fails
   it, or whose training fails, is served from its last good model, or from popularity.
5. `report_quality` logs which groups fell back and why, and writes `models/dt=D/metrics.json`
   and `models/dt=D/report.png`.
6. `publish_affinity` seals `affinity/dt=D/_SUCCESS`, which the launch feeds wait for.

Re-running a day (clear + re-run, or a backfill) overwrites that day's partitions only.
Param `groups` retrains only the listed groups (the others keep the day's earlier output).
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, CronTriggerTimetable, Param, task
from flashfeed_airflow.schedules import DAILY_MODEL_CRON, START_DATE, TIMEZONE, default_args
from flashfeed_airflow.sensors import SuccessMarkerSensor

SPARK_JOBS = Path(__file__).resolve().parents[1] / "spark_jobs"
RAW_INPUTS = ("events", "returns", "catalog", "sale_calendar")
PLAN = "ti.xcom_pull(task_ids='plan_model_day')"

with DAG(
    dag_id="flashfeed_daily_model",
    description="Daily per-group ALS affinities of members to subclass-brands on sale",
    schedule=CronTriggerTimetable(DAILY_MODEL_CRON, timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retry_delay=timedelta(minutes=2)),
    params={
        "groups": Param(
            [],
            type="array",
            items={"type": "string", "pattern": "^[0-9]{2,3}$"},
            description="Member groups to retrain (e.g. [\"13\", \"21\"]); empty = every group of the day.",
        ),
    },
    tags=["flashfeed", "model", "spark"],
    doc_md=__doc__,
) as dag:

    @task
    def plan_model_day(logical_date=None, dag_run=None) -> dict:
        from flashfeed_airflow.planning import plan_model_day, run_date

        return plan_model_day(run_date(logical_date, dag_run.run_after))

    plan = plan_model_day()

    waits = [
        SuccessMarkerSensor(
            task_id=f"wait_for_{name}",
            partition=f"{{{{ {PLAN}['raw']['{name}'] }}}}",
            mode="reschedule",
            poke_interval=300,
            timeout=int(timedelta(hours=5).total_seconds()),
        )
        for name in RAW_INPUTS
    ]

    features = SparkSubmitOperator(
        task_id="build_features",
        application=str(SPARK_JOBS / "features.py"),
        application_args=["--dt", f"{{{{ {PLAN}['dt'] }}}}"],
        name="flashfeed-features",
        conn_id="spark_default",
    )

    @task
    def discover_groups(plan: dict, params=None) -> list[list[str]]:
        from flashfeed_airflow.planning import discover_groups

        groups = discover_groups(plan["features"], params.get("groups") or None)
        return [["--dt", plan["dt"], "--group", group] for group in groups]

    groups = discover_groups(plan)
    train = SparkSubmitOperator.partial(
        task_id="train_group_als",
        application=str(SPARK_JOBS / "train_group.py"),
        name="flashfeed-als",
        conn_id="spark_default",
        map_index_template="group {{ task.application_args[-1] }}",
    ).expand(application_args=groups)

    @task
    def report_quality(plan: dict) -> dict:
        from flashfeed_airflow.planning import report_quality

        return report_quality(plan["models"], plan["features"], plan["dt"])

    @task
    def publish_affinity(plan: dict) -> list[str]:
        from flashfeed_airflow.planning import publish_affinity

        return publish_affinity(plan["affinity"], plan["features"])

    plan >> waits >> features >> groups
    train >> report_quality(plan) >> publish_affinity(plan)
