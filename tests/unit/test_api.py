"""Read API over a real DynamoDB (dynalite): verbatim payloads, fallback, validation, liveness and
readiness, API keys, and 503 for every failure of the store."""
from __future__ import annotations

import hashlib
import json
import socket
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flashfeed.serving import control, dynamodb_reader, loader, tables
from flashfeed.serving.api import DIVISION_REGEX, ApiKeys, create_app

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


BECAUSE_LINE = ('{"member_id":"m-000123","feed":"because","variant":"card","version":"20261122t1500",'
                '"groups":[{"key":"s-7","name":"Because you viewed Gracia Dresses","styles":["s-8","s-9"]}]}')
RELATED_LINE = ('{"style_id":"s-1","feed":"related","version":"20261122t1500","groups":[{"key":"20",'
                '"name":"Velora Vases","score":12.5,"styles":["s-5","s-6"]}]}')
BOUGHT_LINE = '{"style_id":"s-1","feed":"bought_together","version":"20261122t1500","styles":["s-3","s-4"]}'


def women_fallback_line(feed: str, variant: str, division: str = "women") -> str:
    return json.dumps({"member_id": f"__fallback__#{division}", "feed": feed, "variant": variant,
                       "version": VERSION, "groups": [{"key": division, "styles": ["s-w"]}]})


