"""The serving store contract (DESIGN.md section 6): versioned feed tables and the served pointer.

boto3 only (no Airflow), so Airflow operators, the read API and the CLI share it.

Tables
- `<prefix>feeds-<version>`: one per launch version, e.g. `flashfeed-feeds-20261122t1100`.
  Key `member_id` (S, hash) + `feed` (S, range, `<feed>#<variant>`, e.g. `brands#card`);
  attribute `payload` (S): the JSON line from the lake, verbatim. Fallback payloads are
  stored under `member_id = "__fallback__#<division>"`, the global one `__fallback__#all`;
  a product's payloads under `member_id = "__style__#<style_id>"`, `feed = related` or
  `bought_together`.
- `<prefix>control` (always on-demand): key `pk` (S). Item `pk = "served"` holds `version`,
  `previous`, `flipped_at` (ISO UTC), `manifest` (URI), `history` (every flip, oldest first)
  and `loaded`: a map of version -> {written, manifest, verified_at} for the tables that were
  loaded AND verified. Changing `version` is the flip: one conditional UpdateItem that
  requires the version the caller expects to replace and a `loaded` mark for the new one, so
  two flips can never both win and nothing can flip to a table that is half-written.

Load (restartable): checksums of every file against the manifest first, then the version's
`loaded` mark is removed, then BatchWriteItem in batches of 25 from a thread pool, retrying
UnprocessedItems and throttling with exponential backoff and full jitter. Writes are puts on
the table's key, so re-running a load into a table left by a failed attempt overwrites, never
duplicates. `verify_load` then checks the count and a sample read back byte for byte, and
only when they pass writes the `loaded` mark. With `serving.billing_mode: PROVISIONED` the
table's write capacity is raised for the load and lowered after it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

from flashfeed.core import lake
from flashfeed.core.config import load_config
from flashfeed.core.experiments import VARIANT_PATTERN as EXPERIMENT_VARIANT
from flashfeed.core.lake import (
    FALLBACK_DATA_SET,
    FALLBACK_MEMBER_PREFIX,
    FEEDS,
    MEMBER_FEEDS,
    PRODUCT_FEEDS,
    STYLE_KEY_PREFIX,
    feed_folder,
    member_data_sets,
)

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "FLASHFEED_DYNAMODB_ENDPOINT"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
DUMMY_CREDENTIALS = {"aws_access_key_id": "flashfeed-local", "aws_secret_access_key": "flashfeed-local"}

MANIFEST_FILE = "manifest.json"
GLOBAL_FALLBACK_MEMBER = f"{FALLBACK_MEMBER_PREFIX}all"
SERVED_KEY = "served"

# DynamoDB limits and our load tuning.
MAX_ITEM_BYTES = 400 * 1024          # item size = attribute names + values, UTF-8 bytes
BATCH_SIZE = 25                      # BatchWriteItem maximum
MAX_WRITE_ATTEMPTS = 10              # per batch, including the first try
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 5.0
IN_FLIGHT_BATCHES_PER_THREAD = 4     # bounds memory: the reader never runs far ahead of writers
PROGRESS_LOG_SECONDS = 5.0
TABLE_ACTIVE_TIMEOUT_SECONDS = 300.0
TABLE_POLL_SECONDS = 0.2
HASH_CHUNK_BYTES = 1024 * 1024
THROTTLING_ERRORS = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
})


# --- errors ----------------------------------------------------------------------------------

class ServingStoreError(RuntimeError):
    """Base class: every message names the cause and, where there is one, the next step."""


class ManifestError(ServingStoreError):
    """The manifest is missing, malformed, or disagrees with the files it lists."""


class ChecksumMismatchError(ManifestError):
    """A feeds file's bytes differ from what the manifest recorded: refuse to load."""


class PayloadError(ServingStoreError):
    """A payload line cannot become a table item (bad JSON, wrong keys, duplicate)."""


class PayloadTooLargeError(PayloadError):
    """A payload would exceed DynamoDB's 400 KB item limit."""


class LoadError(ServingStoreError):
    """Writing to DynamoDB failed after bounded retries."""


class VerificationError(ServingStoreError):
    """The loaded table disagrees with the manifest: it must not be flipped to."""


class FlipConflictError(ServingStoreError):
    """The served version is not the one the flip expected: another flip won."""

    def __init__(self, message: str, served_version: str | None):
        super().__init__(message)
        self.served_version = served_version


class TableNotFoundError(ServingStoreError):
    """A feeds table that should exist does not (or is not ACTIVE)."""


class NotLoadedError(ServingStoreError):
    """A version has no `loaded` mark: its load failed, is running, or was never verified."""


# --- client and names ------------------------------------------------------------------------

def _serving_config() -> dict[str, Any]:
    return load_config()["serving"]


def local_credentials(endpoint: str | None) -> dict | None:
    """The dummy credentials dynalite accepts, for a local endpoint when the environment has none."""
    if endpoint and urlparse(endpoint).hostname in LOCAL_HOSTS and not os.environ.get("AWS_ACCESS_KEY_ID"):
        return DUMMY_CREDENTIALS
    return None


def client_config():
    """botocore settings of every boto3 DynamoDB client: a connection per loader thread (plus
    readers), standard retries, timeouts."""
    from botocore.config import Config

    threads = int(_serving_config().get("load_threads", 8))
    return Config(max_pool_connections=max(10, threads * 2), retries={"mode": "standard", "max_attempts": 3},
                  connect_timeout=5, read_timeout=30)


def dynamodb_client(endpoint: str | None = None, region: str | None = None):
    """A low-level boto3 DynamoDB client (thread-safe, shared by the loader's threads) for the
    command line and the tests; the Airflow tasks get theirs from a connection
    (`flashfeed_airflow.aws`), the read API uses `dynamodb_reader`.

    Endpoint: the argument, else FLASHFEED_DYNAMODB_ENDPOINT, else AWS's own. Region:
    the argument, else config `serving.region`. A local endpoint (127.0.0.1/localhost)
    without AWS credentials in the environment gets dummy ones, which dynalite accepts.
    """
    import boto3

    endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or None
    kwargs: dict[str, Any] = {"region_name": region or _serving_config()["region"], "config": client_config()}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
        kwargs.update(local_credentials(endpoint) or {})
    return boto3.session.Session().client("dynamodb", **kwargs)


