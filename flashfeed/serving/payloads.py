"""Feeds table items: a lake payload line <-> a table item, and the reads the API makes.

An item is key `member_id` (S, hash) + `feed` (S, range, `<feed>#<variant>`, e.g. `brands#card`,
with `@<experiment variant>` for an experiment variant's payload); attribute `payload` (S): the
JSON line from the lake, verbatim. Fallback payloads are stored under
`member_id = "__fallback__#<division>"`, the global one `__fallback__#all`; a product's payloads
under `member_id = "__style__#<style_id>"`, `feed = related` or `bought_together`.
"""
from __future__ import annotations

import json
from typing import Iterator

from flashfeed.core import lake
from flashfeed.core.lake import FALLBACK_MEMBER_PREFIX, MEMBER_FEEDS, STYLE_KEY_PREFIX
from flashfeed.serving.errors import PayloadError, PayloadTooLargeError, ServingStoreError
from flashfeed.serving.manifests import data_set_feed, join_uri, payload_lines

GLOBAL_FALLBACK_MEMBER = f"{FALLBACK_MEMBER_PREFIX}all"
READ_BATCH_ATTEMPTS = 2             # a read request's BatchGetItem: the first call and one retry
MAX_ITEM_BYTES = 400 * 1024          # DynamoDB's limit: attribute names + values, UTF-8 bytes

# Every line was written by the collections export: a bad one means a bug or a hand-edited file.
BAD_LINE_NEXT_STEP = "; re-run the collections task for this launch (and report it if it happens again)"


# --- keys --------------------------------------------------------------------------------------

def feed_key(feed: str, variant: str, experiment_variant: str | None = None) -> str:
    """The range key value, e.g. `brands#card`, or `brands#card@no_boost` for experiment variant
    `no_boost`'s payload."""
    return f"{feed}#{variant}" + (f"@{experiment_variant}" if experiment_variant else "")


def payload_key(record: dict) -> tuple[str, str]:
    """(hash key, range key) of a payload: (member_id, `<feed>#<variant>`) for a member's or a
    fallback's, with `@<experiment variant>` for an experiment variant's, and
    (`__style__#<style_id>`, feed) for a product's."""
    if "style_id" in record:
        return STYLE_KEY_PREFIX + record["style_id"], record["feed"]
    return record["member_id"], feed_key(record["feed"], record["variant"], record.get("experiment"))


def item_size(member_id: str, feed: str, payload: str) -> int:
    """DynamoDB's item size: UTF-8 bytes of every attribute name and string value."""
    return sum(len(s.encode("utf-8")) for s in ("member_id", member_id, "feed", feed, "payload", payload))


# --- lake line -> item -------------------------------------------------------------------------

def _parse_line(line: bytes, where: str, product: bool) -> tuple[str, dict, str, str, str | None]:
    """(payload, record, member or style id, feed, variant) of one line."""
    try:
        payload = line.decode("utf-8")
        record = json.loads(payload)
        if product:
            return payload, record, record["style_id"], record["feed"], None
        return payload, record, record["member_id"], record["feed"], record["variant"]
    except UnicodeDecodeError as error:
        raise PayloadError(f"{where} is not UTF-8 ({error}){BAD_LINE_NEXT_STEP}") from None
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        fields = "style_id and feed" if product else "member_id, feed and variant"
        raise PayloadError(f"{where} is not a payload object with {fields} ({error!r}){BAD_LINE_NEXT_STEP}") from None


def _check_belongs(record: dict, member_id: str, feed: str, variant: str | None,
                   data_set: str, expected: tuple | None, product: bool, where: str) -> None:
    """The payload is of the data set it was found in (and of a known feed)."""
    rerun = BAD_LINE_NEXT_STEP
    if product:
        if feed != expected[0]:
            raise PayloadError(
                f"{where}: style {member_id} feed {feed!r} does not belong in data set {data_set}{rerun}")
        return
    is_fallback = member_id.startswith(FALLBACK_MEMBER_PREFIX)
    if expected is None and not is_fallback:
        raise PayloadError(
            f"{where}: member {member_id} in the fallback data set lacks {FALLBACK_MEMBER_PREFIX!r}{rerun}")
    if expected is not None and (is_fallback or (feed, variant, record.get("experiment")) != expected):
        raise PayloadError(
            f"{where}: member {member_id} feed {feed}#{variant} (experiment variant "
            f"{record.get('experiment')}) does not belong in data set {data_set}{rerun}")
    if variant not in MEMBER_FEEDS.get(feed, ()):
        raise PayloadError(f"{where}: member {member_id} has unknown feed {feed!r} or variant {variant!r}{rerun}")


