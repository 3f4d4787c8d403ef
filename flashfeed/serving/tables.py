"""DynamoDB clients and the serving tables (DESIGN.md section 6): names, creation, capacity, listing.

boto3 only (no Airflow), so the Airflow operators, the read API and the command line share it.

- `<prefix>feeds-<version>`: one per launch version, e.g. `flashfeed-feeds-20261122t1100`
  (`<prefix>feeds-<version>-r<N>` for the N-th reload of a version while it was served). Key
  `member_id` (S, hash) + `feed` (S, range); the item format is in `payloads`. On-demand, or
  provisioned with config `serving.provisioned` (write capacity raised for a load, lowered after).
- `<prefix>control`: the control item (`control`), always on-demand.
"""
from __future__ import annotations

import logging
import os
import random
import re
import time
from typing import Any, Callable
from urllib.parse import urlparse

from flashfeed.core.config import load_config
from flashfeed.serving.errors import ServingStoreError, TableNotFoundError

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "FLASHFEED_DYNAMODB_ENDPOINT"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
DUMMY_CREDENTIALS = {"aws_access_key_id": "flashfeed-local", "aws_secret_access_key": "flashfeed-local"}
VERSION_PATTERN = re.compile(r"^[0-9]{8}t[0-9]{4}$")     # YYYYMMDDtHHMM: sorts chronologically
RELOAD_SUFFIX = "-r"                                     # <prefix>feeds-<version>-r<N>: a served version reloaded
FEEDS_TABLE_SUFFIX = re.compile(rf"^(?P<version>[0-9]{{8}}t[0-9]{{4}})(?:{RELOAD_SUFFIX}(?P<reload>[1-9][0-9]*))?$")

# botocore client settings: a connection per loader thread plus some for readers.
CONNECTIONS_PER_LOAD_THREAD = 2
MIN_POOL_CONNECTIONS = 10
CLIENT_MAX_ATTEMPTS = 3              # botocore's own retries of one call
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30

# Our retries of batch calls (BatchWriteItem, BatchGetItem) on top of botocore's.
MAX_BATCH_ATTEMPTS = 10              # per batch, including the first try
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 5.0
THROTTLING_ERRORS = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
})

TABLE_ACTIVE_TIMEOUT_SECONDS = 300.0
TABLE_POLL_SECONDS = 0.2

FEEDS_KEY_SCHEMA = [{"AttributeName": "member_id", "KeyType": "HASH"},
                    {"AttributeName": "feed", "KeyType": "RANGE"}]
FEEDS_ATTRIBUTES = [{"AttributeName": "member_id", "AttributeType": "S"},
                    {"AttributeName": "feed", "AttributeType": "S"}]
CONTROL_KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}]
CONTROL_ATTRIBUTES = [{"AttributeName": "pk", "AttributeType": "S"}]
ON_DEMAND = {"BillingMode": "PAY_PER_REQUEST"}

Log = logging.Logger | logging.LoggerAdapter


# --- client ------------------------------------------------------------------------------------

def serving_config() -> dict[str, Any]:
    """Config section `serving` (include/flashfeed.yaml)."""
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

    threads = serving_config()["load_threads"]
    return Config(max_pool_connections=max(MIN_POOL_CONNECTIONS, threads * CONNECTIONS_PER_LOAD_THREAD),
                  retries={"mode": "standard", "max_attempts": CLIENT_MAX_ATTEMPTS},
                  connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS)


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
    kwargs: dict[str, Any] = {"region_name": region or serving_config()["region"], "config": client_config()}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
        kwargs.update(local_credentials(endpoint) or {})
    return boto3.session.Session().client("dynamodb", **kwargs)


def error_code(error: Exception) -> str | None:
    """The DynamoDB error code of a botocore error (its classes are generated: match on the code)."""
    response = getattr(error, "response", None) or {}
    return response.get("Error", {}).get("Code")


def backoff_seconds(attempt: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] spreads retrying threads apart."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * (2 ** attempt)))


