"""
### flashfeed_launch_watch

The deadline alert of the launches: 15 minutes before each launch (10:45, 14:45 and 19:45
America/New_York) `check_launch_flipped` reads the served version. If the launch's version
(or a newer one) is served, the run succeeds. If not, it alerts (ERROR line in the task log and
a POST to FLASHFEED_ALERT_WEBHOOK) with how far the launch's feeds got (affinity sealed,
products scored, collections built, table loaded) and fails, so the miss shows red in the UI.

It checks the outcome the members see, the served version, rather than how long a
`flashfeed_launch_feeds` run has been going; it does not depend on that run at all. Airflow's
own DAG deadline alerts were not used: on Airflow 3.3.2 a DAG with a `deadline` fails
`airflow dags test` once its run has succeeded (AttributeError in DagRun.update_state).

Param `launch` checks another slot of the run's day. Re-running it only reads.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, MultipleCronTriggerTimetable, task

from flashfeed_airflow.defaults import default_args
from flashfeed_airflow.schedules import NO_RETRIES, START_DATE, TIMEZONE, launch_slot_param, launch_watch_crons

with DAG(
    dag_id="flashfeed_launch_watch",
    description="Alert when a launch's feeds are not served 15 minutes before it goes live",
    schedule=MultipleCronTriggerTimetable(*launch_watch_crons(), timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    params={
        "launch": launch_slot_param("check"),
    },
    tags=["flashfeed", "feeds", "alerts"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True, retries=NO_RETRIES)  # the check is about this moment: a later retry is not it
    def check_launch_flipped(logical_date=None, dag_run=None, params=None) -> dict:
        """Succeeds if the launch's version (or a newer one) is served; otherwise alerts with the
        launch's progress and fails. **Re-run**: clear it after the flip to see it green; it only reads."""
        from flashfeed_airflow.alerts import check_launch_flipped
        from flashfeed_airflow.planning import run_date

        return check_launch_flipped(run_date(logical_date, dag_run.run_after), params.get("launch") or None)

    check_launch_flipped()
