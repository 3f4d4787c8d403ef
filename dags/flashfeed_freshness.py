"""
### flashfeed_freshness

Every quarter hour from 06:00 to 23:45 America/New_York, shows what members just did in their
window: a member who browsed in the quarter hour that just ended gets her payloads rebuilt with
her recent-activity boost and "because you viewed" carousels recomputed from every event up to
then, and written into the served table, within 30 minutes of her event.

1. `plan_refresh` names the quarter hour that just ended (UTC) and reads the served version
   from the control item (skips when nothing is served).
2. `wait_for_intraday_events` waits for `raw/events_intraday/dt=D/hhmm=HHMM/_SUCCESS`, sealed
   by the upstream export per quarter hour (skipped after 10 minutes: the next run catches up,
   as it reads every sealed quarter hour of the day).
3. `refresh_payloads` (Spark, `spark_jobs/refresh_feeds.py`) rebuilds the payloads of the members
   with an event in that quarter hour into `feeds/dt=D/launch=HHMM/refresh/quarter=Q`.
4. `apply_refresh` writes them into the served version's table, checking before every batch
   that the version is still served: it never touches a version that is not served, and a flip
   meanwhile wins (the rest is dropped). It logs members refreshed, items written and the
   delay from their newest event to the served payload.

Off until unpaused: turn it on once your export writes the intraday events. Re-running a
quarter hour rewrites the same items; a launch after it serves its own, complete payloads.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, CronTriggerTimetable, task

from flashfeed_airflow.defaults import default_args
from flashfeed_airflow.schedules import (
    FRESHNESS_CRON,
    NO_RETRIES,
    SPARK_POOL,
    SPARK_REFRESH_TIMEOUT,
    START_DATE,
    TIMEZONE,
    spark_submit_conf,
)
from flashfeed_airflow.sensors import SuccessMarkerSensor
from flashfeed_airflow.spark import LakeSparkSubmitOperator, spark_job

PLAN = "ti.xcom_pull(task_ids='plan_refresh')"

with DAG(
    dag_id="flashfeed_freshness",
    description="Every 15 minutes: rewrite the served payloads of the members who just acted",
    schedule=CronTriggerTimetable(FRESHNESS_CRON, timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    tags=["flashfeed", "freshness", "spark", "dynamodb"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True, retries=NO_RETRIES)   # reads the served pointer: a retry would plan the same
    def plan_refresh(logical_date=None, dag_run=None) -> dict:
        """The quarter hour that just ended and the served version it refreshes (XCom)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from flashfeed_airflow.planning import plan_refresh, run_date

        try:
            return plan_refresh(run_date(logical_date, dag_run.run_after))
        except LookupError as nothing:
            raise AirflowSkipException(str(nothing)) from None

    plan = plan_refresh()
    wait_for_intraday_events = SuccessMarkerSensor(
        task_id="wait_for_intraday_events", partition=f"{{{{ {PLAN}['intraday_events'] }}}}",
        producer="the upstream export of raw events_intraday (one partition per quarter hour)",
        mode="reschedule", poke_interval=60, timeout=int(timedelta(minutes=10).total_seconds()),
        soft_fail=True, retries=NO_RETRIES,
    )
    refresh_payloads = LakeSparkSubmitOperator(
        task_id="refresh_payloads", application=spark_job("refresh_feeds"),
        application_args=["--dt", f"{{{{ {PLAN}['dt'] }}}}", "--launch", f"{{{{ {PLAN}['launch'] }}}}",
                          "--quarter", f"{{{{ {PLAN}['quarter'] }}}}"],
        name="flashfeed-refresh", conn_id="spark_default", conf=spark_submit_conf("plan_refresh"),
        pool=SPARK_POOL, execution_timeout=SPARK_REFRESH_TIMEOUT,
        doc_md="""
Spark job `spark_jobs/refresh_feeds.py --dt D --launch HHMM --quarter Q`. **Reads** the day's
sealed intraday events, features, affinities, product scores and related lists of the served
version. **Writes** `feeds/dt=D/launch=HHMM/refresh/quarter=Q` (the acted members' payloads and a
manifest). **Re-run**: clear it; it overwrites that quarter's partition only.
""",
    )

    @task(multiple_outputs=True)
    def apply_refresh(plan: dict) -> dict:
        """Writes the refreshed payloads into the served table while (and only while) it is served."""
        from flashfeed_airflow.planning import apply_refresh

        return apply_refresh(plan["refresh"])

    plan >> wait_for_intraday_events >> refresh_payloads >> apply_refresh(plan)
