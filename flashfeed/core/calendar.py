"""Launch slots and sale windows, all in the retailer's time zone (America/New_York).

A launch slot is a local date plus a local launch time (`HHMM`, e.g. `1100`); its window is
[launch, launch + window_hours) and its served version id is `<YYYYMMDD>t<HHMM>`.
Everything is derived from a run's logical date: no task ever asks for the current time.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from flashfeed.core.config import load_config


@dataclass(frozen=True)
class LaunchSlot:
    dt: date          # local date of the launch
    hhmm: str         # local launch time, e.g. "1100"
    tz: ZoneInfo
    window_hours: int = 24

    @property
    def starts_at(self) -> datetime:
        """Launch instant in UTC (DST-correct: 11:00 local is 15:00 or 16:00 UTC)."""
        local = datetime.combine(self.dt, time(int(self.hhmm[:2]), int(self.hhmm[2:])), self.tz)
        return local.astimezone(timezone.utc)

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + timedelta(hours=self.window_hours)

    @property
    def version(self) -> str:
        return f"{self.dt:%Y%m%d}t{self.hhmm}"


def _calendar(config: dict | None) -> dict:
    return (config or load_config())["calendar"]


def launch_hhmms(config: dict | None = None) -> list[str]:
    return [t.replace(":", "") for t in _calendar(config)["launch_times"]]


def slot(dt: date | str, hhmm: str, config: dict | None = None) -> LaunchSlot:
    cal = _calendar(config)
    if hhmm not in launch_hhmms(config):
        raise ValueError(f"launch {hhmm!r} is not a configured launch time {launch_hhmms(config)}: set param "
                         "launch (or --launch) to one of them, HHMM local time")
    day = date.fromisoformat(dt) if isinstance(dt, str) else dt
    return LaunchSlot(day, hhmm, ZoneInfo(cal["timezone"]), cal["window_hours"])


def slot_for_run(logical_date: datetime, config: dict | None = None) -> LaunchSlot:
    """The launch a run prepares: the first launch at or after its logical date (local time).

    Scheduled runs fire a lead time before a launch, so this is that launch; a manual run
    at 12:30 prepares the 15:00 launch, and one after 20:00 prepares tomorrow's 11:00.
    """
    cal = _calendar(config)
    tz = ZoneInfo(cal["timezone"])
    local = logical_date.astimezone(tz)
    for day_offset in (0, 1):
        day = local.date() + timedelta(days=day_offset)
        for hhmm in launch_hhmms(config):
            candidate = slot(day, hhmm, config)
            if candidate.starts_at >= logical_date.astimezone(timezone.utc):
                return candidate
    raise AssertionError("unreachable: there is always a launch within a day")


def model_date_for_run(logical_date: datetime, config: dict | None = None) -> date:
    """The daily model's partition date: the local date of its logical date."""
    return logical_date.astimezone(ZoneInfo(_calendar(config)["timezone"])).date()


def day_window(dt: date | str, config: dict | None = None) -> tuple[datetime, datetime]:
    """Every instant any launch of day `dt` can sell in: [first launch, last launch + window)."""
    slots = [slot(dt, hhmm, config) for hhmm in launch_hhmms(config)]
    return min(s.starts_at for s in slots), max(s.ends_at for s in slots)