def _prefix(prefix: str | None) -> str:
    return _serving_config()["table_prefix"] if prefix is None else prefix


def feeds_table(version: str, prefix: str | None = None) -> str:
    """`<prefix>feeds-<version>`, e.g. `flashfeed-feeds-20261122t1100`."""
    return f"{_prefix(prefix)}feeds-{version}"


def control_table(prefix: str | None = None) -> str:
    return f"{_prefix(prefix)}control"


def feed_key(feed: str, variant: str, experiment_variant: str | None = None) -> str:
    """The range key value, e.g. `brands#card`, or `brands#card@no_boost` for experiment variant
    `no_boost`'s payload."""
    return f"{feed}#{variant}" + (f"@{experiment_variant}" if experiment_variant else "")


def _error_code(error: Exception) -> str | None:
    response = getattr(error, "response", None) or {}
    return response.get("Error", {}).get("Code")


# --- tables ----------------------------------------------------------------------------------

FEEDS_KEY_SCHEMA = [{"AttributeName": "member_id", "KeyType": "HASH"},
                    {"AttributeName": "feed", "KeyType": "RANGE"}]
FEEDS_ATTRIBUTES = [{"AttributeName": "member_id", "AttributeType": "S"},
                    {"AttributeName": "feed", "AttributeType": "S"}]
CONTROL_KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}]
CONTROL_ATTRIBUTES = [{"AttributeName": "pk", "AttributeType": "S"}]


def describe_table(client, table: str) -> dict | None:
    """DescribeTable's `Table`, or None when the table does not exist."""
    try:
        return client.describe_table(TableName=table)["Table"]
    except Exception as error:  # botocore raises a generated class; match on the code
        if _error_code(error) == "ResourceNotFoundException":
            return None
        raise


def table_exists(client, table: str) -> bool:
    description = describe_table(client, table)
    return description is not None and description.get("TableStatus") == "ACTIVE"


