"""The control item's lease and what it serialises, against a real DynamoDB (dynalite): a second
holder waits then fails naming the holder, an expired lease is taken over, only the owner
releases; rollback raced against retention never serves a deleted table; a late older flip
never overtakes a newer one (backfills)."""
from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from test_retention_rollback import V, remaining, serve_in_order
from test_serving_store import make_table, write_feeds

from flashfeed.serving import control, errors, retention, tables

RACE_ROUNDS = 30
RACE_PAUSE_SECONDS = 0.03       # at most this before each of retention's writes, and before each side starts
WAIT_SECONDS = 0.5              # a contender's bounded wait in these tests
WAIT_SLACK_SECONDS = 2.0        # its failure comes within WAIT_SECONDS plus a few calls to dynalite


def holder(client, prefix) -> str | None:
    item = client.get_item(TableName=tables.control_table(prefix), Key={"pk": {"S": "served"}},
                           ConsistentRead=True).get("Item", {})
    return item.get(control.LEASE_OWNER, {}).get("S")


# --- the lease ---------------------------------------------------------------------------------

def test_a_second_holder_waits_then_fails_naming_the_holder(client, prefix, caplog):
    first = control.acquire_lease(client, prefix, "retention", seconds=30, wait_seconds=0)
    started = time.monotonic()
    with pytest.raises(errors.LeaseError) as refused:
        control.acquire_lease(client, prefix, f"flip to {V[1]}", seconds=30, wait_seconds=WAIT_SECONDS)
    waited = time.monotonic() - started
    assert WAIT_SECONDS <= waited < WAIT_SECONDS + WAIT_SLACK_SECONDS
    assert refused.value.holder == first.owner
    message = str(refused.value)
    assert f"held by {first.owner} (retention) until" in message and "within 0.5 s" in message
    assert "Next step" in message
    assert holder(client, prefix) == first.owner                      # the holder keeps it
    assert control.release_lease(client, prefix, first) is True
    assert holder(client, prefix) is None


def test_an_expired_lease_is_taken_over_and_only_its_owner_releases_it(client, prefix, caplog):
    dead = control.acquire_lease(client, prefix, "retention", seconds=0.3, wait_seconds=0)   # then "dies"
    started = time.monotonic()
    taker = control.acquire_lease(client, prefix, "rollback", seconds=30, wait_seconds=3)
    assert time.monotonic() - started >= 0.2                          # it waited for the expiry ...
    assert holder(client, prefix) == taker.owner                      # ... and took it over
    assert control.release_lease(client, prefix, dead) is False       # the late owner cannot release it
    assert "ran out before it was released" in caplog.text and taker.owner in caplog.text
    assert holder(client, prefix) == taker.owner
    assert control.release_lease(client, prefix, taker) is True
    assert holder(client, prefix) is None


def test_the_lease_is_reentrant_in_one_thread_and_exclusive_across_threads(client, prefix):
    serve_in_order(client, prefix, V[:2])
    with control.control_lease(client, prefix, "outer", seconds=30, wait_seconds=0) as outer:
        assert outer is not None and holder(client, prefix) == outer.owner
        with control.control_lease(client, prefix, "inner", seconds=30, wait_seconds=0) as inner:
            assert inner is None                                       # nested: already held here
        # A flip inside takes it re-entrantly; a rollback in another thread waits, then gives up.
        serve_in_order(client, prefix, V[2:3])
        outcome: list = []

        def other() -> None:
            try:
                with control.control_lease(client, prefix, "other", seconds=30, wait_seconds=0.2):
                    outcome.append("taken")
            except errors.LeaseError as error:
                outcome.append(error)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert isinstance(outcome[0], errors.LeaseError) and outer.owner in str(outcome[0])
        assert holder(client, prefix) == outer.owner
    assert holder(client, prefix) is None
    assert control.served_version(client, prefix)["version"] == V[2]