def batch_write(client, table: str, items: list[dict], counters, attempts: int,
                before_retry: Callable[[list[dict], int], object]) -> tuple[list[dict], str]:
    """BatchWriteItem puts of `items` (at most 25), asking again for what DynamoDB throttles or
    leaves unprocessed, `attempts` calls in all; `before_retry(unwritten requests, attempt)` waits
    before each retry (the loader's backoff, or the refresh's pacing). Counts on `counters.add(
    written=, batches=, retries=)`. Returns ([], "") when everything was written, else the
    unwritten put requests and why: the caller raises its LoadError with its own next step."""
    requests = [{"PutRequest": {"Item": item}} for item in items]
    cause = "throttled"
    for attempt in range(attempts):
        if attempt:
            counters.add(retries=1)
            before_retry(requests, attempt)
        try:
            response = client.batch_write_item(RequestItems={table: requests})
        except Exception as error:
            if error_code(error) in THROTTLING_ERRORS:
                cause = f"throttled ({error_code(error)})"
                continue
            raise
        unprocessed = (response.get("UnprocessedItems") or {}).get(table) or []
        counters.add(written=len(requests) - len(unprocessed))
        if not unprocessed:
            counters.add(batches=1)
            return [], ""
        requests, cause = unprocessed, "left unprocessed by DynamoDB"
    return requests, cause


# --- names -------------------------------------------------------------------------------------

def table_prefix(prefix: str | None) -> str:
    """`prefix`, else config `serving.table_prefix`."""
    return serving_config()["table_prefix"] if prefix is None else prefix


def feeds_table(version: str, prefix: str | None = None, reload: int = 0) -> str:
    """`<prefix>feeds-<version>`, e.g. `flashfeed-feeds-20261122t1100` (DESIGN.md section 6);
    with `reload` N >= 1, `<prefix>feeds-<version>-r<N>`: the N-th reload of a version while it
    was served, loaded beside the live table and switched to once verified (loader)."""
    if reload < 0:
        raise ValueError(f"reload number must be >= 0, got {reload}")
    suffix = f"{RELOAD_SUFFIX}{reload}" if reload else ""
    return f"{table_prefix(prefix)}feeds-{version}{suffix}"


def parse_feeds_table(name: str, prefix: str | None = None) -> tuple[str, int] | None:
    """(version, reload number) of a feeds table name (`feeds_table`'s inverse), None for any
    other table: `flashfeed-feeds-20261122t1100-r2` -> ("20261122t1100", 2)."""
    start = f"{table_prefix(prefix)}feeds-"
    if not name.startswith(start):
        return None
    match = FEEDS_TABLE_SUFFIX.match(name[len(start):])
    if not match:
        return None
    return match["version"], int(match["reload"] or 0)


def control_table(prefix: str | None = None) -> str:
    return f"{table_prefix(prefix)}control"


def feeds_tables(client, prefix: str | None = None) -> dict[str, list[str]]:
    """version -> its feeds tables (in any status; `<prefix>feeds-<version>` first, then its
    reloads `-r1`, `-r2`, ... in order), versions oldest first."""
    found: dict[str, list[tuple[int, str]]] = {}
    for page in client.get_paginator("list_tables").paginate():
        for name in page.get("TableNames", []):
            parsed = parse_feeds_table(name, prefix)
            if parsed:
                found.setdefault(parsed[0], []).append((parsed[1], name))
    return {version: [name for _, name in sorted(found[version])] for version in sorted(found)}


def feeds_versions(client, prefix: str | None = None) -> list[str]:
    """Versions that have at least one feeds table (in any status), oldest first."""
    return list(feeds_tables(client, prefix))


# --- status ------------------------------------------------------------------------------------

def describe_table(client, table: str) -> dict | None:
    """DescribeTable's `Table`, or None when the table does not exist."""
    try:
        return client.describe_table(TableName=table)["Table"]
    except Exception as error:  # botocore raises a generated class; match on the code
        if error_code(error) == "ResourceNotFoundException":
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


# --- billing and capacity ----------------------------------------------------------------------

def feeds_billing(settings: dict | None = None) -> dict:
    """CreateTable's billing arguments for a feeds table, from config `serving`.

    PAY_PER_REQUEST (default), or PROVISIONED with `serving.provisioned.read_capacity` and
    `load_write_capacity`: a table is created at its load capacity, lowered after the load.
    """
    capacity = provisioned_capacity(settings)
    if capacity is None:
        return dict(ON_DEMAND)
    return {"BillingMode": "PROVISIONED",
            "ProvisionedThroughput": {"ReadCapacityUnits": capacity["read_capacity"],
                                      "WriteCapacityUnits": capacity["load_write_capacity"]}}


