"""
### flashfeed_launch_feeds

Ahead of each launch (11:00, 15:00 and 20:00 America/New_York, 45 minutes early) builds every
member's six collections for the products on sale in [launch, launch + 24 h), loads them into a
new versioned DynamoDB table and flips the served version to it.

1. `plan_launch` names the launch slot (date, `HHMM`, version `YYYYMMDDtHHMM`).
2. Waits for the day's affinities (`flashfeed_daily_model`) and sale calendar.
3. `score_products` (Spark) -> `products/dt=D/launch=HHMM`; `build_collections` (Spark) ->
   `feeds/dt=D/launch=HHMM` with `manifest.json`.
4. `validate_feeds` checks the manifest, `load_feeds` writes the table `<prefix>feeds-<version>`
   and verifies it, `flip_served_version` points the API at it (conditional write) unless the new
   version has fewer than `serving.min_coverage_ratio` x the served version's members.
5. `apply_retention` deletes feeds tables older than the last `serving.retain_versions` served
   versions (skipped on a dry run). Roll back with the `flashfeed_rollback` DAG.

Params: `launch` forces a slot of the run's day; `dry_run` loads and verifies without flipping;
`allow_low_coverage` flips even when the coverage check fails (logged with the figures).
Re-running a slot overwrites that slot's partitions and reloads its table.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, MultipleCronTriggerTimetable, Param, task
from flashfeed_airflow.schedules import LAUNCH_TIMES, START_DATE, TIMEZONE, default_args, launch_crons
from flashfeed_airflow.sensors import SuccessMarkerSensor
from flashfeed_airflow.serving import ApplyRetentionOperator, FlipServedVersionOperator, LoadFeedsOperator

SPARK_JOBS = Path(__file__).resolve().parents[1] / "spark_jobs"
PLAN = "ti.xcom_pull(task_ids='plan_launch')"
SLOT_ARGS = ["--dt", f"{{{{ {PLAN}['dt'] }}}}", "--launch", f"{{{{ {PLAN}['launch'] }}}}"]

with DAG(
    dag_id="flashfeed_launch_feeds",
    description="Per-launch collections -> versioned DynamoDB table -> flip of the served version",
    schedule=MultipleCronTriggerTimetable(*launch_crons(), timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    params={
        "launch": Param(
            "",
            type="string",
            enum=["", *[t.replace(":", "") for t in LAUNCH_TIMES]],
            description="Launch slot HHMM to build; empty = the next launch after the run's logical date.",
        ),
        "dry_run": Param(False, type="boolean", description="Load and verify the new table, but do not flip."),
        "allow_low_coverage": Param(
            False, type="boolean",
            description="Flip even if the new version has fewer than serving.min_coverage_ratio x the "
                        "served version's members.",
        ),
    },
    tags=["flashfeed", "feeds", "spark", "dynamodb"],
    doc_md=__doc__,
) as dag:

    @task
    def plan_launch(logical_date=None, dag_run=None, params=None) -> dict:
        from flashfeed_airflow.planning import plan_launch, run_date

        return plan_launch(run_date(logical_date, dag_run.run_after), params.get("launch") or None)

    plan = plan_launch()

    wait_affinity = SuccessMarkerSensor(
        task_id="wait_for_affinity", partition=f"{{{{ {PLAN}['affinity'] }}}}",
        mode="reschedule", poke_interval=120, timeout=int(timedelta(hours=3).total_seconds()),
    )
    wait_calendar = SuccessMarkerSensor(
        task_id="wait_for_sale_calendar", partition=f"{{{{ {PLAN}['sale_calendar'] }}}}",
        mode="reschedule", poke_interval=120, timeout=int(timedelta(hours=3).total_seconds()),
    )
    score = SparkSubmitOperator(
        task_id="score_products", application=str(SPARK_JOBS / "score_products.py"),
        application_args=SLOT_ARGS, name="flashfeed-score-products", conn_id="spark_default",
    )
    collections = SparkSubmitOperator(
        task_id="build_collections", application=str(SPARK_JOBS / "build_collections.py"),
        application_args=SLOT_ARGS, name="flashfeed-collections", conn_id="spark_default",
    )
    wait_feeds = SuccessMarkerSensor(
        task_id="wait_for_feeds", partition=f"{{{{ {PLAN}['feeds'] }}}}",
        mode="reschedule", poke_interval=30, timeout=int(timedelta(minutes=30).total_seconds()),
    )

    @task
    def validate_feeds(plan: dict) -> dict:
        from flashfeed_airflow.planning import validate_feeds

        return validate_feeds(plan["feeds"], plan["version"])

    load = LoadFeedsOperator(
        task_id="load_feeds", feeds_uri=f"{{{{ {PLAN}['feeds'] }}}}", version=f"{{{{ {PLAN}['version'] }}}}",
    )
    flip = FlipServedVersionOperator(
        task_id="flip_served_version",
        version=f"{{{{ {PLAN}['version'] }}}}",
        manifest_uri=f"{{{{ {PLAN}['feeds'] }}}}/manifest.json",
        dry_run="{{ params.dry_run }}",
        allow_low_coverage="{{ params.allow_low_coverage }}",
        retries=0,  # a lost race or a refused flip needs a person, not a retry
    )

    retention = ApplyRetentionOperator(task_id="apply_retention", dry_run="{{ params.dry_run }}")

    plan >> [wait_affinity, wait_calendar] >> score >> collections >> wait_feeds
    wait_feeds >> validate_feeds(plan) >> load >> flip >> retention