def _wait_active(client, table: str, timeout: float = TABLE_ACTIVE_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        description = describe_table(client, table)
        status = description and description.get("TableStatus")
        if status == "ACTIVE":
            return
        if status in (None, "DELETING"):
            raise TableNotFoundError(
                f"table {table} is {status or 'gone'} while waiting for it to be ACTIVE: something else deleted it "
                "(retention, or by hand). Clear this task to create it again"
            )
        time.sleep(TABLE_POLL_SECONDS)
    raise ServingStoreError(f"table {table} is still {status} after {timeout:.0f} s; check the DynamoDB console")


ON_DEMAND = {"BillingMode": "PAY_PER_REQUEST"}


def feeds_billing(settings: dict | None = None) -> dict:
    """CreateTable's billing arguments for a feeds table, from config `serving`.

    PAY_PER_REQUEST (default), or PROVISIONED with `serving.provisioned.read_capacity` and
    `load_write_capacity`: a table is created at its load capacity, lowered after the load.
    """
    settings = settings or _serving_config()
    mode = settings.get("billing_mode", "PAY_PER_REQUEST")
    if mode == "PAY_PER_REQUEST":
        return dict(ON_DEMAND)
    if mode != "PROVISIONED":
        raise ServingStoreError(f"serving.billing_mode is {mode!r}; use PAY_PER_REQUEST or PROVISIONED")
    capacity = provisioned_capacity(settings)
    return {"BillingMode": "PROVISIONED",
            "ProvisionedThroughput": {"ReadCapacityUnits": capacity["read_capacity"],
                                      "WriteCapacityUnits": capacity["load_write_capacity"]}}


def provisioned_capacity(settings: dict | None = None) -> dict[str, int] | None:
    """`serving.provisioned` as positive ints when billing_mode is PROVISIONED, else None."""
    settings = settings or _serving_config()
    if settings.get("billing_mode", "PAY_PER_REQUEST") != "PROVISIONED":
        return None
    section = settings.get("provisioned") or {}
    capacity = {}
    for name in ("read_capacity", "load_write_capacity", "serving_write_capacity"):
        value = section.get(name)
        if not isinstance(value, int) or value < 1:
            raise ServingStoreError(
                f"serving.provisioned.{name} must be a positive integer with billing_mode PROVISIONED, got {value!r}"
            )
        capacity[name] = value
    return capacity


def set_write_capacity(client, table: str, units: int, why: str,
                       log: logging.Logger | logging.LoggerAdapter = logger) -> bool:
    """Set a provisioned table's write capacity (read capacity unchanged) and wait until it is
    ACTIVE again; True when it changed. An on-demand table is left alone."""
    description = describe_table(client, table)
    if description is None:
        raise TableNotFoundError(f"cannot set the write capacity of {table}: it does not exist; clear the load task "
                                 "of its version to create it")
    if description.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST":
        log.info("%s is on-demand: no write capacity to set %s", table, why)
        return False
    throughput = description.get("ProvisionedThroughput") or {}
    current = int(throughput.get("WriteCapacityUnits") or 0)
    if current == units:
        return False
    log.info("Setting write capacity of %s from %d to %d units %s", table, current, units, why)
    client.update_table(TableName=table, ProvisionedThroughput={
        "ReadCapacityUnits": int(throughput["ReadCapacityUnits"]), "WriteCapacityUnits": units})
    _wait_active(client, table)
    return True


def _ensure_table(client, table: str, key_schema: list, attributes: list,
                  billing: dict, log: logging.Logger | logging.LoggerAdapter) -> bool:
    """Create `table` unless it exists with the same key schema; True when it was created."""
    try:
        client.create_table(TableName=table, KeySchema=key_schema, AttributeDefinitions=attributes, **billing)
        created = True
        log.info("Created table %s (%s); waiting until it is ACTIVE", table,
                 "on-demand" if billing["BillingMode"] == "PAY_PER_REQUEST" else
                 "provisioned, {ReadCapacityUnits} read / {WriteCapacityUnits} write units".format(
                     **billing["ProvisionedThroughput"]))
    except Exception as error:
        if _error_code(error) != "ResourceInUseException":
            raise
        created = False
    _wait_active(client, table)
    if not created:
        existing = describe_table(client, table) or {}
        def as_set(schema: list) -> set:
            return {(key["AttributeName"], key["KeyType"]) for key in schema}
        if as_set(existing.get("KeySchema", [])) != as_set(key_schema):
            raise ServingStoreError(
                f"table {table} exists with key schema {existing.get('KeySchema')}, not the "
                f"contract's {key_schema}; delete it or pick another table_prefix"
            )
    return created


def ensure_feeds_table(client, table: str, *, log: logging.Logger | logging.LoggerAdapter = logger) -> bool:
    return _ensure_table(client, table, FEEDS_KEY_SCHEMA, FEEDS_ATTRIBUTES, feeds_billing(), log)


def ensure_control_table(client, prefix: str | None = None,
                         log: logging.Logger | logging.LoggerAdapter = logger) -> str:
    table = control_table(prefix)
    if not table_exists(client, table):
        # One small item read by every API process: on-demand whatever the feeds tables use.
        _ensure_table(client, table, CONTROL_KEY_SCHEMA, CONTROL_ATTRIBUTES, ON_DEMAND, log)
    return table


# --- manifest and lake files -----------------------------------------------------------------

def _join(base: str, relative: str) -> str:
    return f"{str(base).rstrip('/')}/{relative.lstrip('/')}"


def read_manifest(feeds_dir: str) -> dict:
    """`<feeds_dir>/manifest.json` (local folder or s3://), checked for the fields the load needs."""
    uri = _join(feeds_dir, MANIFEST_FILE)
    try:
        with lake.open_file(uri, "rb") as handle:
            manifest = json.loads(handle.read())
    except FileNotFoundError:
        raise ManifestError(
            f"no manifest at {uri}: the collections export has not finished for this launch "
            "(it writes manifest.json before _SUCCESS); re-run the collections task"
        ) from None
    except json.JSONDecodeError as error:
        raise ManifestError(f"manifest {uri} is not valid JSON ({error}); re-run the collections task") from None
    check_manifest(manifest, uri)
    return manifest


def check_manifest(manifest: dict, where: str = "manifest") -> None:
    """The fields and invariants the loader relies on; raises ManifestError naming the first gap."""
    rerun = "; re-run the collections task for this launch"
    for field in ("version", "data_sets", "total_payloads"):
        if field not in manifest:
            raise ManifestError(f"{where} has no {field!r}{rerun}")
    total = 0
    for name, data_set in manifest["data_sets"].items():
        _data_set_feed(name)   # validates the name
        files = data_set.get("files")
        if not isinstance(files, list):
            raise ManifestError(f"{where}: data set {name} has no file list{rerun}")
        for entry in files:
            for field in ("path", "sha256", "payloads"):
                if field not in entry:
                    raise ManifestError(f"{where}: a file of data set {name} has no {field!r}: {entry}{rerun}")
        listed = sum(int(f["payloads"]) for f in files)
        if listed != int(data_set.get("payloads", listed)):
            raise ManifestError(
                f"{where}: data set {name} says {data_set['payloads']} payloads but its files add up to {listed}"
                f"{rerun}"
            )
        total += listed
    if total != int(manifest["total_payloads"]):
        raise ManifestError(
            f"{where}: total_payloads is {manifest['total_payloads']} but the data sets add up to {total}{rerun}"
        )


def _data_set_feed(name: str) -> tuple[str, str | None, str | None] | None:
    """What a data set holds: (feed, variant, None) of a member data set (`brands_card`),
    (feed, variant, experiment variant) of an experiment variant's (`brands_card.no_boost`),
    (feed, None, None) of a product data set (`related`), None for the fallback data set."""
    if name == FALLBACK_DATA_SET:
        return None
    if name in PRODUCT_FEEDS:
        return name, None, None
    base, _, arm = name.partition(".")
    for feed, variants in MEMBER_FEEDS.items():
        for variant in variants:
            an_experiment_variant = feed in FEEDS and EXPERIMENT_VARIANT.fullmatch(arm)
            if base == feed_folder(feed, variant) and (not arm or an_experiment_variant):
                return feed, variant, arm or None
    raise ManifestError(
        f"unknown data set {name!r} in the manifest; expected one of {member_data_sets()} (the six collections "
        f"also as <data set>.<experiment variant>), {FALLBACK_DATA_SET!r} or {list(PRODUCT_FEEDS)}. The export "
        "and the loader disagree: deploy the same flashfeed version to both, then re-run the collections task"
    )


def payload_key(record: dict) -> tuple[str, str]:
    """(hash key, range key) of a payload: (member_id, `<feed>#<variant>`) for a member's or a
    fallback's, with `@<experiment variant>` for an experiment variant's, and
    (`__style__#<style_id>`, feed) for a product's."""
    if "style_id" in record:
        return STYLE_KEY_PREFIX + record["style_id"], record["feed"]
    return record["member_id"], feed_key(record["feed"], record["variant"], record.get("experiment"))


def _manifest_files(manifest: dict) -> Iterator[tuple[str, dict]]:
    """(data set name, file entry) in manifest order: the order loads and samples rely on."""
    for name, data_set in manifest["data_sets"].items():
        for entry in data_set["files"]:
            yield name, entry


def _payload_lines(handle) -> Iterator[bytes]:
    """Non-blank lines without their line terminator: exactly the bytes stored as `payload`."""
    for raw in handle:
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield line


def verify_checksums(feeds_dir: str, manifest: dict,
                     log: logging.Logger | logging.LoggerAdapter = logger) -> int:
    """sha256, size and payload count of every listed file against the manifest; returns bytes read.

    Runs before anything is written, so a file changed after the export (or a partial
    copy) is refused instead of served.
    """
    total_bytes = 0
    for name, entry in _manifest_files(manifest):
        uri = _join(feeds_dir, entry["path"])
        digest = hashlib.sha256()
        size = lines = 0
        try:
            with lake.open_file(uri, "rb") as handle:
                for raw in handle:
                    digest.update(raw)
                    size += len(raw)
                    if raw.strip():
                        lines += 1
        except FileNotFoundError:
            raise ManifestError(
                f"{uri} is listed in the manifest of {manifest['version']} but missing; "
                "re-run the collections task for this launch"
            ) from None
        problems = []
        if digest.hexdigest() != entry["sha256"]:
            problems.append(f"sha256 {digest.hexdigest()} != manifest {entry['sha256']}")
        if "bytes" in entry and size != int(entry["bytes"]):
            problems.append(f"{size} bytes != manifest {entry['bytes']}")
        if lines != int(entry["payloads"]):
            problems.append(f"{lines} payload lines != manifest {entry['payloads']}")
        if problems:
            raise ChecksumMismatchError(
                f"refusing to load {manifest['version']}: {uri} ({name}) does not match its manifest: "
                f"{'; '.join(problems)}. The file changed after the export or was copied partially; "
                "re-run the collections task for this launch"
            )
        total_bytes += size
    log.info("Checksums OK: %d files, %s, %s payloads match the manifest of %s",
             sum(1 for _ in _manifest_files(manifest)), _human_bytes(total_bytes),
             f"{int(manifest['total_payloads']):,}", manifest["version"])
    return total_bytes


# --- items -----------------------------------------------------------------------------------

def item_size(member_id: str, feed: str, payload: str) -> int:
    """DynamoDB's item size: UTF-8 bytes of every attribute name and string value."""
    return sum(len(s.encode("utf-8")) for s in ("member_id", member_id, "feed", feed, "payload", payload))


# Every line was written by the collections export: a bad one means a bug or a hand-edited file.
BAD_LINE_NEXT_STEP = "; re-run the collections task for this launch (and report it if it happens again)"


def _item_from_line(line: bytes, data_set: str, uri: str, line_no: int, version: str) -> dict:
    """One lake line -> one table item, checked against the data set it came from."""
    where = f"{uri} line {line_no}"
    rerun = BAD_LINE_NEXT_STEP
    expected = _data_set_feed(data_set)
    product = expected is not None and expected[1] is None
    try:
        payload = line.decode("utf-8")
        record = json.loads(payload)
        if product:
            member_id, feed, variant = record["style_id"], record["feed"], None
        else:
            member_id, feed, variant = record["member_id"], record["feed"], record["variant"]
    except UnicodeDecodeError as error:
        raise PayloadError(f"{where} is not UTF-8 ({error}){rerun}") from None
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        fields = "style_id and feed" if product else "member_id, feed and variant"
        raise PayloadError(f"{where} is not a payload object with {fields} ({error!r}){rerun}") from None
    if not isinstance(member_id, str) or not member_id:
        raise PayloadError(f"{where} has no {'style_id' if product else 'member_id'} string{rerun}")
    is_fallback = member_id.startswith(FALLBACK_MEMBER_PREFIX)
    if product:
        if feed != expected[0]:
            raise PayloadError(
                f"{where}: style {member_id} feed {feed!r} does not belong in data set {data_set}{rerun}")
    else:
        if expected is None and not is_fallback:
            raise PayloadError(
                f"{where}: member {member_id} in the fallback data set lacks {FALLBACK_MEMBER_PREFIX!r}{rerun}")
        if expected is not None and (is_fallback or (feed, variant, record.get("experiment")) != expected):
            raise PayloadError(
                f"{where}: member {member_id} feed {feed}#{variant} (experiment variant "
                f"{record.get('experiment')}) does not belong in data set {data_set}{rerun}")
        if variant not in MEMBER_FEEDS.get(feed, ()):
            raise PayloadError(f"{where}: member {member_id} has unknown feed {feed!r} or variant {variant!r}{rerun}")
    if record.get("version", version) != version:
        raise PayloadError(
            f"{where}: {member_id} payload has version {record['version']}, expected {version}{rerun}")
    member_id, key = payload_key(record)
    size = item_size(member_id, key, payload)
    if size > MAX_ITEM_BYTES:
        raise PayloadTooLargeError(
            f"payload of member {member_id} feed {key} is {size:,} bytes, over DynamoDB's item limit "
            f"of {MAX_ITEM_BYTES:,} bytes ({where}); lower collections.max_payload_bytes (the export truncates "
            "payloads to it) and re-run the collections task"
        )
    return {"member_id": {"S": member_id}, "feed": {"S": key}, "payload": {"S": payload}}


def _iter_items(feeds_dir: str, manifest: dict) -> Iterator[dict]:
    """Every item of the load, in manifest order; duplicate keys inside a data set are an error."""
    version = manifest["version"]
    for name, data_set in manifest["data_sets"].items():
        # One set per data set (about one key per member): duplicates would silently
        # overwrite each other and leave the table short of the manifest's count.
        seen: set[tuple[str, str]] = set()
        for entry in data_set["files"]:
            uri = _join(feeds_dir, entry["path"])
            with lake.open_file(uri, "rb") as handle:
                for line_no, line in enumerate(_payload_lines(handle), start=1):
                    item = _item_from_line(line, name, uri, line_no, version)
                    key = (item["member_id"]["S"], item["feed"]["S"])
                    if key in seen:
                        raise PayloadError(f"{uri} line {line_no}: member {key[0]} feed {key[1]} "
                                           f"appears twice in {name}; fix the collections export")
                    seen.add(key)
                    yield item


# --- batch writes ----------------------------------------------------------------------------

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


def _backoff_seconds(attempt: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] spreads retrying threads apart."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * (2 ** attempt)))


def _write_batch(client, table: str, items: list[dict], counters: _Counters) -> None:
    """Put up to 25 items; retries what DynamoDB leaves unprocessed or throttles, bounded."""
    requests = [{"PutRequest": {"Item": item}} for item in items]
    for attempt in range(MAX_WRITE_ATTEMPTS):
        if attempt:
            counters.add(retries=1)
            time.sleep(_backoff_seconds(attempt))
        try:
            response = client.batch_write_item(RequestItems={table: requests})
        except Exception as error:
            if _error_code(error) in THROTTLING_ERRORS:
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
        f"{len(requests)} items still unwritten to {table} after {MAX_WRITE_ATTEMPTS} attempts "
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


def _human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _log_progress(log, table: str, written: int, expected: int, started: float) -> None:
    elapsed = max(time.monotonic() - started, 1e-6)
    rate = written / elapsed
    remaining = max(expected - written, 0)
    eta = _duration(remaining / rate) if rate > 0 else "unknown"
    share = 100.0 * written / expected if expected else 100.0
    log.info("Loading %s: %s / %s payloads written (%.1f %%), %s items/s, ETA %s",
             table, f"{written:,}", f"{expected:,}", share, f"{rate:,.0f}", eta)


def load_feeds(client, feeds_dir: str, manifest: dict, prefix: str | None = None, *,
               threads: int | None = None,
               log: logging.Logger | logging.LoggerAdapter = logger) -> LoadResult:
    """Load every payload listed in `manifest` from `feeds_dir` into `<prefix>feeds-<version>`
    (created if missing).

    Checksums are verified first; the version's `loaded` mark is removed before the first
    write (it comes back only from `verify_load`); items are checked (shape, data set,
    400 KB) before they are written. Idempotent: keys are (member, feed#variant), so a re-run
    overwrites. Provisioned tables get `load_write_capacity` for the load and
    `serving_write_capacity` after it, also when it fails.
    """
    check_manifest(manifest)
    threads = int(threads or _serving_config()["load_threads"])
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


def _write_all(client, feeds_dir: str, manifest: dict, table: str, threads: int, log) -> "_Counters":
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
            for batch in _batches(_iter_items(feeds_dir, manifest)):
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
    counters.rate = counters.written / max(time.monotonic() - write_started, 1e-6)
    return counters


# --- verification ----------------------------------------------------------------------------

def _sample_lines(feeds_dir: str, manifest: dict, sample_members: int, seed) -> list[tuple[str, bytes]]:
    """(data set, line bytes) for a deterministic random sample of member payloads plus every
    fallback payload (unknown members depend on those). Positions are drawn from the
    manifest's counts, so only the files holding them are read, and only up to the last one."""
    member_files = [(name, entry) for name, entry in _manifest_files(manifest) if name != FALLBACK_DATA_SET]
    total = sum(int(entry["payloads"]) for _, entry in member_files)
    chosen = sorted(random.Random(seed).sample(range(total), min(sample_members, total)))

    wanted: dict[int, set[int]] = {}       # file index -> line indexes
    offset = 0
    for index, (_, entry) in enumerate(member_files):
        count = int(entry["payloads"])
        for position in chosen:
            if offset <= position < offset + count:
                wanted.setdefault(index, set()).add(position - offset)
        offset += count

    samples: list[tuple[str, bytes]] = []
    for index, lines in sorted(wanted.items()):
        name, entry = member_files[index]
        last = max(lines)
        with lake.open_file(_join(feeds_dir, entry["path"]), "rb") as handle:
            for line_no, line in enumerate(_payload_lines(handle)):
                if line_no in lines:
                    samples.append((name, line))
                if line_no >= last:
                    break
    for name, entry in _manifest_files(manifest):
        if name == FALLBACK_DATA_SET:
            with lake.open_file(_join(feeds_dir, entry["path"]), "rb") as handle:
                samples.extend((name, line) for line in _payload_lines(handle))
    return samples


def verify_load(client, prefix: str | None, manifest: dict, feeds_dir: str, written: int,
                sample_members: int | None = None, seed=None,
                log: logging.Logger | logging.LoggerAdapter = logger) -> int:
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
    sample_members = int(_serving_config()["verify_sample_members"] if sample_members is None else sample_members)
    samples = _sample_lines(feeds_dir, manifest, sample_members, version if seed is None else seed)
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
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
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
             "fallback payloads match the lake byte for byte", table, f"{written:,}", len(samples),
             version if seed is None else seed)
    mark_loaded(client, prefix, version, written, _join(feeds_dir, MANIFEST_FILE), manifest.get(EXPERIMENT))
    log.info("Marked %s as loaded and verified in %s: it may be flipped to", version, control_table(prefix))
    return len(samples)


