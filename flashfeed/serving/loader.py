"""Loading a launch's feeds into its feeds table, verifying it, and refreshing the served one.

Load (restartable): checksums of every file against the manifest first, then the version's
`loaded` mark is removed, then BatchWriteItem in batches of 25 from a thread pool, retrying
UnprocessedItems and throttling with exponential backoff and full jitter. Writes are puts on
the table's key, so re-running a load into a table left by a failed attempt overwrites, never
duplicates. `verify_load` then checks the count and a sample read back byte for byte, and
only when they pass writes the `loaded` mark. With `serving.billing_mode: PROVISIONED` the
table's write capacity is raised for the load and lowered after it.

Refresh (freshness): some members' payloads of the served version rewritten in its table, only
while it is still served.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterator

from flashfeed.core import lake
from flashfeed.core.lake import FALLBACK_DATA_SET, feed_folder
from flashfeed.serving import pacing
from flashfeed.serving.control import EXPERIMENT, clear_loaded, mark_loaded, served_version
from flashfeed.serving.errors import LoadError, VerificationError
from flashfeed.serving.manifests import (
    MANIFEST_FILE,
    check_manifest,
    join_uri,
    manifest_files,
    payload_lines,
    verify_checksums,
)
from flashfeed.serving.payloads import GLOBAL_FALLBACK_MEMBER, iter_items, payload_key
from flashfeed.serving.tables import (
    MAX_BATCH_ATTEMPTS,
    THROTTLING_ERRORS,
    backoff_seconds,
    control_table,
    ensure_feeds_table,
    error_code,
    feeds_table,
    provisioned_capacity,
    serving_config,
    set_write_capacity,
)

logger = logging.getLogger(__name__)

BATCH_SIZE = 25                      # BatchWriteItem maximum
IN_FLIGHT_BATCHES_PER_THREAD = 4     # bounds memory: the reader never runs far ahead of writers
PROGRESS_LOG_SECONDS = 5.0
MIN_ELAPSED_SECONDS = 1e-6           # guards rates against a zero elapsed time
PROBLEMS_SHOWN = 5                   # verification problems quoted in the error

Log = logging.Logger | logging.LoggerAdapter


# --- batch writes ------------------------------------------------------------------------------

@dataclass
class LoadResult:
    table: str
    version: str
    written: int            # items acknowledged by DynamoDB, counted by the loader
    expected: int           # the manifest's total_payloads
    batches: int
    retried_batches: int    # BatchWriteItem calls repeated for UnprocessedItems or throttling
    seconds: float
    created_table: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.written = 0
        self.batches = 0
        self.retries = 0
        self.rate = 0.0       # items/s over the writing phase, set when it ends

    def add(self, written: int = 0, batches: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.written += written
            self.batches += batches
            self.retries += retries


def _write_batch(client, table: str, items: list[dict], counters: _Counters) -> None:
    """Put up to 25 items; retries what DynamoDB leaves unprocessed or throttles, bounded."""
    requests = [{"PutRequest": {"Item": item}} for item in items]
    for attempt in range(MAX_BATCH_ATTEMPTS):
        if attempt:
            counters.add(retries=1)
            time.sleep(backoff_seconds(attempt))
        try:
            response = client.batch_write_item(RequestItems={table: requests})
        except Exception as error:
            if error_code(error) in THROTTLING_ERRORS:
                continue
            raise
        unprocessed = (response.get("UnprocessedItems") or {}).get(table) or []
        counters.add(written=len(requests) - len(unprocessed))
        if not unprocessed:
            counters.add(batches=1)
            return
        requests = unprocessed
    first = requests[0]["PutRequest"]["Item"]
    raise LoadError(
        f"{len(requests)} items still unwritten to {table} after {MAX_BATCH_ATTEMPTS} attempts "
        f"(throttling or unprocessed items; e.g. member {first['member_id']['S']} feed "
        f"{first['feed']['S']}). The load is restartable: re-run the load task, with fewer "
        "serving.load_threads if DynamoDB keeps throttling"
    )


def _batches(items: Iterator[dict], size: int = BATCH_SIZE) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- progress ----------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _log_progress(log, table: str, written: int, expected: int, started: float) -> None:
    elapsed = max(time.monotonic() - started, MIN_ELAPSED_SECONDS)
    rate = written / elapsed
    remaining = max(expected - written, 0)
    eta = _duration(remaining / rate) if rate > 0 else "unknown"
    share = 100.0 * written / expected if expected else 100.0
    log.info("Loading %s: %s / %s payloads written (%.1f %%), %s items/s, ETA %s",
             table, f"{written:,}", f"{expected:,}", share, f"{rate:,.0f}", eta)


# --- load --------------------------------------------------------------------------------------

def load_feeds(client, feeds_dir: str, manifest: dict, prefix: str | None = None, *,
               threads: int | None = None, log: Log = logger) -> LoadResult:
    """Load every payload listed in `manifest` from `feeds_dir` into `<prefix>feeds-<version>`
    (created if missing).

    Checksums are verified first; the version's `loaded` mark is removed before the first
    write (it comes back only from `verify_load`); items are checked (shape, data set,
    400 KB) before they are written. Idempotent: keys are (member, feed#variant), so a re-run
    overwrites. Provisioned tables get `load_write_capacity` for the load and
    `serving_write_capacity` after it, also when it fails.
    """
    check_manifest(manifest)
    threads = threads or serving_config()["load_threads"]
    version = manifest["version"]
    table = feeds_table(version, prefix)
    expected = int(manifest["total_payloads"])
    capacity = provisioned_capacity()
    started = time.monotonic()

    verify_checksums(feeds_dir, manifest, log)
    clear_loaded(client, prefix, version, log=log)
    created = ensure_feeds_table(client, table, log=log)
    if not created:
        log.warning("Table %s already exists (earlier attempt?): rewriting every item, same keys overwrite", table)
    try:
        if capacity:
            set_write_capacity(client, table, capacity["load_write_capacity"], "for the load", log)
        counters = _write_all(client, feeds_dir, manifest, table, threads, log)
    finally:
        if capacity:
            _lower_after_load(client, table, capacity["serving_write_capacity"], log)
    seconds = time.monotonic() - started
    result = LoadResult(table=table, version=version, written=counters.written, expected=expected,
                        batches=counters.batches, retried_batches=counters.retries,
                        seconds=round(seconds, 3), created_table=created)
    log.info("Loaded %s: %s payloads written (manifest: %s) in %d batches, %d retried, "
             "%s total, %s items/s", table, f"{result.written:,}", f"{expected:,}",
             result.batches, result.retried_batches, _duration(seconds), f"{counters.rate:,.0f}")
    return result


def _lower_after_load(client, table: str, units: int, log) -> None:
    """Best effort: a failure here must not hide the load's own outcome, but costs money."""
    try:
        set_write_capacity(client, table, units, "after the load", log)
    except Exception as error:
        log.warning(
            "Could not lower the write capacity of %s to %d units (%s: %s). The feeds are unaffected, but "
            "the table keeps its load capacity: lower it by hand (aws dynamodb update-table --table-name %s "
            "--provisioned-throughput ...); AWS allows a limited number of decreases per day",
            table, units, type(error).__name__, error, table)


def _write_all(client, feeds_dir: str, manifest: dict, table: str, threads: int, log) -> _Counters:
    """BatchWriteItem every item from a bounded thread pool, logging progress every few seconds."""
    expected = int(manifest["total_payloads"])
    log.info("Writing %s payloads of %s into %s with %d threads, batches of %d",
             f"{expected:,}", manifest["version"], table, threads, BATCH_SIZE)

    counters = _Counters()
    write_started = time.monotonic()
    last_log = write_started
    max_in_flight = threads * IN_FLIGHT_BATCHES_PER_THREAD
    pending: set[Future] = set()

    def settle(block: bool) -> None:
        nonlocal pending, last_log
        done, pending = wait(pending, timeout=PROGRESS_LOG_SECONDS if block else 0,
                             return_when=FIRST_COMPLETED)
        for future in done:
            future.result()          # re-raises a batch's error in the caller
        now = time.monotonic()
        if now - last_log >= PROGRESS_LOG_SECONDS:
            _log_progress(log, table, counters.written, expected, write_started)
            last_log = now

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="feeds-load") as pool:
        try:
            for batch in _batches(iter_items(feeds_dir, manifest)):
                while len(pending) >= max_in_flight:
                    settle(block=True)
                pending.add(pool.submit(_write_batch, client, table, batch, counters))
                settle(block=False)
            while pending:
                settle(block=True)
        except BaseException:
            for future in pending:
                future.cancel()      # stop queued batches; running ones finish their call
            raise
    counters.rate = counters.written / max(time.monotonic() - write_started, MIN_ELAPSED_SECONDS)
    return counters