def write_small_feeds(feeds_dir: Path) -> dict:
    data_sets = {
        "brands_card": [MEMBER_LINE],
        "brands_full": [MEMBER_FULL_LINE],
        "because_card": [BECAUSE_LINE],
        "fallback": [fallback_line(feed, variant) for feed in ("products", "brands", "categories")
                     for variant in ("card", "full")] + [women_fallback_line("products", "card"),
                                                      women_fallback_line("products", "card", "womens_apparel")],
        "related": [RELATED_LINE],
        "bought_together": [BOUGHT_LINE],
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
    client = tables.dynamodb_client(dynamodb_endpoint)
    prefix = f"api{uuid.uuid4().hex[:8]}-"
    feeds_dir = tmp_path_factory.mktemp("feeds")
    manifest = write_small_feeds(feeds_dir)
    result = loader.load_feeds(client, str(feeds_dir), manifest, prefix, threads=2)
    loader.verify_load(client, prefix, manifest, str(feeds_dir), result.written, sample_members=2, seed=1)
    control.flip(client, prefix, VERSION, str(feeds_dir / "manifest.json"), expected_version=None)
    return client, prefix


@pytest.fixture(scope="module")
def reader(dynamodb_endpoint):
    """The API's own DynamoDB client (its default), on dynalite."""
    return dynamodb_reader.from_settings(dynamodb_endpoint)


@pytest.fixture(scope="module")
def api(served, reader):
    _, prefix = served
    return TestClient(create_app(client=reader, prefix=prefix))


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


def test_an_undeclared_method_is_405_with_allow(api):
    response = api.request("TRACE", "/v1/members/m-000123/feeds/brands")
    assert response.status_code == 405 and response.json()["error"] == "request failed"
    assert response.headers["allow"] == "GET"


def test_unknown_feed_is_404_and_bad_variant_400(api):
    assert_error(api.get("/v1/members/m-000123/feeds/shoes"), 404, "unknown feed")
    assert_error(api.get("/v1/members/m-000123/feeds/brands", params={"variant": "tiny"}), 400, "invalid variant")
    assert_error(api.get("/v1/nowhere"), 404, "not found")


def test_liveness_touches_nothing_and_readiness_names_no_table(api, served, reader, monkeypatch):
    calls = []
    post = reader._post
    monkeypatch.setattr(reader, "_post", lambda *args: calls.append(args[0]) or post(*args))
    assert api.get("/v1/live").json() == {"status": "alive"} and calls == []
    ready = api.get("/v1/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["served_version"] == VERSION and 0 <= body["pointer_age_seconds"] < 60
    assert "feeds-" not in ready.text and "table" not in body
    for _ in range(5):
        api.get("/v1/ready")
    assert "DescribeTable" not in calls and len(calls) <= 1      # through the pointer cache


def test_nothing_served_is_503(reader):
    api = TestClient(create_app(client=reader, prefix=f"empty{uuid.uuid4().hex[:8]}-"))
    ready = api.get("/v1/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "not ready"
    assert ready.json()["error"] == "nothing served yet"
    assert_error(api.get("/v1/members/m-000123/feeds/brands"), 503, "nothing served yet")
    assert api.get("/v1/live").status_code == 200


def test_missing_served_table_is_503(dynamodb_endpoint, reader):
    client = tables.dynamodb_client(dynamodb_endpoint)
    prefix = f"gone{uuid.uuid4().hex[:8]}-"
    table = tables.feeds_table(VERSION, prefix)
    tables.ensure_feeds_table(client, table)
    control.mark_loaded(client, prefix, VERSION, 0, "m")
    control.flip(client, prefix, VERSION, "m", expected_version=None)
    client.delete_table(TableName=table)      # by hand: retention never deletes the served table
    api = TestClient(create_app(client=reader, prefix=prefix))
    response = api.get("/v1/members/m-000123/feeds/brands")
    assert_error(response, 503, "serving store unavailable")
    assert "ResourceNotFoundException" in response.json()["detail"]


def test_a_malformed_experiment_in_the_control_item_is_503_not_500(dynamodb_endpoint, reader):
    client = tables.dynamodb_client(dynamodb_endpoint)
    prefix = f"badexp{uuid.uuid4().hex[:8]}-"
    tables.ensure_feeds_table(client, tables.feeds_table(VERSION, prefix))
    control.mark_loaded(client, prefix, VERSION, 0, "m", experiment={"name": "x", "variants": "not a list"})
    control.flip(client, prefix, VERSION, "m", expected_version=None)
    api = TestClient(create_app(client=reader, prefix=prefix))
    response = api.get("/v1/members/m-000123/feeds/brands")
    assert_error(response, 503, "serving store unavailable")
    assert "experiment" in response.json()["detail"] and "malformed" in response.json()["detail"]
    assert api.get("/v1/ready").status_code == 503


def test_a_reader_without_credentials_is_503_not_500(served, monkeypatch):
    _, prefix = served
    monkeypatch.setattr("botocore.session.Session.get_credentials", lambda self: None)
    monkeypatch.setenv(tables.ENDPOINT_ENV, "https://dynamodb.us-east-1.amazonaws.com")
    api = TestClient(create_app(prefix=prefix))            # the reader is made on first use
    response = api.get("/v1/members/m-000123/feeds/brands")
    assert_error(response, 503, "serving store unavailable")
    assert "no AWS credentials" in response.json()["detail"]


def test_because_is_a_member_feed_of_one_variant(api):
    response = api.get("/v1/members/m-000123/feeds/because")
    assert response.status_code == 200 and response.content == BECAUSE_LINE.encode()
    assert_error(api.get("/v1/members/m-000123/feeds/because", params={"variant": "full"}), 404, "no such variant")


def test_division_hint_picks_the_divisions_fallback_and_falls_back_to_the_global_one(api):
    women = api.get("/v1/members/m-999999/feeds/products", params={"division": "Women"})
    assert women.status_code == 200 and women.text == women_fallback_line("products", "card")
    assert (women.headers["x-feed-source"], women.headers["x-feed-fallback"]) == ("fallback", "women")
    # no fallback of home in this version, or no hint: the global one
    home = api.get("/v1/members/m-999999/feeds/products", params={"division": "home"})
    assert home.text == fallback_line("products", "card") and home.headers["x-feed-fallback"] == "all"
    assert api.get("/v1/members/m-999999/feeds/products").headers["x-feed-fallback"] == "all"
    # a known member's own payload wins over any hint
    own = api.get("/v1/members/m-000123/feeds/brands", params={"division": "women"})
    assert own.content == MEMBER_LINE.encode() and "x-feed-fallback" not in own.headers
    assert api.get("/v1/members/m-999999/feeds/products", params={"division": "all"}).headers[
        "x-feed-fallback"] == "all"
    for bad in ("wo#men", "x" * 65, "_women", " women", "中文"):
        assert_error(api.get("/v1/members/m-999999/feeds/products", params={"division": bad}), 400, "invalid division")


def test_a_division_is_found_by_its_key_or_its_name(api):
    expected = women_fallback_line("products", "card", "womens_apparel")
    for hint in ("womens_apparel", "Women's Apparel", "WOMEN’S  APPAREL", "womens-apparel"):
        response = api.get("/v1/members/m-999999/feeds/products", params={"division": hint})
        assert response.status_code == 200 and response.text == expected, hint
        assert response.headers["x-feed-fallback"] == "womens_apparel"


def test_related_and_bought_together_of_a_product_verbatim(api):
    related = api.get("/v1/styles/s-1/related")
    assert related.status_code == 200 and related.content == RELATED_LINE.encode()
    assert related.headers["x-feed-version"] == VERSION and related.headers["content-type"] == "application/json"
    bought = api.get("/v1/styles/s-1/bought-together")
    assert bought.status_code == 200 and bought.content == BOUGHT_LINE.encode()
    assert_error(api.get("/v1/styles/s-404/related"), 404, "no products for style")
    assert_error(api.get("/v1/styles/s%231/bought-together"), 400, "invalid style id")


def test_each_request_is_one_dynamodb_read(served, reader, monkeypatch):
    _, prefix = served
    app = TestClient(create_app(client=reader, prefix=prefix))
    app.get("/v1/ready")              # reads the served pointer (and caches it)
    calls = []
    post = reader._post
    monkeypatch.setattr(reader, "_post", lambda *args: calls.append(args[0]) or post(*args))
    app.get("/v1/styles/s-1/related")
    app.get("/v1/styles/s-1/bought-together")
    app.get("/v1/members/m-000123/feeds/because")
    app.get("/v1/members/m-000123/feeds/brands", params={"variant": "full"})
    assert calls == ["GetItem", "GetItem", "GetItem", "GetItem"]
    app.get("/v1/members/m-999999/feeds/products", params={"division": "women"})    # unknown: her fallbacks
    assert calls[4:] == ["GetItem", "BatchGetItem"]
    app.get("/v1/members/m-888888/feeds/products", params={"division": "women"})    # the fallback is cached
    assert calls[6:] == ["GetItem"]


def test_an_unreachable_store_is_503(served):
    _, prefix = served
    with socket.socket() as probe:                # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    api = TestClient(create_app(client=dynamodb_reader.from_settings(closed), prefix=prefix))
    response = api.get("/v1/members/m-000123/feeds/brands")
    assert_error(response, 503, "serving store unavailable")
    assert "EndpointConnectionError" in response.json()["detail"]


def test_the_api_answers_the_same_over_boto3(served):
    client, prefix = served                       # the loader's boto3 client also works under the API
    api = TestClient(create_app(client=client, prefix=prefix))
    response = api.get("/v1/members/m-000123/feeds/brands")
    assert response.content == MEMBER_LINE.encode() and response.headers["x-feed-source"] == "member"
    assert api.get("/v1/styles/s-1/related").content == RELATED_LINE.encode()


def test_openapi_declares_every_endpoint_its_payload_headers_and_errors(api):
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {"/v1/members/{member_id}/feeds/{feed}": ("MemberPayload", {"X-Feed-Version", "X-Feed-Source",
                                                                          "X-Feed-Fallback", "X-Feed-Experiment"}),
                "/v1/styles/{style_id}/related": ("RelatedPayload", {"X-Feed-Version"}),
                "/v1/styles/{style_id}/bought-together": ("BoughtTogetherPayload", {"X-Feed-Version"})}
    for path, (model, headers) in expected.items():
        get = paths[path]["get"]
        ok = get["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith(f"/{model}"), path
        assert set(ok["headers"]) == headers, path
        for status in ("400", "404", "422", "503"):
            assert get["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    member_params = {p["name"]: p["schema"] for p in paths["/v1/members/{member_id}/feeds/{feed}"]["get"]["parameters"]}
    assert set(member_params) == {"member_id", "feed", "variant", "division"}
    assert member_params["feed"]["enum"] == ["products", "brands", "categories", "because"]
    assert member_params["variant"]["enum"] == ["card", "full"] and member_params["variant"]["default"] == "card"
    assert member_params["member_id"]["pattern"] == "^[A-Za-z0-9_.:-]{1,64}$"
    assert member_params["division"]["anyOf"][0]["pattern"] == DIVISION_REGEX
    style_params = paths["/v1/styles/{style_id}/related"]["get"]["parameters"]
    assert style_params[0]["schema"]["pattern"] == "^[A-Za-z0-9_.:-]{1,64}$"
    assert set(spec["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "detail"}
    assert {"/v1/live", "/v1/ready"} <= set(paths) and "/v1/health" not in paths
    assert "securitySchemes" not in spec.get("components", {})          # no keys set: no security declared


# --- the OpenAPI document is the API: schemathesis, all checks, against the running server ----
@pytest.fixture(scope="module")
def api_server(served, reader):
    """The read API on uvicorn on 127.0.0.1 (a real server, in a thread), over dynalite."""
    import threading
    import time

    import uvicorn

    _, prefix = served
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(client=reader, prefix=prefix), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.slow   # not in `make test-fast`
def test_schemathesis_finds_nothing_with_all_checks(api_server, tmp_path):
    import subprocess
    import sys

    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{api_server}/openapi.json",
               "--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-examples", "250",
               "--seed", "7", "--workers", "1", "--max-failures", "20"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]


# --- access: optional API keys, docs switch -----------------------------------------------------

KEY = "k3y-" + "a" * 28


def test_api_keys_guard_the_feeds_but_not_the_probes(served, reader):
    _, prefix = served
    api = TestClient(create_app(client=reader, prefix=prefix, api_keys=ApiKeys([KEY, "other-" + "b" * 20])))
    path = "/v1/members/m-000123/feeds/brands"
    assert_error(api.get(path), 401, "missing or invalid API key")
    assert_error(api.get(path, headers={"X-API-Key": KEY[:-1]}), 401, "missing or invalid API key")
    assert_error(api.get("/v1/styles/s-1/related"), 401, "missing or invalid API key")
    assert api.get(path, headers={"X-API-Key": KEY}).content == MEMBER_LINE.encode()
    assert api.get(path, headers={"X-API-Key": "other-" + "b" * 20}).status_code == 200
    assert api.get("/v1/live").status_code == 200 and api.get("/v1/ready").status_code == 200
    spec = api.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": "one of the deployment's API keys"}
    assert spec["paths"]["/v1/styles/{style_id}/related"]["get"]["security"] == [{"APIKeyHeader": []}]
    assert "security" not in spec["paths"]["/v1/ready"]["get"]


def test_api_keys_come_from_the_environment_and_a_file(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated 2026-12-01\n" + "f" * 32 + "\n\n")
    keys = ApiKeys.from_environment({"FLASHFEED_API_KEYS": f" {KEY} ,", "FLASHFEED_API_KEYS_FILE": str(keys_file)})
    assert keys.enabled and keys.allows(KEY) and keys.allows("f" * 32)
    assert not keys.allows("# rotated 2026-12-01") and not keys.allows("") and not keys.allows(None)
    assert not ApiKeys.from_environment({}).enabled
    with pytest.raises(SystemExit, match="shorter than 16"):
        ApiKeys.from_environment({"FLASHFEED_API_KEYS": "secret"})
    with pytest.raises(SystemExit, match="cannot be read"):
        ApiKeys.from_environment({"FLASHFEED_API_KEYS_FILE": str(tmp_path / "missing")})


def test_docs_can_be_switched_off(served, reader, serving_config):
    _, prefix = served
    serving_config({"api_docs: true": "api_docs: false"})
    api = TestClient(create_app(client=reader, prefix=prefix))
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert api.get(path).status_code == 404
    assert api.get("/v1/members/m-000123/feeds/brands").status_code == 200
