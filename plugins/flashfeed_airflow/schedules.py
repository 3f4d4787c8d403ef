"""Schedules and shared defaults of the DAGs, in the retailer's time zone (DST handled by the
timetables)."""
from __future__ import annotations

from datetime import datetime, timedelta

TIMEZONE = "America/New_York"
LAUNCH_TIMES = ("11:00", "15:00", "20:00")  # must match calendar.launch_times in include/flashfeed.yaml
LAUNCH_LEAD_MINUTES = 45  # the feeds of a launch start this long before it
DAILY_MODEL_CRON = "0 5 * * *"  # before the first launch
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


START_DATE = datetime(2026, 11, 1)
OWNER = "flashfeed"
RETRIES = 2  # Spark, lake and DynamoDB hiccups are worth a retry with backoff


def default_args(retry_delay: timedelta) -> dict:
    return {"owner": OWNER, "retries": RETRIES, "retry_delay": retry_delay, "retry_exponential_backoff": True}