# --- verification ------------------------------------------------------------------------------

def _chosen_lines(member_files: list[tuple[str, dict]], chosen: list[int]) -> dict[int, set[int]]:
    """file index -> line indexes of the chosen positions among all member payloads."""
    wanted: dict[int, set[int]] = {}
    offset = 0
    for index, (_, entry) in enumerate(member_files):
        count = int(entry["payloads"])
        for position in chosen:
            if offset <= position < offset + count:
                wanted.setdefault(index, set()).add(position - offset)
        offset += count
    return wanted


def _sample_lines(feeds_dir: str, manifest: dict, sample_members: int, seed) -> list[tuple[str, bytes]]:
    """(data set, line bytes) for a deterministic random sample of member payloads plus every
    fallback payload (unknown members depend on those). Positions are drawn from the
    manifest's counts, so only the files holding them are read, and only up to the last one."""
    member_files = [(name, entry) for name, entry in manifest_files(manifest) if name != FALLBACK_DATA_SET]
    total = sum(int(entry["payloads"]) for _, entry in member_files)
    chosen = sorted(random.Random(seed).sample(range(total), min(sample_members, total)))

    samples: list[tuple[str, bytes]] = []
    for index, lines in sorted(_chosen_lines(member_files, chosen).items()):
        name, entry = member_files[index]
        last = max(lines)
        with lake.open_file(join_uri(feeds_dir, entry["path"]), "rb") as handle:
            for line_no, line in enumerate(payload_lines(handle)):
                if line_no in lines:
                    samples.append((name, line))
                if line_no >= last:
                    break
    for name, entry in manifest_files(manifest):
        if name == FALLBACK_DATA_SET:
            with lake.open_file(join_uri(feeds_dir, entry["path"]), "rb") as handle:
                samples.extend((name, line) for line in payload_lines(handle))
    return samples


