"""PROVISIONED billing with freshness (issue 24, part 6): the served table keeps the write capacity the
refresh needs, and the refresh writes no faster than that capacity, retrying throttling.

The pacing arithmetic is checked with figures worked out by hand on a virtual clock; the refresh
itself runs on the real local DynamoDB (dynalite, which never throttles: throttling is injected).
"""
from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from flashfeed.serving import loader, pacing, tables
from flashfeed.serving.errors import LoadError
from tests.unit.test_freshness import marker, serve, write_feeds

VERSION = "20261122t1100"
PROVISIONED = {"billing_mode: PAY_PER_REQUEST": "billing_mode: PROVISIONED"}
ITEM_OVERHEAD = len("member_id") + len("m-1") + len("feed") + len("products#full") + len("payload")   # 36 bytes


def item(payload_bytes: int) -> dict:
    return {"member_id": {"S": "m-1"}, "feed": {"S": "products#full"}, "payload": {"S": "x" * payload_bytes}}


class VirtualTime:
    """A clock that moves only when someone sleeps: waits are exact and cost no real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


class Counters:
    def __init__(self) -> None:
        self.written = self.batches = self.retries = 0

    def add(self, written: int = 0, batches: int = 0, retries: int = 0) -> None:
        self.written += written
        self.batches += batches
        self.retries += retries


def throttle_error() -> ClientError:
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                  "Message": "injected: the level of configured provisioned throughput was exceeded"}},
                       "BatchWriteItem")


# --- the arithmetic, by hand ------------------------------------------------------------------

@pytest.mark.parametrize("payload_bytes, units", [
    (1, 1),                          # 37 bytes: a whole unit all the same
    (1024 - ITEM_OVERHEAD, 1),       # exactly 1 KB with names and keys
    (1025 - ITEM_OVERHEAD, 2),       # one byte over: a second unit
    (3000, 3),                       # 3,036 bytes = 2.96 KB
    (30 * 1024 - ITEM_OVERHEAD, 30),
])
def test_a_put_costs_one_write_unit_per_started_kb_of_the_item(payload_bytes, units):
    assert pacing.write_units(item(payload_bytes)) == units


def test_batches_hold_at_most_25_items_and_one_second_of_capacity():
    one, three, thirty = item(1), item(3000), item(30 * 1024 - ITEM_OVERHEAD)

    def shape(items, rate):
        return [(len(batch), units) for batch, units in pacing.paced_batches(items, rate, 25)]

    assert shape([one] * 30, 25) == [(25, 25), (5, 5)]                      # the 25-item limit
    assert shape([three] * 30, 25) == [(8, 24), (8, 24), (8, 24), (6, 18)]  # a 9th item would make 27 > 25
    assert shape([one] * 3, 1) == [(1, 1)] * 3                              # 1 unit/s: one item per batch
    assert shape([one, thirty, one], 25) == [(1, 1), (1, 30), (1, 1)]       # over a second's worth: alone
    assert shape([three] * 30, None) == [(25, 75), (5, 15)]                 # on-demand: the item limit only


def test_the_pacer_spends_units_no_faster_than_the_table_earns_them():
    clock = VirtualTime()
    pacer = pacing.WritePacer(25, clock.monotonic, clock.sleep)
    # Batches of 24, 24, 24 and 18 units written instantly: each waits until the previous
    # batch's units are earned back at 25 units/s, 24 / 25 = 0.96 s.
    assert [pacer.spend(units) for units in (24, 24, 24, 18)] == pytest.approx([0, 0.96, 0.96, 0.96])
    assert (pacer.units, pacer.waited) == (90, pytest.approx(2.88))
    # Time spent writing counts: a batch started 0.5 s after an 18-unit one (0.72 s) waits 0.22 s.
    clock.now += 0.5
    assert pacer.spend(25) == pytest.approx(0.22)
    # On-demand: never waits.
    assert pacing.WritePacer(None, clock.monotonic, clock.sleep).spend(1000) == 0


def test_a_throttled_batch_waits_for_its_capacity_doubling_per_attempt_within_bounds():
    clock = VirtualTime()
    pacer = pacing.WritePacer(25, clock.monotonic, clock.sleep)
    # 25 units at 25 units/s is 1 s, doubled per attempt: 1, 2, 4, 8, 16, then capped at 20.
    assert [pacer.throttled(25, attempt) for attempt in range(1, 7)] == [1, 2, 4, 8, 16, 20]
    assert pacer.throttled(1, 1) == pacing.THROTTLE_WAIT_MIN_SECONDS          # 0.04 s: at least 0.1 s


def test_a_batch_throttled_on_every_attempt_fails_with_the_cause_and_next_step():
    clock = VirtualTime()
    pacer = pacing.WritePacer(25, clock.monotonic, clock.sleep)

    class AlwaysThrottled:
        def batch_write_item(self, RequestItems):
            raise throttle_error()

    counters = Counters()
    with pytest.raises(LoadError, match=r"25 items still unwritten to t after 6 attempts, throttled "
                                        r"\(ProvisionedThroughputExceededException\).*paced to 25 write units/s.*"
                                        r"Next step: raise serving.provisioned.serving_write_capacity"):
        pacing.write_batch(AlwaysThrottled(), "t", [item(1)] * 25, 25, pacer, counters)
    assert clock.sleeps == [1, 2, 4, 8, 16] and counters.retries == 5 and counters.written == 0


# --- the config -------------------------------------------------------------------------------

def test_the_served_tables_capacity_is_25_units_and_at_most_the_load_capacity(serving_config):
    from flashfeed.core.settings import ConfigError

    serving_config(PROVISIONED)
    assert tables.provisioned_capacity()["serving_write_capacity"] == 25
    serving_config({**PROVISIONED, "serving_write_capacity: 25 ": "serving_write_capacity: 2000 "})
    with pytest.raises(ConfigError, match=r"load_write_capacity \(1000\) must be at least serving_write_capacity "
                                          r"\(2000\)"):
        tables.provisioned_capacity()


# --- (d) the refresh under PROVISIONED billing, on the real local DynamoDB ---------------------

def test_a_refresh_under_provisioned_billing_rewrites_payloads_at_the_served_tables_capacity(
        tmp_path, client, prefix, serving_config, caplog):
    serving_config(PROVISIONED)
    capacity = tables.provisioned_capacity()
    members = [f"m-{i:06d}" for i in range(80)]
    serve(client, prefix, tmp_path / "launch", VERSION, members, None)
    table = tables.feeds_table(VERSION, prefix)
    throughput = tables.describe_table(client, table)["ProvisionedThroughput"]
    assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (
        capacity["read_capacity"], capacity["serving_write_capacity"])           # after the load: 100 / 25

    # A table loaded under an older config (1 unit) is raised to the configured capacity first.
    tables.set_write_capacity(client, table, 1, "as an older config left it")
    refreshed = members[:60]
    manifest = write_feeds(tmp_path / "refresh", VERSION, refreshed, "fresh")
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        result = loader.refresh_served(client, prefix, str(tmp_path / "refresh"), manifest)
    elapsed = time.monotonic() - started

    assert (result.outcome, result.written, result.members) == ("refreshed", 60, 60)
    assert {marker(client, prefix, VERSION, m) for m in refreshed} == {"fresh"}
    assert {marker(client, prefix, VERSION, m) for m in members[60:]} == {"launch"}
    assert tables.describe_table(client, table)["ProvisionedThroughput"]["WriteCapacityUnits"] == 25
    assert "Setting write capacity of %s from 1 to 25 units" % table in caplog.text
    assert "paced to the table's 25 write units/s" in caplog.text
    # 60 one-unit items at 25 units/s: batches of 25, 25 and 10; the second starts 1 s after the
    # first, the third 1 s after the second.
    assert elapsed >= 2.0
    assert "60 write units in 3 batches, 0 retried" in caplog.text


def test_a_throttled_refresh_retries_within_its_capacity_instead_of_failing(
        tmp_path, client, prefix, serving_config, monkeypatch, caplog):
    serving_config(PROVISIONED)
    members = [f"m-{i:06d}" for i in range(60)]
    serve(client, prefix, tmp_path / "launch", VERSION, members, None)
    manifest = write_feeds(tmp_path / "refresh", VERSION, members, "fresh")

    class Throttling:
        """The real client, but the first two BatchWriteItem calls are throttled and the third
        writes 20 of its 25 items, returning 5 unprocessed."""

        def __init__(self, real) -> None:
            self._real, self.calls = real, 0

        def __getattr__(self, name):
            return getattr(self._real, name)

        def batch_write_item(self, RequestItems):
            self.calls += 1
            if self.calls <= 2:
                raise throttle_error()
            if self.calls == 3:
                ((table, requests),) = RequestItems.items()
                self._real.batch_write_item(RequestItems={table: requests[:20]})
                return {"UnprocessedItems": {table: requests[20:]}}
            return self._real.batch_write_item(RequestItems=RequestItems)

    clock = VirtualTime()
    monkeypatch.setattr(pacing, "time", SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep))
    throttling = Throttling(client)
    with caplog.at_level(logging.INFO):
        result = loader.refresh_served(throttling, prefix, str(tmp_path / "refresh"), manifest)
    assert (result.outcome, result.written) == ("refreshed", 60)
    assert {marker(client, prefix, VERSION, m) for m in members} == {"fresh"}
    # By hand, at 25 units/s, one unit per item: batch 1 at 0 s is throttled, waits 25/25 = 1 s;
    # throttled again, waits 2 s (doubled); at 3 s 20 items land, the 5 left wait 5/25 x 4 = 0.8 s
    # and land at 3.8 s. Batch 2 waits until those 5 units are earned back (4.0 s): 0.2 s; batch 3
    # (10 items) 1 s after batch 2's 25 units. 5 s waited in all, 3 retries, nothing failed.
    assert clock.sleeps == pytest.approx([1, 2, 0.8, 0.2, 1])
    assert throttling.calls == 6
    assert "60 write units in 3 batches, 3 retried after throttling; 5.0 s waited" in caplog.text