def test_flip_rollback_and_retention_take_the_lease(client, prefix, serving_config):
    serving_config({"lease_seconds: 60": "lease_seconds: 0.5", "lease_wait_seconds: 120": "lease_wait_seconds: 0.5"})
    serve_in_order(client, prefix, V[:4])
    other = control.acquire_lease(client, prefix, "a reload switch", seconds=30, wait_seconds=0)
    for attempt in (lambda: retention.apply_retention(client, prefix, keep=1),
                    lambda: retention.rollback(client, prefix),
                    lambda: serve_in_order(client, prefix, V[4:5])):
        with pytest.raises(errors.LeaseError, match=f"held by {other.owner} \\(a reload switch\\)"):
            attempt()
    assert control.served_version(client, prefix)["version"] == V[3]   # nothing changed
    assert remaining(client, prefix) == V[:5]
    assert sorted(control.loaded_versions(client, prefix)) == V[:5]
    control.release_lease(client, prefix, other)
    assert retention.apply_retention(client, prefix, keep=1) == [tables.feeds_table(v, prefix) for v in V[:2]]


# --- (b) rollback raced against retention -------------------------------------------------------

class PausingClient:
    """Retention's DynamoDB client: pauses a random moment before each write of a loaded mark's
    removal and before each DeleteTable, widening the window between its check of the pointer
    and its writes, where a rollback's flip may land."""

    def __init__(self, real, rng: random.Random):
        self._real, self._rng = real, rng

    def _pause(self) -> None:
        time.sleep(self._rng.uniform(0, RACE_PAUSE_SECONDS))

    def update_item(self, **kwargs):
        if "REMOVE #loaded" in kwargs.get("UpdateExpression", ""):
            self._pause()
        return self._real.update_item(**kwargs)

    def delete_table(self, **kwargs):
        self._pause()
        return self._real.delete_table(**kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _create_all(client, prefixes: list[str], versions: list[str]) -> None:
    """Every round's tables at once (dynalite takes ~0.5 s per table, in parallel), with marks."""
    for p in prefixes:
        client.create_table(TableName=tables.control_table(p), KeySchema=tables.CONTROL_KEY_SCHEMA,
                            AttributeDefinitions=tables.CONTROL_ATTRIBUTES, BillingMode="PAY_PER_REQUEST")
    names = [tables.feeds_table(v, p) for p in prefixes for v in versions]
    for name in names:
        client.create_table(TableName=name, KeySchema=tables.FEEDS_KEY_SCHEMA,
                            AttributeDefinitions=tables.FEEDS_ATTRIBUTES, BillingMode="PAY_PER_REQUEST")
    names += [tables.control_table(p) for p in prefixes]
    while not all(tables.table_exists(client, name) for name in names):
        time.sleep(tables.TABLE_POLL_SECONDS)
    for p in prefixes:
        for version in versions:
            control.mark_loaded(client, p, version, 0, f"m-{version}")


def _served_deleted_table(client, prefix: str) -> str | None:
    """The served table when it is not ACTIVE although the pointer did not move meanwhile."""
    before = control.served_version(client, prefix)
    description = tables.describe_table(client, before["table"])
    after = control.served_version(client, prefix)
    if (before["version"], before["table"]) != (after["version"], after["table"]):
        return None                                       # moved: this sample says nothing
    if description is None or description["TableStatus"] != "ACTIVE":
        return f"{before['table']} ({description and description['TableStatus'] or 'gone'})"
    return None


def _race_round(client, prefix: str, target: str, delays: list[float], violations: list[str]) -> dict:
    """Retention (keep 1, pausing client) and a rollback to `target`, each after its delay, while
    a watcher checks the served table; the outcome of each side."""
    results: dict[str, object] = {}
    done = threading.Event()

    def run_retention():
        time.sleep(delays[0])
        results["retention"] = retention.apply_retention(PausingClient(client, random.Random(delays[0])), prefix,
                                                         keep=1)

    def run_rollback():
        time.sleep(delays[1])
        try:
            results["rollback"] = retention.rollback(client, prefix, target)
        except (errors.NotLoadedError, errors.TableNotFoundError) as refused:   # retention won: refused
            results["rollback"] = refused

    def watch():
        while not done.is_set():
            problem = _served_deleted_table(client, prefix)
            if problem:
                violations.append(f"{prefix}: served {problem}")

    workers = [threading.Thread(target=run_retention), threading.Thread(target=run_rollback)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    watcher.join()
    return results


@pytest.mark.slow   # 30 rounds, ~12 s
def test_rollback_raced_against_retention_never_serves_a_deleted_table(client, monkeypatch):
    """Served V3 (previous V2); retention with keep 1 deletes V0 and V1 while a rollback to V0
    or V1 starts at a random moment. Either may win; the site never serves a deleted table.
    Before the lease and the conditional removal of the mark, a rollback landing between
    retention's pointer check and its writes left the site on a deleted table."""
    monkeypatch.setattr(control, "LEASE_BACKOFF_BASE_SECONDS", 0.005)   # the loser retries sooner: shorter rounds
    monkeypatch.setattr(control, "LEASE_BACKOFF_CAP_SECONDS", 0.05)
    rng = random.Random(24)
    versions = V[:4]
    prefixes = [f"t{uuid.uuid4().hex[:8]}-" for _ in range(RACE_ROUNDS)]
    _create_all(client, prefixes, versions)
    outcomes = {"rolled back": 0, "refused": 0}
    violations: list[str] = []
    for prefix in prefixes:
        serve_in_order(client, prefix, versions)
        target = rng.choice(versions[:2])
        results = _race_round(client, prefix, target, [rng.uniform(0, RACE_PAUSE_SECONDS) for _ in range(2)],
                              violations)
        served = control.served_version(client, prefix)
        if not tables.table_exists(client, served["table"]):
            violations.append(f"{prefix}: ends serving {served['table']}, which is gone")
        deleted_target = tables.feeds_table(target, prefix) in results["retention"]
        if isinstance(results["rollback"], dict):
            outcomes["rolled back"] += 1
            assert served["version"] == target and served["previous"] == versions[-1]
            if deleted_target:
                violations.append(f"{prefix}: retention deleted {target}, served by the rollback")
        else:
            outcomes["refused"] += 1
            assert served["version"] == versions[-1] and deleted_target
    assert violations == [], f"{len(violations)} violations in {RACE_ROUNDS} rounds"
    assert outcomes["rolled back"] and outcomes["refused"], outcomes     # both orders happened


# --- (c of part 4) backfills: a late older flip never overtakes a newer one ---------------------

def test_a_late_older_flip_never_overtakes_a_newer_one(client, prefix):
    """Two runs of a backfill both read X served; the newer flips first. The older one's flip
    (same expected X) is refused by the conditional write as older, not just as a lost race."""
    x, older, newer = V[0], V[1], V[2]
    serve_in_order(client, prefix, [x])
    make_table(client, prefix, older)
    make_table(client, prefix, newer)
    control.flip(client, prefix, newer, "m", expected_version=x)
    with pytest.raises(errors.OlderVersionError, match=f"refusing to flip to {older}: it is older than {newer}") \
            as refused:
        control.flip(client, prefix, older, "m", expected_version=x)
    assert refused.value.served_version == newer
    assert control.served_version(client, prefix)["version"] == newer
    # allow_older_version, for that run: a plain lost race (expected X, newer served) instead.
    with pytest.raises(errors.FlipConflictError, match=f"expected {x} .* but {newer} is served"):
        control.flip(client, prefix, older, "m", expected_version=x, allow_older=True)
    control.flip(client, prefix, older, "m", expected_version=newer, allow_older=True)
    assert control.served_version(client, prefix)["version"] == older


def test_the_flip_operator_skips_when_a_newer_run_flipped_after_it_read_the_pointer(
        tmp_path, operators, client, prefix, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    x, older, newer = V[0], V[1], V[2]
    feeds = tmp_path / "older"
    write_feeds(feeds, members=5, version=older, files_per_data_set=1)
    serve_in_order(client, prefix, [x])
    make_table(client, prefix, older)
    make_table(client, prefix, newer)
    stale = control.served_version(client, prefix)        # what the older run read: X served
    control.flip(client, prefix, newer, "m", expected_version=x)

    real, calls = control.served_version, {"n": 0}

    def stale_first(c, p=None):
        calls["n"] += 1
        return stale if calls["n"] == 1 else real(c, p)

    monkeypatch.setattr(control, "served_version", stale_first)
    flip = operators.FlipServedVersionOperator(task_id="flip", version=older,
                                               manifest_uri=str(feeds / "manifest.json"))
    with pytest.raises(AirflowSkipException, match=f"not flipping: refusing to flip to {older}: it is older than "
                                                   f"{newer}"):
        flip.execute({})
    assert real(client, prefix)["version"] == newer