def provisioned_capacity(settings: dict | None = None) -> dict[str, int] | None:
    """`serving.provisioned` (positive ints: the config is validated) when billing_mode is PROVISIONED, else None."""
    settings = settings or serving_config()
    return dict(settings["provisioned"]) if settings["billing_mode"] == "PROVISIONED" else None


def set_write_capacity(client, table: str, units: int, why: str, log: Log = logger) -> bool:
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


# --- create ------------------------------------------------------------------------------------

def _describe_billing(billing: dict) -> str:
    if billing["BillingMode"] == "PAY_PER_REQUEST":
        return "on-demand"
    return "provisioned, {ReadCapacityUnits} read / {WriteCapacityUnits} write units".format(
        **billing["ProvisionedThroughput"])


def _key_set(schema: list) -> set:
    return {(key["AttributeName"], key["KeyType"]) for key in schema}


def _ensure_table(client, table: str, key_schema: list, attributes: list, billing: dict, log: Log) -> bool:
    """Create `table` unless it exists with the same key schema; True when it was created."""
    try:
        client.create_table(TableName=table, KeySchema=key_schema, AttributeDefinitions=attributes, **billing)
        created = True
        log.info("Created table %s (%s); waiting until it is ACTIVE", table, _describe_billing(billing))
    except Exception as error:
        if error_code(error) != "ResourceInUseException":
            raise
        created = False
    _wait_active(client, table)
    if not created:
        existing = describe_table(client, table) or {}
        if _key_set(existing.get("KeySchema", [])) != _key_set(key_schema):
            raise ServingStoreError(
                f"table {table} exists with key schema {existing.get('KeySchema')}, not the "
                f"contract's {key_schema}; delete it or pick another table_prefix"
            )
    return created


def ensure_feeds_table(client, table: str, *, log: Log = logger) -> bool:
    return _ensure_table(client, table, FEEDS_KEY_SCHEMA, FEEDS_ATTRIBUTES, feeds_billing(), log)


def ensure_control_table(client, prefix: str | None = None, log: Log = logger) -> str:
    table = control_table(prefix)
    if not table_exists(client, table):
        # One small item read by every API process: on-demand whatever the feeds tables use.
        _ensure_table(client, table, CONTROL_KEY_SCHEMA, CONTROL_ATTRIBUTES, ON_DEMAND, log)
    return table


# --- delete ------------------------------------------------------------------------------------

def delete_table(client, table: str) -> str | None:
    """Start deleting `table`; None when it did, else the error code of a table already gone or busy."""
    try:
        client.delete_table(TableName=table)
    except Exception as error:
        code = error_code(error)
        if code not in ("ResourceNotFoundException", "ResourceInUseException"):
            raise
        return code
    return None


def drop_table(client, table: str, timeout: float = TABLE_ACTIVE_TIMEOUT_SECONDS, log: Log = logger) -> bool:
    """Delete `table` and wait until it is gone (DeleteTable is asynchronous; a table being
    created or updated is deleted once it can be); False when it did not exist."""
    started = time.monotonic()
    existed = False
    while (description := describe_table(client, table)) is not None:
        existed = True
        if description.get("TableStatus") != "DELETING":
            delete_table(client, table)
        waited = time.monotonic() - started
        if waited >= timeout:
            raise ServingStoreError(f"table {table} is still {description.get('TableStatus')} after {waited:.0f} s "
                                    "of deleting it; check the DynamoDB console, then clear this task")
        time.sleep(TABLE_POLL_SECONDS)
    if existed:
        log.info("Deleted table %s (%.1f s)", table, time.monotonic() - started)
    return existed


def next_reload(tables_of_version: list[str], prefix: str | None = None) -> int:
    """The reload number of a new table for a served version: one more than the highest among
    its existing tables (`feeds_table(..., reload=N)`), 1 when it has only its first table."""
    numbers = [parsed[1] for parsed in (parse_feeds_table(name, prefix) for name in tables_of_version) if parsed]
    return max(numbers, default=0) + 1
