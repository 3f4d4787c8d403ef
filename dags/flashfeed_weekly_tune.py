"""
### flashfeed_weekly_tune

Off by default (paused when created): unpause it to let the data choose each group's ALS
settings. Sundays at 01:00 America/New_York, before that day's daily model:

1. `plan_tune_week` names the day D and the folder `tuning/dt=D` of the lake.
2. `tune_groups` (Spark, `spark_jobs/tune.py`) splits the history before D as the daily gate
   does (fit, validation, test: each member's last `evaluation.holdout_days` and the days
   before them), fits every point of `evaluation.tune_grid` per group on the fit part, chooses
   each group's best on the validation part and reports it on the test part. It writes
   `tuning/dt=D/results.csv` and `tuning/dt=D/settings.json` (each group's rank, regParam and
   alpha with their validation and test NDCG next to popularity's).

From day D on, `train_group_als` of `flashfeed_daily_model` reads the newest
`tuning/dt=*/settings.json` not after its day and uses a group's tuned settings in place of
include/flashfeed.yaml's (its log and metrics.json say which). Re-running overwrites
`tuning/dt=D` only; deleting that folder returns the groups to the config.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, CronTriggerTimetable, task

from flashfeed_airflow.defaults import default_args
from flashfeed_airflow.schedules import (
    NO_RETRIES,
    SPARK_POOL,
    SPARK_TUNE_TIMEOUT,
    START_DATE,
    TIMEZONE,
    WEEKLY_TUNE_CRON,
    spark_submit_conf,
)
from flashfeed_airflow.spark import LakeSparkSubmitOperator, spark_job

PLAN = "ti.xcom_pull(task_ids='plan_tune_week')"

with DAG(
    dag_id="flashfeed_weekly_tune",
    description="Weekly: choose each member group's ALS settings on a validation part, write them to the lake",
    schedule=CronTriggerTimetable(WEEKLY_TUNE_CRON, timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,   # off by default: the committed settings serve until a team opts in
    default_args=default_args(retry_delay=timedelta(minutes=5)),
    tags=["flashfeed", "model", "spark", "tuning"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True, retries=NO_RETRIES)  # pure date arithmetic: a retry cannot change it
    def plan_tune_week(logical_date=None, dag_run=None) -> dict:
        """Names the day D and the lake folder the chosen settings go to (XCom)."""
        from flashfeed_airflow.planning import plan_tune_week, run_date

        return plan_tune_week(run_date(logical_date, dag_run.run_after))

    tune_groups = LakeSparkSubmitOperator(
        task_id="tune_groups",
        application=spark_job("tune"),
        application_args=["--dt", f"{{{{ {PLAN}['dt'] }}}}",
                          "--out", f"{{{{ {PLAN}['tuning'] }}}}/results.csv",
                          "--settings-out", f"{{{{ {PLAN}['tuning'] }}}}/settings.json"],
        name="flashfeed-tune",
        conn_id="spark_default", conf=spark_submit_conf("plan_tune_week"),
        pool=SPARK_POOL,
        execution_timeout=SPARK_TUNE_TIMEOUT,
        doc_md="""
Spark job `spark_jobs/tune.py --dt D`: `evaluation.tune_grid` per member group, chosen on the
validation part, reported on the test part. **Writes** `tuning/dt=D/{results.csv, settings.json}`;
the daily model reads the newest settings.json not after its day. **Re-run**: clear this task.
""",
    )

    plan_tune_week() >> tune_groups
