"""Read API over a real DynamoDB (dynalite): verbatim payloads, fallback, validation, health."""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flashfeed import serving_store as store
from flashfeed.api import create_app

VERSION = "20261122t1500"
# Odd spacing, key order and non-ASCII on purpose: the API must not re-serialise.
MEMBER_LINE = ('{"member_id": "m-000123", "feed": "brands", "variant": "card", "version": "20261122t1500",'
               '  "groups": [{"key": "13|dresses|gracia", "name": "Gracia Café", "affinity": 0.998,'
               ' "styles": ["s-1", "s-2"]}]}')
MEMBER_FULL_LINE = ('{"member_id":"m-000123","feed":"brands","variant":"full","version":"20261122t1500",'
                    '"groups":[]}')


def fallback_line(feed: str, variant: str) -> str:
    return json.dumps({"member_id": "__fallback__#all", "feed": feed, "variant": variant,
                       "version": VERSION, "groups": [{"key": "popular", "styles": ["s-9"]}]})


def write_small_feeds(feeds_dir: Path) -> dict:
    data_sets = {
        "brands_card": [MEMBER_LINE],
        "brands_full": [MEMBER_FULL_LINE],
        "fallback": [fallback_line(feed, variant) for feed in ("products", "brands", "categories")
                     for variant in ("card", "full")],
    }
    manifest_sets = {}
    for name, rows in data_sets.items():
        path = f"{name}/part-00000.json"
        data = "".join(f"{row}\n" for row in rows).encode("utf-8")
        (feeds_dir / name).mkdir(parents=True)
        (feeds_dir / path).write_bytes(data)
        manifest_sets[name] = {"payloads": len(rows), "files": [
            {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "payloads": len(rows)}]}
    manifest = {"version": VERSION, "data_sets": manifest_sets, "members": 1,
                "total_payloads": sum(len(rows) for rows in data_sets.values())}
    (feeds_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="module")
def served(dynamodb_endpoint, tmp_path_factory):
    """A prefix whose served version is a loaded, verified, flipped table."""
    client = store.dynamodb_client(dynamodb_endpoint)
    prefix = f"api{uuid.uuid4().hex[:8]}-"
    feeds_dir = tmp_path_factory.mktemp("feeds")
    manifest = write_small_feeds(feeds_dir)
    result = store.load_feeds(client, str(feeds_dir), manifest, prefix, threads=2)
    store.verify_load(client, prefix, manifest, str(feeds_dir), result.written, sample_members=2, seed=1)
    store.flip(client, prefix, VERSION, str(feeds_dir / "manifest.json"), expected_version=None)
    return client, prefix


@pytest.fixture(scope="module")
def api(served):
    client, prefix = served
    return TestClient(create_app(client=client, prefix=prefix))


def assert_error(response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["detail"]


def test_member_payload_is_returned_verbatim_with_headers(api):
    response = api.get("/v1/members/m-000123/feeds/brands")           # variant defaults to card
    assert response.status_code == 200
    assert response.content == MEMBER_LINE.encode("utf-8")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-feed-version"] == VERSION
    assert response.headers["x-feed-source"] == "member"

    full = api.get("/v1/members/m-000123/feeds/brands", params={"variant": "full"})
    assert full.content == MEMBER_FULL_LINE.encode("utf-8")


def test_unknown_member_gets_the_global_fallback(api):
    response = api.get("/v1/members/m-999999/feeds/products", params={"variant": "full"})
    assert response.status_code == 200
    assert response.text == fallback_line("products", "full")
    assert response.headers["x-feed-source"] == "fallback"
    assert response.headers["x-feed-version"] == VERSION
    # A known member without this feed also gets the fallback rather than an error.
    assert api.get("/v1/members/m-000123/feeds/categories").headers["x-feed-source"] == "fallback"


@pytest.mark.parametrize("member_id", ["m 1", "m#1", "__fallback__#all", "x" * 65, "m%251"])
def test_bad_member_id_is_400(api, member_id):
    assert_error(api.get(f"/v1/members/{member_id.replace('#', '%23')}/feeds/brands"), 400, "invalid member id")


def test_unknown_feed_is_404_and_bad_variant_400(api):
    assert_error(api.get("/v1/members/m-000123/feeds/shoes"), 404, "unknown feed")
    assert_error(api.get("/v1/members/m-000123/feeds/brands", params={"variant": "tiny"}), 400, "invalid variant")
    assert_error(api.get("/v1/nowhere"), 404, "not found")


def test_health_ok(api, served):
    _, prefix = served
    response = api.get("/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "served_version": VERSION,
                               "table": store.feeds_table(VERSION, prefix)}


def test_nothing_served_is_503(dynamodb_endpoint):
    client = store.dynamodb_client(dynamodb_endpoint)
    api = TestClient(create_app(client=client, prefix=f"empty{uuid.uuid4().hex[:8]}-"))
    health = api.get("/v1/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert_error(api.get("/v1/members/m-000123/feeds/brands"), 503, "nothing served yet")


def test_missing_served_table_is_503(dynamodb_endpoint):
    client = store.dynamodb_client(dynamodb_endpoint)
    prefix = f"gone{uuid.uuid4().hex[:8]}-"
    table = store.feeds_table(VERSION, prefix)
    store.ensure_feeds_table(client, table)
    store.mark_loaded(client, prefix, VERSION, 0, "m")
    store.flip(client, prefix, VERSION, "m", expected_version=None)
    client.delete_table(TableName=table)      # by hand: retention never deletes the served table
    api = TestClient(create_app(client=client, prefix=prefix))
    health = api.get("/v1/health")
    assert health.status_code == 503 and health.json()["error"] == "served table missing"
    assert_error(api.get("/v1/members/m-000123/feeds/brands"), 503, "serving store unavailable")
