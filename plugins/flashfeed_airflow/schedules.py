"""Schedules and shared task settings of the DAGs, in the retailer's time zone (DST handled by
the timetables). Constants and a param factory only: DAG files import this at parse time, and
so do the modules above it (alerts, defaults)."""
from __future__ import annotations

from datetime import datetime, timedelta

TIMEZONE = "America/New_York"
LAUNCH_TIMES = ("11:00", "15:00", "20:00")  # must match calendar.launch_times in include/flashfeed.yaml
LAUNCH_SLOTS = tuple(t.replace(":", "") for t in LAUNCH_TIMES)  # HHMM, as in versions and partitions
LAUNCH_LEAD_MINUTES = 45  # the feeds of a launch start this long before it
FLIP_DEADLINE_BEFORE_LAUNCH = timedelta(minutes=15)  # alert when a launch is not flipped by then
DAILY_MODEL_CRON = "0 5 * * *"  # before the first launch
WEEKLY_TUNE_CRON = "0 1 * * 0"  # Sundays at 01:00, before that day's daily model
FRESHNESS_CRON = "*/15 6-23 * * *"   # every quarter hour from 06:00 to 23:45 New York: each run
                                     # refreshes the quarter hour that just ended
MINUTES_PER_DAY = 24 * 60


def launch_crons(launch_times=LAUNCH_TIMES, lead_minutes: int = LAUNCH_LEAD_MINUTES) -> list[str]:
    """One cron per launch, `lead_minutes` before it (same local day)."""
    crons = []
    for hhmm in launch_times:
        hours, minutes = (int(x) for x in hhmm.split(":"))
        start = hours * 60 + minutes - lead_minutes
        if not 0 <= start < MINUTES_PER_DAY:
            raise ValueError(f"a lead of {lead_minutes} min puts launch {hhmm} on another day")
        crons.append(f"{start % 60} {start // 60} * * *")
    return crons


def launch_slot_param(action: str):
    """The `launch` param of the DAGs that work on one launch: a slot of the run's day, or empty
    for the next launch after the run's logical date."""
    from airflow.sdk import Param

    return Param("", type="string", enum=["", *LAUNCH_SLOTS], title="Launch slot",
                 description=f"Launch slot HHMM to {action} ({', '.join(LAUNCH_SLOTS)}); empty = the next "
                             "launch after the run's logical date.")


def launch_watch_crons() -> list[str]:
    """The launch watch checks each launch FLIP_DEADLINE_BEFORE_LAUNCH before it."""
    return launch_crons(lead_minutes=int(FLIP_DEADLINE_BEFORE_LAUNCH.total_seconds() // 60))


# Early, so that a run (or a backfill) of any imported history gets its tasks: Airflow creates
# none for a logical date before start_date, and UCI's sample is from 2011. Every DAG has
# catchup=False, so the scheduler still starts with the newest interval only.
START_DATE = datetime(2000, 1, 1)
OWNER = "flashfeed"

# Every Spark application takes a slot of this pool, so that a backfill or the daily model's
# mapped trainings cannot start more applications than the cluster holds. `flashfeed
# airflow-init` creates it with config `airflow.spark_pool_slots` slots.
SPARK_POOL = "flashfeed_spark"


def spark_submit_conf(plan_task: str) -> dict[str, str]:
    """spark-submit `--conf` settings that must be known before the driver JVM starts (its
    memory), from include/flashfeed.yaml. The plan task reads the config at run time and passes
    them on in its XCom, so the DAG file reads nothing at parse time."""
    return {key: f"{{{{ ti.xcom_pull(task_ids='{plan_task}')['spark_submit']['{key}'] }}}}"
            for key in SPARK_SUBMIT_KEYS}


# Set per application by spark-submit (planning.spark_submit_settings), not by the job itself.
SPARK_SUBMIT_KEYS = ("spark.driver.memory", "spark.executor.memory")

# Retries: Spark, lake and DynamoDB hiccups are worth a retry with exponential backoff.
# Tasks whose outcome a retry cannot change (planning, validation, a refused flip, a sensor
# that timed out waiting for data) get none.
RETRIES = 2
NO_RETRIES = 0

# Execution timeouts: a hung task must fail (and alert) well before the launch it serves.
TASK_TIMEOUT = timedelta(minutes=10)            # small lake and DynamoDB tasks
SPARK_DAILY_TIMEOUT = timedelta(hours=1)        # features, one group's ALS
SPARK_TUNE_TIMEOUT = timedelta(hours=3)         # the weekly grid over every group
SPARK_LAUNCH_TIMEOUT = timedelta(minutes=20)    # scoring, collections: 45 min before launch in all
SPARK_REFRESH_TIMEOUT = timedelta(minutes=10)   # one quarter hour's refresh: less than the next one's wait
LOAD_TIMEOUT = timedelta(minutes=20)            # batch load + verification of one version