def _sample_problems(client, table: str, samples: list[tuple[str, bytes]]) -> list[str]:
    """Each sampled payload read back (consistent GetItem) against the lake's line, byte for byte."""
    problems: list[str] = []
    for _, line in samples:
        member_id, key = payload_key(json.loads(line))
        response = client.get_item(TableName=table, Key={"member_id": {"S": member_id}, "feed": {"S": key}},
                                   ConsistentRead=True)
        stored = response.get("Item", {}).get("payload", {}).get("S")
        if stored is None:
            problems.append(f"member {member_id} feed {key}: missing")
        elif stored.encode("utf-8") != line:
            problems.append(f"member {member_id} feed {key}: stored payload differs from the lake "
                            f"({len(stored.encode('utf-8'))} vs {len(line)} bytes)")
    return problems


def verify_load(client, prefix: str | None, manifest: dict, feeds_dir: str, written: int,
                sample_members: int | None = None, seed=None, log: Log = logger) -> int:
    """Refuse a table whose count or sample disagrees with the manifest; returns items checked.

    - the loader's own count of written items equals the manifest's total_payloads;
    - `sample_members` payloads drawn at random (seeded: the same sample for the same seed,
      default the version) plus every fallback payload, read back with a consistent GetItem,
      equal the lake's line byte for byte.
    When both pass, the version gets its `loaded` mark: from then on it may be flipped to.
    """
    expected = int(manifest["total_payloads"])
    version = manifest["version"]
    table = feeds_table(version, prefix)
    if written != expected:
        raise VerificationError(
            f"table {table} is not safe to serve: the loader wrote {written:,} payloads but the "
            f"manifest of {version} lists {expected:,}; do not flip. Re-run the load task"
        )
    sample_members = serving_config()["verify_sample_members"] if sample_members is None else sample_members
    seed = version if seed is None else seed
    samples = _sample_lines(feeds_dir, manifest, sample_members, seed)
    problems = _sample_problems(client, table, samples)
    if problems:
        more = len(problems) - PROBLEMS_SHOWN
        shown = "; ".join(problems[:PROBLEMS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
        raise VerificationError(
            f"table {table} is not safe to serve: {len(problems)} of {len(samples)} sampled payloads "
            f"disagree with the lake ({shown}); do not flip. Re-run the load task; if it fails again, "
            "inspect the feeds files of this launch"
        )
    fallback_keys = {json.loads(line)["member_id"] for name, line in samples if name == FALLBACK_DATA_SET}
    if GLOBAL_FALLBACK_MEMBER not in fallback_keys:
        log.warning("No %s payloads in %s: members unknown to the model will get 404 from the API",
                    GLOBAL_FALLBACK_MEMBER, version)
    log.info("Verified %s: count %s equals the manifest, %d sampled payloads (seed %r) and all "
             "fallback payloads match the lake byte for byte", table, f"{written:,}", len(samples), seed)
    mark_loaded(client, prefix, version, written, join_uri(feeds_dir, MANIFEST_FILE), manifest.get(EXPERIMENT))
    log.info("Marked %s as loaded and verified in %s: it may be flipped to", version, control_table(prefix))
    return len(samples)


# --- freshness: rewriting some members' payloads in the served table ---------------------------

@dataclass
class RefreshResult:
    version: str
    written: int            # items written into the served table
    members: int            # members whose payloads were rewritten
    outcome: str            # "refreshed", "nothing to refresh", "not served", "flipped during the refresh"
    served: str | None      # the version served when the refresh ended


def refresh_served(client, prefix: str | None, refresh_dir: str, manifest: dict, *,
                   before_batch: Callable[[int], None] | None = None, log: Log = logger) -> RefreshResult:
    """Write a freshness refresh (spark_jobs/refresh_feeds.py: some members' payloads of version
    V) into V's table, only while V is served.

    The served pointer is read before every batch of 25 items: when V is not served (a flip or
    a rollback happened, or V was never served) nothing more is written and the newer version
    wins; at most the batch in flight when the pointer moved lands in V's table, which is then
    no longer served. Items are puts on the table's keys: a re-run rewrites the same items. A
    provisioned table is written no faster than its write capacity (raised to
    `serving.provisioned.serving_write_capacity` first if it is below), with bounded retries on
    throttling (`pacing`).
    `before_batch(n)` is called before the n-th batch (tests use it to flip mid-way)."""
    version = manifest["version"]
    check_manifest(manifest, f"{refresh_dir}/{MANIFEST_FILE}")
    members = int(manifest["data_sets"].get(feed_folder("products", "full"), {}).get("payloads", 0))
    served = served_version(client, prefix)
    if served is None or served["version"] != version:
        log.warning("Refresh of %s skipped: %s is served, not %s; the served version's own launch is newer, "
                    "nothing to do", version, served and served["version"], version)
        return RefreshResult(version, 0, 0, "not served", served and served["version"])
    if not int(manifest["total_payloads"]):
        log.info("Refresh of %s: no payload to rewrite (nobody the model knows acted)", version)
        return RefreshResult(version, 0, 0, "nothing to refresh", version)
    verify_checksums(refresh_dir, manifest, log)
    table, counters = feeds_table(version, prefix), _Counters()
    pacer = pacing.WritePacer(pacing.refresh_rate(client, table, log))
    pacing.log_plan(table, manifest, pacer.units_per_second, log)
    paced = pacing.paced_batches(iter_items(refresh_dir, manifest), pacer.units_per_second, BATCH_SIZE)
    for number, (batch, units) in enumerate(paced, start=1):
        if before_batch is not None:
            before_batch(number)
        now = served_version(client, prefix)
        if now is None or now["version"] != version:
            log.warning("Refresh of %s stopped after %d items: %s was flipped to meanwhile, which wins; the "
                        "rest of this refresh is dropped", version, counters.written, now and now["version"])
            return RefreshResult(version, counters.written, members, "flipped during the refresh",
                                 now and now["version"])
        pacing.write_batch(client, table, batch, units, pacer, counters)
    log.info("Refreshed %s: %d items of %d members rewritten in %s (%d write units in %d batches, %d retried "
             "after throttling; %.1f s waited for capacity)", version, counters.written, members, table,
             pacer.units, counters.batches, counters.retries, pacer.waited)
    return RefreshResult(version, counters.written, members, "refreshed", version)
