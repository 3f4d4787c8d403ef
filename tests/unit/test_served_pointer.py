"""The read API's served-pointer cache: no lock across the read, one refresh at a time, the last
good pointer kept for a bounded time when reads fail. The control-table read is a stand-in
function here (what is tested is the cache's concurrency); tests/unit/test_api.py and
tests/e2e/test_serving_faults.py run it on a real DynamoDB."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from flashfeed.serving.api import ServedPointer, ServedPointerUnavailable
from flashfeed.serving.errors import ServingStoreError

pytestmark = pytest.mark.serial   # upper bounds on how long requests wait: not beside other tests

V1 = {"version": "20261122t1100", "table": "t1"}
V2 = {"version": "20261122t1500", "table": "t2"}


class ControlTable:
    """Answers reads from `value`; `gate` (when set) holds each read until released; `fail` raises."""

    def __init__(self, value):
        self.value, self.calls, self.fail = value, 0, False
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()

    def read(self):
        with self.lock:
            self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise ServingStoreError("control table unreachable")
        return self.value


def until(seconds: float) -> float:
    return time.monotonic() + seconds


def wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_a_fresh_pointer_is_served_from_the_cache():
    table = ControlTable(V1)
    pointer = ServedPointer(table.read, ttl=60, max_stale=120, read_budget=0.1)
    assert pointer.get(until(1)) == V1 and pointer.get(until(1)) == V1
    assert table.calls == 1


def test_a_stale_pointer_is_served_at_once_while_one_background_refresh_reads():
    table = ControlTable(V1)
    pointer = ServedPointer(table.read, ttl=0.05, max_stale=60, read_budget=0.1)
    pointer.get(until(1))
    table.value, table.gate = V2, threading.Event()            # the next read hangs until released
    time.sleep(0.06)
    answers, waited = [], []

    def request():
        started = time.monotonic()
        answers.append(pointer.get(until(1)))
        waited.append(time.monotonic() - started)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [V1] * 8 and max(waited) < 0.5           # nobody waited for the hanging read (held until below)
    assert table.calls == 2                                    # the first read and one refresh, not eight
    table.gate.set()
    deadline = time.monotonic() + 2
    while pointer.get(until(1)) != V2:
        assert time.monotonic() < deadline, "the refresh never landed"
        time.sleep(0.01)


def test_a_failed_refresh_keeps_the_last_good_pointer_until_max_stale_then_503(caplog):
    caplog.set_level(logging.INFO, logger="flashfeed.serving.api")
    table = ControlTable(V1)
    pointer = ServedPointer(table.read, ttl=0.02, max_stale=0.3, read_budget=0.1)
    pointer.get(until(1))
    table.fail = True
    time.sleep(0.03)
    assert pointer.get(until(0.1)) == V1                       # stale, within max_stale: served, refresh fails
    wait_for(lambda: "Served-pointer refresh failed" in caplog.text)
    assert "still serving 20261122t1100" in caplog.text
    calls = table.calls
    for _ in range(20):                                        # within RETRY_SECONDS: no new read per request
        assert pointer.get(until(0.1)) == V1
    assert table.calls <= calls + 1
    time.sleep(0.3)                                            # past max_stale: unknown, 503 within the deadline
    started = time.monotonic()
    with pytest.raises(ServedPointerUnavailable, match="max_stale"):
        pointer.get(until(0.1))
    assert time.monotonic() - started < 0.5                  # not the 5 s of a default call
    table.fail = False
    time.sleep(ServedPointer.RETRY_SECONDS)
    assert pointer.get(until(0.5)) == V1                       # the store is back: served again
    assert "works again after" in caplog.text


def test_before_any_good_read_requests_wait_only_until_their_deadline():
    table = ControlTable(V1)
    table.gate = threading.Event()                             # the first read hangs
    pointer = ServedPointer(table.read, ttl=2, max_stale=60, read_budget=0.1)
    errors, took = [], []

    def request():
        started = time.monotonic()
        try:
            pointer.get(until(0.1))
        except ServedPointerUnavailable as error:
            errors.append(error)
        took.append(time.monotonic() - started)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    table.gate.set()                                           # the one reader comes back late
    for thread in threads:
        thread.join()
    assert table.calls == 1                                    # one read at a time, the others waited for it
    assert len(errors) == 3 and sorted(took)[2] < 0.6          # the waiters gave up at their deadline, not at 1 s
    assert pointer.get(until(0.1)) == V1                       # the late read still filled the cache


def test_nothing_served_is_cached_like_a_version():
    table = ControlTable(None)
    pointer = ServedPointer(table.read, ttl=60, max_stale=120, read_budget=0.1)
    assert pointer.get(until(1)) is None and pointer.get(until(1)) is None
    assert table.calls == 1
