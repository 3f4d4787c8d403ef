"""What every flashfeed task gets unless it sets its own: owner, retries with backoff, a
timeout, and an alert when it fails for good. DAG files pass `default_args(...)` to their DAG
at parse time; it sits above `schedules` (the settings) and `alerts` (the failure callback)."""
from __future__ import annotations

from datetime import timedelta

from flashfeed_airflow.alerts import task_failed
from flashfeed_airflow.schedules import OWNER, RETRIES, TASK_TIMEOUT

RETRY_BACKOFF = 2.0                          # 2, 4, 8 ... x retry_delay
MAX_RETRY_DELAY = timedelta(minutes=10)


def default_args(retry_delay: timedelta) -> dict:
    return {
        "owner": OWNER,
        "retries": RETRIES,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": RETRY_BACKOFF,
        "max_retry_delay": MAX_RETRY_DELAY,
        "execution_timeout": TASK_TIMEOUT,
        "on_failure_callback": task_failed,
    }
