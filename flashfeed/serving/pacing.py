"""Writing no faster than a provisioned table allows: the freshness refresh into the served table.

With `serving.billing_mode: PROVISIONED` a served table keeps
`serving.provisioned.serving_write_capacity` write units after its load, and the freshness
refresh (`loader.refresh_served`) writes into it every quarter hour. DynamoDB's arithmetic: one
write unit is one write per second of an item of up to 1 KB; a bigger item costs one unit per
started KB of its size (attribute names and values, `payloads.item_size`). Writing faster than
the table's capacity is throttled (ProvisionedThroughputExceededException, or items left
unprocessed), so the refresh paces itself instead:

- `write_units(item)`: what one put of the item costs;
- `paced_batches`: BatchWriteItem batches of at most `size` items and at most one second of
  the table's capacity (an item that alone costs more goes in a batch of its own);
- `WritePacer`: a batch starts only once the units spent before it are earned back at the
  table's rate: after a batch of U units at R units/s, the next one waits until U / R seconds
  after the previous one started;
- `write_batch`: one paced BatchWriteItem; throttling and unprocessed items wait for the
  capacity their items need (doubling with each attempt, capped) and are retried, at most
  `MAX_ATTEMPTS` times, then LoadError with the cause and the next step.

An on-demand table has no rate: nothing waits, throttling is retried with the loader's backoff.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterable, Iterator

from flashfeed.core.lake import QUARTER_MINUTES
from flashfeed.serving.errors import LoadError
from flashfeed.serving.payloads import item_size
from flashfeed.serving.tables import (
    backoff_seconds,
    batch_write,
    describe_table,
    provisioned_capacity,
    set_write_capacity,
)

logger = logging.getLogger(__name__)

WRITE_UNIT_BYTES = 1024              # one write unit: one write per second of an item up to 1 KB
MAX_ATTEMPTS = 6                     # per batch, the first try included
THROTTLE_WAIT_MIN_SECONDS = 0.1      # the first wait after a throttle, at least
THROTTLE_WAIT_CAP_SECONDS = 20.0     # one wait: at most (so a batch gives up within about 1.5 min)
REFRESH_PERIOD_SECONDS = QUARTER_MINUTES * 60   # a refresh should end before the next one starts
MEAN_ROUNDING_UNITS = 0.5            # an item's size rounds up to whole KB: half a unit on average

Log = logging.Logger | logging.LoggerAdapter


def write_units(item: dict) -> int:
    """Write units one put of this table item (`{"member_id": {"S": ..}, "feed": .., "payload": ..}`) costs."""
    size = item_size(item["member_id"]["S"], item["feed"]["S"], item["payload"]["S"])
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def paced_batches(items: Iterable[dict], units_per_second: float | None, size: int
                  ) -> Iterator[tuple[list[dict], int]]:
    """(batch, its write units): at most `size` items, and, for a provisioned table, at most one
    second of its capacity (`units_per_second`); an item costing more than that goes alone."""
    limit = math.floor(units_per_second) if units_per_second else None
    batch: list[dict] = []
    units = 0
    for item in items:
        cost = write_units(item)
        if batch and (len(batch) == size or (limit is not None and units + cost > limit)):
            yield batch, units
            batch, units = [], 0
        batch.append(item)
        units += cost
    if batch:
        yield batch, units


class WritePacer:
    """Spends a provisioned table's write units no faster than it earns them (`units_per_second`;
    None: on-demand, never waits). `clock` and `sleep` default to this module's `time` (tests
    replace either)."""

    def __init__(self, units_per_second: float | None, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.units_per_second = units_per_second
        self._clock, self._sleep = clock or time.monotonic, sleep or time.sleep
        self._earned_back_at: float | None = None   # when the units spent so far are earned back
        self.units = 0                               # units spent (booked) so far
        self.waited = 0.0                            # seconds slept, pacing and throttling

    def spend(self, units: int) -> float:
        """Wait until `units` may be written now, and book them; returns the seconds waited."""
        self.units += units
        if not self.units_per_second:
            return 0.0
        now = self._clock()
        start = now if self._earned_back_at is None else max(now, self._earned_back_at)
        self._pause(start - now)
        self._earned_back_at = start + units / self.units_per_second
        return start - now

    def throttled(self, units: int, attempt: int) -> float:
        """After a throttle (or unprocessed items) on try `attempt` (1 = the first retry) of a
        batch whose unwritten items cost `units`: wait for that capacity, doubled per attempt,
        within [THROTTLE_WAIT_MIN_SECONDS, THROTTLE_WAIT_CAP_SECONDS]; returns the seconds waited.
        The retry right after spends those units again: the next batch waits for them."""
        if not self.units_per_second:
            seconds = backoff_seconds(attempt)
            self._pause(seconds)
            return seconds
        earn = units / self.units_per_second * 2 ** (attempt - 1)
        seconds = min(THROTTLE_WAIT_CAP_SECONDS, max(THROTTLE_WAIT_MIN_SECONDS, earn))
        self._pause(seconds)
        self._earned_back_at = self._clock() + units / self.units_per_second
        return seconds

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._sleep(seconds)
            self.waited += seconds


def write_batch(client, table: str, items: list[dict], units: int, pacer: WritePacer, counters) -> None:
    """Put the batch (of `units` write units) when the pacer allows; retry throttling and
    unprocessed items at most MAX_ATTEMPTS times in all. `counters.add(written=, batches=, retries=)`."""
    pacer.spend(units)
    requests, cause = batch_write(
        client, table, items, counters, MAX_ATTEMPTS,
        lambda unwritten, attempt: pacer.throttled(sum(write_units(r["PutRequest"]["Item"]) for r in unwritten),
                                                   attempt))
    if not requests:
        return
    first = requests[0]["PutRequest"]["Item"]
    rate = pacer.units_per_second
    raise LoadError(
        f"{len(requests)} items still unwritten to {table} after {MAX_ATTEMPTS} attempts, {cause} (e.g. member "
        f"{first['member_id']['S']} feed {first['feed']['S']}; paced to "
        f"{f'{rate:g} write units/s' if rate else 'no rate: on-demand'}). Something else writes into the table, "
        "or its capacity was lowered meanwhile. Next step: raise serving.provisioned.serving_write_capacity (and the "
        "table's write capacity), then clear this task: a re-run rewrites the same items"
    )


def refresh_rate(client, table: str, log: Log = logger) -> float | None:
    """The write units per second the refresh may spend in the served `table`: its provisioned
    write capacity (None when it is on-demand). A table below the configured
    `serving.provisioned.serving_write_capacity` (loaded under an older config) is raised to it
    first: raising is always allowed, and the refresh needs it."""
    description = describe_table(client, table) or {}
    current = int((description.get("ProvisionedThroughput") or {}).get("WriteCapacityUnits") or 0)
    if description.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST" or not current:
        return None
    capacity = provisioned_capacity()
    wanted = capacity["serving_write_capacity"] if capacity else None
    if wanted and current < wanted:
        try:
            set_write_capacity(client, table, wanted, "(below serving.provisioned.serving_write_capacity: the "
                                                      "freshness refresh needs it)", log)
            return float(wanted)
        except Exception as error:   # best effort: pace at what the table has
            log.warning("Could not raise the write capacity of %s from %d to %d units (%s: %s); pacing the refresh "
                        "to %d units/s. Next step: raise it by hand (aws dynamodb update-table)", table, current,
                        wanted, type(error).__name__, error, current)
    return float(current)


def estimated_units(manifest: dict) -> int:
    """About how many write units a refresh costs: its bytes in KB, plus half a unit per item
    (sizes round up to whole KB). Keys and attribute names are a few dozen bytes: left out."""
    payload_bytes = sum(entry["bytes"] for data_set in manifest["data_sets"].values()
                        for entry in data_set["files"])
    return math.ceil(payload_bytes / WRITE_UNIT_BYTES + MEAN_ROUNDING_UNITS * int(manifest["total_payloads"]))


def log_plan(table: str, manifest: dict, rate: float | None, log: Log = logger) -> None:
    """Say how long the refresh takes at the table's rate, and warn when that is longer than the
    quarter hour between two refreshes (with the capacity that would fit)."""
    if not rate:
        log.info("Refresh into %s: on-demand table, not paced", table)
        return
    units = estimated_units(manifest)
    seconds = units / rate
    log.info("Refresh into %s: %s items, about %s write units, paced to the table's %g write units/s: about %.0f s",
             table, f"{int(manifest['total_payloads']):,}", f"{units:,}", rate, seconds)
    if seconds > REFRESH_PERIOD_SECONDS:
        needed = math.ceil(units / REFRESH_PERIOD_SECONDS)
        log.warning("At %g write units/s this refresh takes about %.0f s, longer than the %d s between two refreshes. "
                    "Next step: set serving.provisioned.serving_write_capacity to at least %d (the next refresh "
                    "raises the served table to it)", rate, seconds, REFRESH_PERIOD_SECONDS, needed)
