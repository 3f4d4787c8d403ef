"""Loading a launch's feeds into its feeds table, verifying it, and refreshing the served one.

Load: checksums of every file against the manifest first. Then a table that will hold exactly
this export, nothing left from an earlier one:
- the version is not served: its `loaded` mark is removed (a conditional write: refused if it
  became served meanwhile), every existing table of the version (an earlier attempt, a reload)
  is deleted and waited for, and `<prefix>feeds-<version>` is created afresh;
- the version is served (a re-run of the live slot): refused unless `reload_served`
  (param reload_served_version); then a new table `<prefix>feeds-<version>-r<N>` is loaded beside
  the live one, which keeps serving untouched.
BatchWriteItem in batches of 25 from a thread pool, retrying UnprocessedItems and throttling
with exponential backoff and full jitter. `verify_load` then counts the table's own items (a
consistent Scan, Select=COUNT, parallel segments) against the manifest's total_payloads and
reads a sample back byte for byte; only when both pass does it write the `loaded` mark (or, for
a reload of the served version, switch the served table to the new one in one conditional
write). A re-run after a failure starts again from an empty table. With
`serving.billing_mode: PROVISIONED` the table's write capacity is raised for the load and
lowered after it.

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
from flashfeed.serving.control import EXPERIMENT, clear_loaded, mark_loaded, served_version, switch_served_table
from flashfeed.serving.errors import LoadError, ServedVersionReloadError, VerificationError
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
    batch_write,
    control_table,
    drop_table,
    ensure_feeds_table,
    error_code,
    feeds_table,
    feeds_tables,
    next_reload,
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
    replaces: str | None = None   # the served table a reload of the served version will replace

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
    requests, _ = batch_write(client, table, items, counters, MAX_BATCH_ATTEMPTS,
                              lambda _unwritten, attempt: time.sleep(backoff_seconds(attempt)))
    if not requests:
        return
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

def _fresh_table(client, prefix: str | None, version: str, reload_served: bool, log: Log) -> tuple[str, str | None]:
    """(the empty table this load writes, the served table it will replace or None).

    Not served: the version's loaded mark goes first (conditionally), then every table of the
    version, so the new `<prefix>feeds-<version>` holds exactly the new export. Served: refused
    unless `reload_served`, then a new `-r<N>` table beside the live one."""
    served = served_version(client, prefix)
    existing = feeds_tables(client, prefix).get(version, [])
    if served and served["version"] == version:
        if not reload_served:
            raise ServedVersionReloadError(
                f"refusing to reload {version}: it is served right now (from {served['table']}), and rewriting "
                "the live table would serve a mix of the old and the new export. Nothing was changed. Next step: "
                "if the live version must be reloaded, re-run with reload_served_version=true (it loads a new "
                "table beside the live one and switches to it once verified); otherwise leave it as it is")
        table = feeds_table(version, prefix, next_reload(existing, prefix))
        log.warning("Version %s is served right now from %s: loading a new table %s beside it "
                    "(reload_served_version=true); the served version switches to it only once it is verified",
                    version, served["table"], table)
        return table, served["table"]
    clear_loaded(client, prefix, version, log=log)   # conditional: refused if it became served meanwhile
    if served and served.get("previous") == version:
        log.warning("%s is the previous served version: a rollback to it is refused until this load is verified",
                    version)
    if existing:
        log.info("Deleting %d existing table(s) of %s (%s) so that the new table holds exactly this export",
                 len(existing), version, ", ".join(existing))
        for name in existing:
            drop_table(client, name, log=log)
    return feeds_table(version, prefix), None


def load_feeds(client, feeds_dir: str, manifest: dict, prefix: str | None = None, *,
               threads: int | None = None, reload_served: bool = False, log: Log = logger) -> LoadResult:
    """Load every payload listed in `manifest` from `feeds_dir` into a new, empty table:
    `<prefix>feeds-<version>`, or `<prefix>feeds-<version>-r<N>` when the version is served and
    `reload_served` (ServedVersionReloadError without it).

    Checksums are verified first; the version's `loaded` mark is removed (unless it is the
    served version, whose live table stays untouched) and its old tables deleted before the
    first write (the mark comes back only from `verify_load`); items are checked (shape, data
    set, 400 KB) before they are written. A re-run starts again from an empty table, so no item
    of an earlier export survives. Provisioned tables get `load_write_capacity` for the load and
    `serving_write_capacity` after it, also when it fails.
    """
    check_manifest(manifest)
    threads = threads or serving_config()["load_threads"]
    version = manifest["version"]
    expected = int(manifest["total_payloads"])
    capacity = provisioned_capacity()
    started = time.monotonic()

    verify_checksums(feeds_dir, manifest, log)
    table, replaces = _fresh_table(client, prefix, version, reload_served, log)
    created = ensure_feeds_table(client, table, log=log)
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
                        seconds=round(seconds, 3), created_table=created, replaces=replaces)
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


def count_items(client, table: str, segments: int = 1, log: Log = logger) -> int:
    """The table's own item count: a Scan with Select=COUNT and ConsistentRead, paginated, in
    `segments` parallel segments, with progress logged every PROGRESS_LOG_SECONDS. A throttled
    page (a provisioned table's read capacity) is asked again with backoff, MAX_BATCH_ATTEMPTS
    times at most. (DescribeTable's ItemCount is refreshed only about every 6 hours on AWS: not
    usable here.)"""
    counted = _Counters()
    started = time.monotonic()
    last_log = [started]

    def scan_page(kwargs: dict) -> dict:
        for attempt in range(MAX_BATCH_ATTEMPTS):
            if attempt:
                counted.add(retries=1)
                time.sleep(backoff_seconds(attempt))
            try:
                return client.scan(**kwargs)
            except Exception as error:
                if error_code(error) not in THROTTLING_ERRORS:
                    raise
        raise VerificationError(
            f"counting the items of {table} was throttled {MAX_BATCH_ATTEMPTS} times in a row; nothing was "
            "marked loaded. Next step: with PROVISIONED billing give the table more read capacity "
            "(serving.provisioned.read_capacity) and re-run the load task")

    def count_segment(segment: int) -> None:
        kwargs: dict = {"TableName": table, "Select": "COUNT", "ConsistentRead": True}
        if segments > 1:
            kwargs.update(Segment=segment, TotalSegments=segments)
        while True:
            page = scan_page(kwargs)
            counted.add(written=int(page["Count"]))
            now = time.monotonic()
            if now - last_log[0] >= PROGRESS_LOG_SECONDS:
                last_log[0] = now
                log.info("Counting the items of %s: %s so far (%s s)", table, f"{counted.written:,}",
                         f"{now - started:.0f}")
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    if segments > 1:
        with ThreadPoolExecutor(max_workers=segments, thread_name_prefix="feeds-count") as pool:
            for future in [pool.submit(count_segment, segment) for segment in range(segments)]:
                future.result()
    else:
        count_segment(0)
    return counted.written


def verify_table(client, table: str, manifest: dict, feeds_dir: str, written: int,
                 sample_members: int | None = None, seed=None, log: Log = logger, segments: int | None = None) -> int:
    """Refuse `table` when it disagrees with the manifest (VerificationError); returns the items
    read back. Marks nothing (`verify_load` does).

    - the loader's own count of written items equals the manifest's total_payloads;
    - the table's own item count (`count_items`) equals it too: an item left from an earlier
      export, or one missing, fails;
    - `sample_members` payloads drawn at random (seeded: the same sample for the same seed,
      default the version) plus every fallback payload, read back with a consistent GetItem,
      equal the lake's line byte for byte.
    """
    expected = int(manifest["total_payloads"])
    version = manifest["version"]
    if written != expected:
        raise VerificationError(
            f"table {table} is not safe to serve: the loader wrote {written:,} payloads but the "
            f"manifest of {version} lists {expected:,}; do not flip. Re-run the load task"
        )
    segments = serving_config()["load_threads"] if segments is None else segments
    counting = time.monotonic()
    in_table = count_items(client, table, segments, log)
    if in_table != expected:
        raise VerificationError(
            f"table {table} is not safe to serve: it holds {in_table:,} items but the manifest of {version} lists "
            f"{expected:,} ({'items of another export in it' if in_table > expected else 'items missing'}); do "
            "not flip. Re-run the load task: it starts again from an empty table"
        )
    log.info("Counted %s items in %s (consistent scan, %d segments, %.1f s): equals the manifest",
             f"{in_table:,}", table, segments, time.monotonic() - counting)
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
    log.info("Verified %s: %s items, as the loader wrote and the manifest lists; %d sampled payloads (seed %r) "
             "and all fallback payloads match the lake byte for byte", table, f"{in_table:,}", len(samples), seed)
    return len(samples)


def verify_load(client, prefix: str | None, manifest: dict, feeds_dir: str, written: int,
                sample_members: int | None = None, seed=None, log: Log = logger, *, table: str | None = None,
                replaces: str | None = None, dry_run: bool = False) -> int:
    """`verify_table` on the loaded `table` (default `<prefix>feeds-<version>`), then make it
    servable; returns the items read back.

    - a normal load: the version gets its `loaded` mark (recording `table`): from then on it
      may be flipped to;
    - a reload of the served version (`replaces`: the live table, `LoadResult.replaces`): the
      served table switches from `replaces` to `table` in one conditional write
      (`control.switch_served_table`); with `dry_run`, it is verified but not switched.
    """
    version = manifest["version"]
    table = table or feeds_table(version, prefix)
    checked = verify_table(client, table, manifest, feeds_dir, written, sample_members, seed, log)
    manifest_uri = join_uri(feeds_dir, MANIFEST_FILE)
    if replaces is None:
        mark_loaded(client, prefix, version, written, manifest_uri, manifest.get(EXPERIMENT), table=table)
        log.info("Marked %s as loaded and verified in %s (table %s): it may be flipped to", version,
                 control_table(prefix), table)
    elif dry_run:
        log.info("DRY RUN: %s is verified; a real run would switch the served version %s from %s to it. Not "
                 "switching (retention deletes %s with its version)", table, version, replaces, table)
    else:
        switch_served_table(client, prefix, version, replaces, table, written, manifest_uri,
                            manifest.get(EXPERIMENT), log=log)
        log.info("The served version %s now reads the reloaded table %s; %s, no longer read, is kept until "
                 "retention deletes it with its version", version, table, replaces)
    return checked


# --- freshness: rewriting some members' payloads in the served table ---------------------------

@dataclass
class RefreshResult:
    version: str
    written: int            # items written into the served table
    members: int            # members whose payloads were rewritten
    outcome: str            # "refreshed", "nothing to refresh", "not served", "flipped during the refresh",
                            # "reloaded during the refresh"
    served: str | None      # the version served when the refresh ended


def refresh_served(client, prefix: str | None, refresh_dir: str, manifest: dict, *,
                   before_batch: Callable[[int], None] | None = None, log: Log = logger) -> RefreshResult:
    """Write a freshness refresh (spark_jobs/refresh_feeds.py: some members' payloads of version
    V) into V's served table, only while V is served from it.

    The served pointer is read before every batch of 25 items: when V is not served (a flip or
    a rollback happened, or V was never served) nothing more is written and the newer version
    wins; at most the batch in flight when the pointer moved lands in V's table, which is then
    no longer served; the same when V's table is switched by a reload of V. Items are puts on the
    table's keys: a re-run rewrites the same items. A provisioned table is written no faster
    than its write capacity (raised to `serving.provisioned.serving_write_capacity` first if it
    is below), with bounded retries on throttling (`pacing`).
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
    table, counters = served["table"], _Counters()     # the served table: a reload's -r<N> too
    pacer = pacing.WritePacer(pacing.refresh_rate(client, table, log))
    pacing.log_plan(table, manifest, pacer.units_per_second, log)
    paced = pacing.paced_batches(iter_items(refresh_dir, manifest), pacer.units_per_second, BATCH_SIZE)
    for number, (batch, units) in enumerate(paced, start=1):
        if before_batch is not None:
            before_batch(number)
        now = served_version(client, prefix)
        if now is not None and now["version"] == version and now["table"] != table:
            log.warning("Refresh of %s stopped after %d items: the version was reloaded into %s meanwhile, which "
                        "is served now from the launch's export; the rest of this refresh is dropped", version,
                        counters.written, now["table"])
            return RefreshResult(version, counters.written, members, "reloaded during the refresh", version)
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