# --- loaded marks ----------------------------------------------------------------------------

LOADED = "loaded"
EXPERIMENT = "experiment"          # the served version's experiment (JSON), copied from its loaded mark
STOPPED = "stopped_variants"       # experiment variants served as control: "<experiment>:<variant>"


def _served_key() -> dict:
    return {"pk": {"S": SERVED_KEY}}


def _control_item(client, prefix: str | None) -> dict:
    """The raw control item (consistent read); {} when the table or the item does not exist."""
    try:
        response = client.get_item(TableName=control_table(prefix), Key=_served_key(), ConsistentRead=True)
    except Exception as error:
        if _error_code(error) == "ResourceNotFoundException":
            return {}
        raise
    return response.get("Item") or {}


def _ensure_loaded_map(client, prefix: str | None) -> None:
    # A nested path can only be set or removed once its parent map exists.
    ensure_control_table(client, prefix)
    client.update_item(TableName=control_table(prefix), Key=_served_key(),
                       UpdateExpression="SET #loaded = if_not_exists(#loaded, :empty)",
                       ExpressionAttributeNames={"#loaded": LOADED},
                       ExpressionAttributeValues={":empty": {"M": {}}})


def mark_loaded(client, prefix: str | None, version: str, written: int, manifest_uri: str,
                experiment: dict | None = None) -> None:
    """Record that `<prefix>feeds-<version>` holds exactly `written` verified payloads, and the
    experiment its payloads were built for (the flip serves it with the version)."""
    _ensure_loaded_map(client, prefix)
    mark = {"written": {"N": str(int(written))}, "manifest": {"S": manifest_uri},
            "verified_at": {"S": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            EXPERIMENT: {"S": json.dumps(experiment or {}, sort_keys=True)}}
    client.update_item(TableName=control_table(prefix), Key=_served_key(),
                       UpdateExpression="SET #loaded.#version = :mark",
                       ExpressionAttributeNames={"#loaded": LOADED, "#version": version},
                       ExpressionAttributeValues={":mark": {"M": mark}})


def clear_loaded(client, prefix: str | None, version: str,
                 log: logging.Logger | logging.LoggerAdapter = logger) -> None:
    """Remove a version's `loaded` mark: done before its table is written or deleted."""
    if version in loaded_versions(client, prefix):
        log.info("Removing the loaded mark of %s until it is verified again", version)
    _ensure_loaded_map(client, prefix)
    client.update_item(TableName=control_table(prefix), Key=_served_key(),
                       UpdateExpression="REMOVE #loaded.#version",
                       ExpressionAttributeNames={"#loaded": LOADED, "#version": version})


def loaded_versions(client, prefix: str | None = None) -> dict[str, dict]:
    """version -> {written, manifest, verified_at} of every loaded and verified version."""
    marks = _control_item(client, prefix).get(LOADED, {}).get("M", {})
    return {version: {"written": int(mark["M"]["written"]["N"]), "manifest": mark["M"]["manifest"]["S"],
                      "verified_at": mark["M"]["verified_at"]["S"]}
            for version, mark in marks.items()}


# --- served pointer --------------------------------------------------------------------------

def served_version(client, prefix: str | None = None) -> dict | None:
    """The control item: {version, previous, flipped_at, manifest, table}, or None if nothing is served."""
    item = _control_item(client, prefix)
    if "version" not in item:
        return None
    values = {name: item[name].get("S")
              for name in ("version", "previous", "flipped_at", "manifest") if name in item}
    values.setdefault("previous", None)
    values["history"] = [entry["S"] for entry in item.get("history", {}).get("L", []) if "S" in entry]
    values["table"] = feeds_table(values["version"], prefix)
    values[EXPERIMENT] = json.loads(item.get(EXPERIMENT, {}).get("S") or "{}")
    values["stopped"] = sorted(item.get(STOPPED, {}).get("SS", []))
    return values


def set_variant_stopped(client, prefix: str | None, experiment: str, variant: str, stopped: bool) -> dict:
    """Serve an experiment variant's members as control (`stopped`) or their variant again: one
    UpdateItem on the control item, no reload; the API follows within its pointer cache."""
    action = "ADD" if stopped else "DELETE"
    client.update_item(TableName=control_table(prefix), Key=_served_key(),
                       UpdateExpression=f"{action} #stopped :variant",
                       ExpressionAttributeNames={"#stopped": STOPPED},
                       ExpressionAttributeValues={":variant": {"SS": [f"{experiment}:{variant}"]}})
    return served_version(client, prefix) or {}


def is_older_version(version: str, other: str | None) -> bool:
    """True when `version` is an older launch than `other` (False when there is no other):
    versions are YYYYMMDDtHHMM, so their order as strings is their order in time."""
    return other is not None and version < other


def flip(client, prefix: str | None, new_version: str, manifest_uri: str,
         expected_version: str | None) -> dict:
    """Serve `new_version` if and only if `expected_version` is served now (None: nothing yet).

    One conditional UpdateItem: of two concurrent flips from the same expected version, one
    wins and the other gets FlipConflictError naming the version actually served. The same
    condition requires the new version's `loaded` mark (NotLoadedError otherwise), so a load
    that restarts meanwhile cannot be flipped to.
    """
    if new_version == expected_version:
        raise ValueError(f"{new_version} is already the expected served version; nothing to flip")
    table = feeds_table(new_version, prefix)
    if not table_exists(client, table):
        raise TableNotFoundError(
            f"refusing to flip to {new_version}: its table {table} does not exist (or is not ACTIVE); "
            "load and verify it first"
        )
    _ensure_loaded_map(client, prefix)
    flipped_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    names = {"#version": "version", "#previous": "previous", "#flipped_at": "flipped_at", "#manifest": "manifest",
             "#history": "history", "#experiment": EXPERIMENT,
             "#loaded": LOADED, "#new": new_version}
    values: dict[str, Any] = {":new": {"S": new_version}, ":at": {"S": flipped_at}, ":manifest": {"S": manifest_uri},
                              ":empty": {"L": []}, ":new_list": {"L": [{"S": new_version}]},
                              ":no_experiment": {"S": "{}"}}
    # Every flip (rollbacks included) appends to `history` in the same write, so "the last N
    # served versions" (retention) is defined by the control item alone; and it serves the
    # version's experiment (from its loaded mark) in the same write, so payloads and assignment
    # always switch together.
    history = ("#history = list_append(if_not_exists(#history, :empty), :new_list), "
               "#experiment = if_not_exists(#loaded.#new.#experiment, :no_experiment)")
    if expected_version is None:
        update = (f"SET #version = :new, #flipped_at = :at, #manifest = :manifest, {history} "
                  "REMOVE #previous")
        condition = "attribute_not_exists(#version) AND attribute_exists(#loaded.#new)"
    else:
        update = (f"SET #version = :new, #previous = :expected, #flipped_at = :at, "
                  f"#manifest = :manifest, {history}")
        condition = "#version = :expected AND attribute_exists(#loaded.#new)"
        values[":expected"] = {"S": expected_version}
    try:
        client.update_item(TableName=control_table(prefix), Key={"pk": {"S": SERVED_KEY}},
                           UpdateExpression=update, ConditionExpression=condition,
                           ExpressionAttributeNames=names, ExpressionAttributeValues=values)
    except Exception as error:
        if _error_code(error) != "ConditionalCheckFailedException":
            raise
        actual = served_version(client, prefix)
        actual_version = actual["version"] if actual else None
        if actual_version == expected_version:
            raise NotLoadedError(
                f"refusing to flip to {new_version}: it has no loaded mark in {control_table(prefix)}, so its "
                "table is not known to be complete (its load failed, is running, or never passed "
                "verification). Nothing was changed; run (or clear) the load task of this version"
            ) from None
        raise FlipConflictError(
            f"flip to {new_version} refused: expected {expected_version or 'nothing'} to be served, "
            f"but {actual_version or 'nothing'} is served now (another flip or a rollback won). "
            "Nothing was changed; check which run flipped before retrying",
            served_version=actual_version,
        ) from None
    return {"version": new_version, "previous": expected_version, "flipped_at": flipped_at,
            "manifest": manifest_uri, "table": table}


# --- freshness: rewriting some members' payloads in the served table ------------------------

@dataclass
class RefreshResult:
    version: str
    written: int            # items written into the served table
    members: int            # members whose payloads were rewritten
    outcome: str            # "refreshed", "nothing to refresh", "not served", "flipped during the refresh"
    served: str | None      # the version served when the refresh ended


def refresh_served(client, prefix: str | None, refresh_dir: str, manifest: dict, *,
                   before_batch: Callable[[int], None] | None = None,
                   log: logging.Logger | logging.LoggerAdapter = logger) -> RefreshResult:
    """Write a freshness refresh (spark_jobs/refresh_feeds.py: some members' payloads of version
    V) into V's table, only while V is served.

    The served pointer is read before every batch of 25 items: when V is not served (a flip or
    a rollback happened, or V was never served) nothing more is written and the newer version
    wins; at most the batch in flight when the pointer moved lands in V's table, which is then
    no longer served. Items are puts on the table's keys: a re-run rewrites the same items.
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
    for number, batch in enumerate(_batches(_iter_items(refresh_dir, manifest)), start=1):
        if before_batch is not None:
            before_batch(number)
        now = served_version(client, prefix)
        if now is None or now["version"] != version:
            log.warning("Refresh of %s stopped after %d items: %s was flipped to meanwhile, which wins; the "
                        "rest of this refresh is dropped", version, counters.written, now and now["version"])
            return RefreshResult(version, counters.written, members, "flipped during the refresh",
                                 now and now["version"])
        _write_batch(client, table, batch, counters)
    log.info("Refreshed %s: %d items of %d members rewritten in %s", version, counters.written, members, table)
    return RefreshResult(version, counters.written, members, "refreshed", version)


# --- rollback, retention, coverage ----------------------------------------------------------

VERSION_PATTERN = re.compile(r"^[0-9]{8}t[0-9]{4}$")     # YYYYMMDDtHHMM: sorts chronologically


class RollbackError(ServingStoreError):
    """A rollback cannot be done as asked (nothing served, no previous version, ...)."""


class CoverageError(ServingStoreError):
    """The new version covers too few members compared with the served one: refuse to flip."""


def feeds_versions(client, prefix: str | None = None) -> list[str]:
    """Versions that have a `<prefix>feeds-<version>` table, oldest first."""
    start = f"{_prefix(prefix)}feeds-"
    versions = []
    for page in client.get_paginator("list_tables").paginate():
        for name in page.get("TableNames", []):
            if name.startswith(start) and VERSION_PATTERN.match(name[len(start):]):
                versions.append(name[len(start):])
    return sorted(versions)


def rollback_target(client, prefix: str | None, target_version: str | None = None) -> tuple[dict, str, dict | None]:
    """(served control item, target version, target's loaded mark) of a rollback, checked.

    Target: `target_version`, else the control item's `previous`. Refused, naming what can be
    served instead: nothing served, no target, a malformed one, or (unless the target is served
    already, when the mark is None) a target whose table is gone or has no loaded mark.
    """
    served = served_version(client, prefix)
    if served is None:
        raise RollbackError("nothing is served yet, so there is nothing to roll back from; a first version is "
                            "served by flashfeed_launch_feeds")
    current = served["version"]
    target = (target_version or "").strip() or served.get("previous")
    if not target:
        raise RollbackError(
            f"{current} is served and the control item records no previous version; give target_version "
            f"explicitly (retained versions: {', '.join(feeds_versions(client, prefix)) or 'none'})"
        )
    if not VERSION_PATTERN.match(target):
        retained = ", ".join(feeds_versions(client, prefix)) or "none"
        raise ValueError(f"target version {target!r} is not YYYYMMDDtHHMM, e.g. 20261122t1100: set param "
                         f"target_version to a retained version ({retained}) or leave it empty for the previous one")
    if target == current:
        return served, target, None
    table = feeds_table(target, prefix)
    if not table_exists(client, table):
        retained = feeds_versions(client, prefix)
        raise TableNotFoundError(
            f"cannot roll back to {target}: its table {table} does not exist (or is not ACTIVE), retention "
            f"may have deleted it. Versions that still have a table: {', '.join(retained) or 'none'}"
        )
    marks = loaded_versions(client, prefix)
    if target not in marks:
        raise NotLoadedError(
            f"cannot roll back to {target}: its table exists but has no loaded mark (a reload of it failed "
            f"or is running). Loaded versions: {', '.join(sorted(marks)) or 'none'}"
        )
    return served, target, marks[target]


def rollback(client, prefix: str | None, target_version: str | None = None, *,
             expected_version: str | None = None, manifest_uri: str | None = None,
             log: logging.Logger | logging.LoggerAdapter = logger) -> dict:
    """Serve `target_version` again (default: the control item's `previous`), checked by
    `rollback_target`.

    When the target is already served, changes nothing and returns `flipped: False` (so a
    retried rollback task is a no-op). Otherwise the same conditional write as `flip`,
    expecting the version served now (or `expected_version` when the caller read it earlier: a
    flip in between then wins and this raises FlipConflictError). Manifest recorded:
    `manifest_uri`, else the one of the target's `loaded` mark.
    """
    served, target, mark = rollback_target(client, prefix, target_version)
    current = served["version"]
    if target == current:
        log.info("Version %s is already served (flipped at %s); nothing to roll back", target, served.get("flipped_at"))
        return {"version": target, "previous": served.get("previous"), "flipped": False,
                "table": feeds_table(target, prefix), "manifest": served.get("manifest")}
    if expected_version is not None and expected_version != current:
        raise FlipConflictError(
            f"rollback refused: expected {expected_version} to be served, but {current} is served now "
            "(a flip happened since the rollback was planned). Nothing was changed; re-trigger the rollback",
            served_version=current,
        )
    manifest_uri = manifest_uri or mark["manifest"]
    log.info("Rolling back served version %s -> %s (table %s, manifest %s)", current, target,
             feeds_table(target, prefix), manifest_uri)
    result = flip(client, prefix, target, manifest_uri, expected_version=current)
    result["flipped"] = True
    log.info("Served version is now %s again (was %s, flipped at %s)", target, current, result["flipped_at"])
    return result


def apply_retention(client, prefix: str | None, keep: int,
                    log: logging.Logger | logging.LoggerAdapter = logger) -> list[str]:
    """Delete `<prefix>feeds-*` tables except the last `keep` served versions; returns deleted tables.

    Never deleted, whatever `keep` is: the served and the previous version (control item), and
    any table newer than the served version (loaded but not flipped yet, e.g. a dry run or a
    load in progress). "Last served" = the distinct versions of the control item's `history`,
    newest flip first. The control item is re-read before every delete; if a flip happened
    meanwhile, retention stops without deleting more.
    """
    if int(keep) < 1:
        raise ValueError(f"serving.retain_versions must be at least 1, got {keep}")
    keep = int(keep)
    served = served_version(client, prefix)
    if served is None:
        log.info("Retention: nothing is served yet; no table is deleted")
        return []
    current = served["version"]
    history = served.get("history") or []
    if not history:
        log.warning("Retention: the control item has no flip history (flipped before history was kept); "
                    "keeping only the served and previous versions and anything newer")
        history = [v for v in (served.get("previous"), current) if v]
    recent: list[str] = []
    for version in reversed(history):
        if version not in recent:
            recent.append(version)
        if len(recent) == keep:
            break
    protected = set(recent) | {current}
    if served.get("previous"):
        protected.add(served["previous"])

    versions = feeds_versions(client, prefix)
    doomed = [v for v in versions if v not in protected and v < current]
    kept_newer = [v for v in versions if v > current and v not in protected]
    log.info("Retention (keep %d): served %s, previous %s, keeping %s%s; deleting %s",
             keep, current, served.get("previous") or "-", ", ".join(sorted(protected & set(versions))) or "none",
             f" and not-yet-flipped {', '.join(kept_newer)}" if kept_newer else "",
             ", ".join(doomed) or "nothing")
    deleted = []
    for version in doomed:
        now = served_version(client, prefix)
        if not now or now["version"] != current or now.get("previous") != served.get("previous"):
            log.warning("Retention stopped: the served version changed from %s to %s while deleting; "
                        "%d old tables left for the next run", current, now and now["version"], len(doomed) - len(deleted))
            break
        table = feeds_table(version, prefix)
        description = describe_table(client, table)
        if description is None or description.get("TableStatus") == "DELETING":
            log.info("Retention: %s is already gone or being deleted; skipped", table)
            continue
        clear_loaded(client, prefix, version, log=log)   # first: never a mark without its table
        try:
            client.delete_table(TableName=table)
        except Exception as error:
            if _error_code(error) not in ("ResourceNotFoundException", "ResourceInUseException"):
                raise
            log.info("Retention: %s is already gone or busy (%s); skipped", table, _error_code(error))
            continue
        log.info("Retention: deleted %s (older than the last %d served versions)", table, keep)
        deleted.append(table)
    return deleted


def read_manifest_uri(uri: str) -> dict:
    """A manifest by its own URI (`.../manifest.json`, local path or s3://)."""
    try:
        with lake.open_file(uri, "rb") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {uri}: it was moved or deleted since that launch's export; re-run "
                            "the collections task of that launch") from None
    except json.JSONDecodeError as error:
        raise ManifestError(f"manifest {uri} is not valid JSON ({error}); re-run the collections task of that "
                            "launch") from None


@dataclass
class Coverage:
    new_members: int
    served_members: int
    min_ratio: float

    @property
    def ratio(self) -> float:
        return self.new_members / self.served_members if self.served_members else 1.0

    @property
    def ok(self) -> bool:
        return self.ratio >= self.min_ratio

    def describe(self) -> str:
        return (f"coverage {self.ratio:.1%} below {self.min_ratio:.0%}" if not self.ok else
                f"coverage {self.ratio:.1%} (>= {self.min_ratio:.0%})") + \
               f" ({self.new_members:,} members vs {self.served_members:,} served)"


def _members(manifest: dict, where: str) -> int:
    try:
        return int(manifest["members"])
    except (KeyError, TypeError, ValueError):
        raise ManifestError(f"{where} has no member count ('members'); re-run the collections task") from None


def check_coverage(new_manifest: dict, served_manifest: dict, min_ratio: float | None = None) -> Coverage:
    """Members of the new version against the served one's; `.ok` False below `min_ratio`
    (default config `serving.min_coverage_ratio`, 0.8)."""
    if min_ratio is None:
        min_ratio = float(_serving_config().get("min_coverage_ratio", 0.8))
    return Coverage(new_members=_members(new_manifest, f"manifest of {new_manifest.get('version', '?')}"),
                    served_members=_members(served_manifest, f"served manifest {served_manifest.get('version', '?')}"),
                    min_ratio=float(min_ratio))


# --- reads -----------------------------------------------------------------------------------


def get_payload(client, table: str, member_id: str, feed: str, variant: str) -> str | None:
    """The stored payload string of one member and one feed, or None. One GetItem."""
    return get_item_payload(client, table, member_id, feed_key(feed, variant))


def get_product_payload(client, table: str, style_id: str, feed: str) -> str | None:
    """The stored `related` or `bought_together` payload of one product, or None. One GetItem."""
    return get_item_payload(client, table, STYLE_KEY_PREFIX + style_id, feed)


def get_item_payload(client, table: str, hash_key: str, range_key: str) -> str | None:
    response = client.get_item(
        TableName=table,
        Key={"member_id": {"S": hash_key}, "feed": {"S": range_key}},
        ProjectionExpression="#payload",
        ExpressionAttributeNames={"#payload": "payload"},
    )
    item = response.get("Item")
    return item["payload"]["S"] if item else None


def get_payloads(client, table: str, keys: list[tuple[str, str]]) -> dict[str, str]:
    """{hash key: payload} of the items of `keys` (hash, range) that exist: one BatchGetItem
    (retrying what DynamoDB leaves unprocessed)."""
    request = {table: {"Keys": [{"member_id": {"S": h}, "feed": {"S": r}} for h, r in keys],
                       "ProjectionExpression": "member_id, #payload",
                       "ExpressionAttributeNames": {"#payload": "payload"}}}
    found: dict[str, str] = {}
    for attempt in range(MAX_WRITE_ATTEMPTS):
        response = client.batch_get_item(RequestItems=request)
        for item in response.get("Responses", {}).get(table, []):
            found[item["member_id"]["S"]] = item["payload"]["S"]
        request = response.get("UnprocessedKeys") or {}
        if not request:
            return found
        time.sleep(_backoff_seconds(attempt))
    raise ServingStoreError(f"{table}: keys {keys} stayed unprocessed after {MAX_WRITE_ATTEMPTS} attempts")