def item_from_line(line: bytes, data_set: str, uri: str, line_no: int, version: str) -> dict:
    """One lake line -> one table item, checked against the data set it came from."""
    where = f"{uri} line {line_no}"
    expected = data_set_feed(data_set)
    product = expected is not None and expected[1] is None
    payload, record, member_id, feed, variant = _parse_line(line, where, product)
    if not isinstance(member_id, str) or not member_id:
        raise PayloadError(f"{where} has no {'style_id' if product else 'member_id'} string{BAD_LINE_NEXT_STEP}")
    _check_belongs(record, member_id, feed, variant, data_set, expected, product, where)
    if record.get("version", version) != version:
        raise PayloadError(
            f"{where}: {member_id} payload has version {record['version']}, expected {version}{BAD_LINE_NEXT_STEP}")
    member_id, key = payload_key(record)
    size = item_size(member_id, key, payload)
    if size > MAX_ITEM_BYTES:
        raise PayloadTooLargeError(
            f"payload of member {member_id} feed {key} is {size:,} bytes, over DynamoDB's item limit "
            f"of {MAX_ITEM_BYTES:,} bytes ({where}); lower collections.max_payload_bytes (the export truncates "
            "payloads to it) and re-run the collections task"
        )
    return {"member_id": {"S": member_id}, "feed": {"S": key}, "payload": {"S": payload}}


def iter_items(feeds_dir: str, manifest: dict) -> Iterator[dict]:
    """Every item of the load, in manifest order; duplicate keys inside a data set are an error."""
    version = manifest["version"]
    for name, data_set in manifest["data_sets"].items():
        # One set per data set (about one key per member): duplicates would silently
        # overwrite each other and leave the table short of the manifest's count.
        seen: set[tuple[str, str]] = set()
        for entry in data_set["files"]:
            uri = join_uri(feeds_dir, entry["path"])
            with lake.open_file(uri, "rb") as handle:
                for line_no, line in enumerate(payload_lines(handle), start=1):
                    item = item_from_line(line, name, uri, line_no, version)
                    key = (item["member_id"]["S"], item["feed"]["S"])
                    if key in seen:
                        raise PayloadError(f"{uri} line {line_no}: member {key[0]} feed {key[1]} "
                                           f"appears twice in {name}; fix the collections export")
                    seen.add(key)
                    yield item


# --- reads -------------------------------------------------------------------------------------

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


def get_payloads(client, table: str, keys: list[tuple[str, str]],
                 attempts: int = READ_BATCH_ATTEMPTS) -> dict[str, str]:
    """{hash key: payload} of the items of `keys` (hash, range) that exist: one BatchGetItem, and
    what DynamoDB leaves unprocessed asked again, `attempts` calls in all. The read path's policy:
    one retry, no backoff sleep (the request's deadline bounds the calls; the reader checks it)."""
    request = {table: {"Keys": [{"member_id": {"S": h}, "feed": {"S": r}} for h, r in keys],
                       "ProjectionExpression": "member_id, #payload",
                       "ExpressionAttributeNames": {"#payload": "payload"}}}
    found: dict[str, str] = {}
    for _ in range(attempts):
        response = client.batch_get_item(RequestItems=request)
        for item in response.get("Responses", {}).get(table, []):
            found[item["member_id"]["S"]] = item["payload"]["S"]
        request = response.get("UnprocessedKeys") or {}
        if not request:
            return found
    raise ServingStoreError(f"{table}: keys {keys} stayed unprocessed after {attempts} BatchGetItem calls "
                            "(throttled); retry shortly")
