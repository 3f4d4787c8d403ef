"""End to end: both real DAGs through Airflow on a tiny generated world, served by real DynamoDB.

Runs the daily model, then the 11:00 and the 15:00 launch of the same day through Airflow's
scheduler (LocalExecutor, PostgreSQL; triggered runs, as `make demo` makes them), with an A/B
experiment in the config, and checks that after each flip the read API serves a known member's
payload from the new version, byte for byte as written to the lake, and the because, related
and bought-together feeds, the division fallback and the experiment's variant (stopped and
resumed through `flashfeed_experiment`). The launch watch alerts (to a local webhook) when it
runs before a launch is flipped, and not after.
"""
from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from flashfeed.core import calendar, experiments, lake
from flashfeed.serving import control, tables
from tests.conftest import free_port
from tests.e2e.helpers import NY, REPO, e2e_env, feed_lines, first_payload, lake_line, run, triggered_runs

DAY = "2026-11-22"
MEMBERS, DAYS, SEED = 700, 14, 11
LEAD = timedelta(minutes=45)
WATCH = timedelta(minutes=15)
DAGS = ("flashfeed_daily_model", "flashfeed_launch_feeds", "flashfeed_launch_watch", "flashfeed_experiment",
        "flashfeed_freshness", "flashfeed_rollback")
EXPERIMENT = {"name": "boost-e2e", "salt": "e2e", "variants": {
    "control": {"share": 0.8}, "strong_boost": {"share": 0.2, "collections": {"boost": 1.0}}}}


@pytest.fixture(scope="module")
def world(tmp_path_factory, dynamodb_endpoint, demo_world):
    home = tmp_path_factory.mktemp("flashfeed-home")
    # The committed config with an A/B experiment running: a fifth of the members get a variant.
    config = yaml.safe_load((REPO / "include" / "flashfeed.yaml").read_text())
    config["experiments"] = EXPERIMENT
    (home / "flashfeed.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = e2e_env(home, FLASHFEED_DYNAMODB_ENDPOINT=dynamodb_endpoint, FLASHFEED_CONFIG=str(home / "flashfeed.yaml"),
                  AIRFLOW__API__PORT=str(free_port()))
    run(["flashfeed", "airflow-init"], env)
    demo_world(env["FLASHFEED_LAKE"], members=MEMBERS, days=DAYS, end_date=DAY, seed=SEED)
    return env


def _client(env):
    return tables.dynamodb_client(endpoint=env["FLASHFEED_DYNAMODB_ENDPOINT"])


def _lake_line(env, launch: str, member_id: str, data_set: str = "products_card", key: str = "member_id") -> str:
    return lake_line(env["FLASHFEED_LAKE"], DAY, launch, member_id, data_set, key)


def _first(env, launch: str, data_set: str) -> dict:
    return first_payload(env["FLASHFEED_LAKE"], DAY, launch, data_set)


def _assert_payloads_sell_what_is_on_sale(root: str, launch: str) -> None:
    """Every product in every payload is a scored (on sale, in stock) product; none twice; every
    product payload is of a product on sale."""
    import pyarrow.parquet as pq

    on_sale = set(pq.read_table(lake.products(DAY, launch, root), columns=["style_id"]).column(0).to_pylist())
    feeds = Path(lake.feeds(DAY, launch, root))
    fallback_divisions = set()
    for data_set in lake.data_sets():
        payloads = 0
        for part in (feeds / data_set).glob("part-*.json"):
            for line in part.read_text().splitlines():
                payload = json.loads(line)
                payloads += 1
                owner = payload.get("member_id") or payload["style_id"]
                styles = payload.get("styles") or [s for g in payload["groups"] for s in g["styles"]]
                assert len(styles) == len(set(styles)), f"{owner} {data_set}: a product twice"
                assert set(styles) <= on_sale, f"{owner} {data_set}: product not on sale"
                if data_set in lake.PRODUCT_FEEDS:
                    assert payload["style_id"] in on_sale and styles and payload["style_id"] not in styles
                if data_set == "fallback":
                    fallback_divisions.add(payload["member_id"])
        assert payloads, f"no {data_set} payload"
    assert lake.FALLBACK_MEMBER_PREFIX + "all" in fallback_divisions
    assert lake.FALLBACK_MEMBER_PREFIX + "women" in fallback_divisions


def _assert_browsing_shows_within_the_quarter_hour(env, runs, version: str, monkeypatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flashfeed.demo.generator import SCHEMAS

    root, launch = env["FLASHFEED_LAKE"], version[9:]
    member_id = _first(env, launch, "products_card")["member_id"]
    viewed = _first(env, launch, lake.RELATED)["style_id"]         # on sale, with related products
    quarter = datetime.combine(datetime.fromisoformat(DAY), time(15, 15), NY).astimezone(ZoneInfo("UTC"))
    partition = lake.intraday_events(quarter.date(), quarter.strftime("%H%M"), root)
    Path(partition).mkdir(parents=True)
    events = [{"event_id": "intraday-1", "member_id": member_id, "style_id": viewed, "event_type": "pdp_view",
               "occurred_at": quarter + timedelta(minutes=5), "price": None}]
    pq.write_table(pa.Table.from_pylist(events, schema=SCHEMAS["events"]), f"{partition}/part-00000.parquet")
    Path(partition, "_SUCCESS").touch()
    before = _api_get(env, f"/v1/members/{member_id}/feeds/because", monkeypatch).json()
    runs.run("flashfeed_freshness", quarter + timedelta(minutes=15))
    refresh = Path(lake.refresh(DAY, launch, quarter.strftime("%Y%m%dt%H%M"), root))
    manifest = json.loads((refresh / "manifest.json").read_text())
    assert manifest["members"] == 1 and manifest["version"] == version
    after = _api_get(env, f"/v1/members/{member_id}/feeds/because", monkeypatch)
    assert after.headers["x-feed-version"] == version
    assert after.json()["groups"][0]["key"] == viewed and after.json() != before
    assert after.text == _lake_line(env, launch, member_id, f"refresh/quarter={quarter:%Y%m%dt%H%M}/because_card")


def _api_get(env, path: str, monkeypatch):
    from fastapi.testclient import TestClient

    from flashfeed.serving.api import create_app

    for key in ("FLASHFEED_DYNAMODB_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, env[key])
    with TestClient(create_app(client=_client(env))) as api:
        return api.get(path)


def test_daily_model_then_two_launches_are_served(world, monkeypatch, alert_inbox):
    env = {**world, "FLASHFEED_ALERT_WEBHOOK": alert_inbox.url}
    with triggered_runs(env, Path(env["FLASHFEED_HOME"]) / "components", DAGS) as runs:
        _the_day(env, runs, monkeypatch, alert_inbox)


def _the_day(env, runs, monkeypatch, alert_inbox) -> None:
    root = env["FLASHFEED_LAKE"]
    runs.run("flashfeed_daily_model", datetime.combine(datetime.fromisoformat(DAY), time(5), NY))

    groups = json.loads(Path(lake.affinity(DAY, root=root), "groups.json").read_text())["groups"]
    assert groups, "no member group was trained"
    for group in groups:
        metrics = json.loads(Path(lake.models(DAY, group, root), "metrics.json").read_text())
        assert metrics["members"] >= 1 and metrics["affinity_rows"] > 0
        assert metrics["fit_on"] == "driver"     # groups this small are fit without a Spark session
    assert Path(lake.success(lake.affinity(DAY, root=root))).exists()
    related = json.loads(Path(lake.related(DAY, root), "metrics.json").read_text())
    assert Path(lake.success(lake.related(DAY, root))).exists()
    for name in ("cooccurrence", "bought_together"):
        test = related[name]["test"]
        assert test["cases"] > 0 and set(test["mrr"]) >= {"popularity"}, name
        # served: the model when it ranked the hold-out at least as well as popularity, else popularity
        model = max((m for m in test["mrr"] if m != "popularity"), key=test["mrr"].get)
        assert related[name]["served"] in ("llr", "fp_growth", "popularity"), name
        if related[name]["served"] == "popularity" and name == "cooccurrence":
            assert test["mrr"]["llr"] < test["mrr"]["popularity"], model

    served = []
    for launch in ("1100", "1500"):
        slot = calendar.slot(DAY, launch)
        if launch == "1500":
            # The launch watch at 14:45: 15:00 is not built yet, so it alerts (webhook) and fails.
            runs.run("flashfeed_launch_watch", slot.starts_at - WATCH, expect="failed")
            [alert] = alert_inbox.alerts
            assert alert["alert"]["version"] == slot.version
            assert alert["alert"]["served_version"] == served[0]["version"]
            assert "launch 2026-11-22 15:00" in alert["text"] and "NOT flipped 15 minutes" in alert["text"]
            assert alert["alert"]["progress"] == {"affinity of the day sealed": True, "products scored": False,
                                                  "collections built": False, "table loaded and verified": False}
        runs.run("flashfeed_launch_feeds", slot.starts_at - LEAD)
        pointer = control.served_version(_client(env), None)
        assert pointer["version"] == slot.version
        served.append(pointer)
        runs.run("flashfeed_launch_watch", slot.starts_at - WATCH)   # served: on time, no new alert
        assert len(alert_inbox.alerts) == (1 if launch == "1500" else 0)

        manifest = json.loads(Path(lake.feeds(DAY, launch, root), "manifest.json").read_text())
        first = next(Path(lake.feeds(DAY, launch, root), "products_card").glob("part-*.json"))
        member_id = json.loads(first.read_text().splitlines()[0])["member_id"]
        response = _api_get(env, f"/v1/members/{member_id}/feeds/products?variant=card", monkeypatch)
        assert response.status_code == 200
        assert response.headers["x-feed-version"] == slot.version
        assert response.text == _lake_line(env, launch, member_id)  # served verbatim
        payload = response.json()
        assert payload["version"] == slot.version and payload["member_id"] == member_id
        assert payload["groups"] and all(g["styles"] for g in payload["groups"])
        assert manifest["members"] >= len(groups)

        _assert_payloads_sell_what_is_on_sale(root, launch)

        unknown = _api_get(env, "/v1/members/m-not-a-member/feeds/brands?variant=full", monkeypatch)
        assert unknown.status_code == 200 and unknown.json()["member_id"].startswith(lake.FALLBACK_MEMBER_PREFIX)
        women = _api_get(env, "/v1/members/m-not-a-member/feeds/brands?variant=full&division=women", monkeypatch)
        fallback_lines = feed_lines(root, DAY, launch, "fallback")
        assert women.text in fallback_lines and women.headers["x-feed-fallback"] == "women"
        assert (women.json()["member_id"], women.json()["feed"]) == (lake.FALLBACK_MEMBER_PREFIX + "women", "brands")

        # The seventh collection and the product pages' feeds, served verbatim from the same version.
        because = _first(env, launch, "because_card")
        response = _api_get(env, f"/v1/members/{because['member_id']}/feeds/because", monkeypatch)
        assert response.status_code == 200 and response.json() == because
        assert because["groups"][0]["name"].startswith("Because you viewed ")
        for data_set, path in ((lake.RELATED, "related"), (lake.BOUGHT_TOGETHER, "bought-together")):
            style_id = _first(env, launch, data_set)["style_id"]
            response = _api_get(env, f"/v1/styles/{style_id}/{path}", monkeypatch)
            assert response.status_code == 200 and response.headers["x-feed-version"] == slot.version
            assert response.text == _lake_line(env, launch, style_id, data_set, key="style_id")
        assert manifest["related"][lake.BOUGHT_TOGETHER]["served"] == related["bought_together"]["served"]
        assert manifest["data_sets"][lake.RELATED]["payloads"] > 0

        # The experiment: a member of strong_boost is served her variant's payload, named in the header.
        experiment = experiments.from_dict(manifest["experiment"])
        treated = _first(env, launch, "products_card.strong_boost")
        assert experiment.variant(treated["member_id"]) == "strong_boost" and treated["experiment"] == "strong_boost"
        members = [json.loads(x)["member_id"] for x in feed_lines(root, DAY, launch, "products_card")]
        assert manifest["data_sets"]["products_card.strong_boost"]["payloads"] == sum(
            experiment.variant(m) == "strong_boost" for m in members)
        path = f"/v1/members/{treated['member_id']}/feeds/products"
        response = _api_get(env, path, monkeypatch)
        assert response.headers["x-feed-experiment"] == "boost-e2e:strong_boost"
        assert response.text == _lake_line(env, launch, treated["member_id"], "products_card.strong_boost")
        if launch == "1100":
            # Stopped from the Airflow DAG: control at once, no reload; then resumed.
            runs.run("flashfeed_experiment", slot.starts_at, conf={"variant": "strong_boost", "action": "stop"})
            stopped = _api_get(env, path, monkeypatch)
            assert stopped.headers["x-feed-experiment"] == "boost-e2e:control"
            assert stopped.text == _lake_line(env, launch, treated["member_id"])
            runs.run("flashfeed_experiment", slot.starts_at + WATCH,
                     conf={"variant": "strong_boost", "action": "resume"})
            assert _api_get(env, path, monkeypatch).headers["x-feed-experiment"] == "boost-e2e:strong_boost"

    assert served[1]["previous"] == served[0]["version"]  # the 15:00 flip replaced the 11:00 version

    # Freshness: a member views a product at 15:20 New York; the 15:30 run of flashfeed_freshness
    # rewrites her payloads in the served version, and her because card starts with that product.
    _assert_browsing_shows_within_the_quarter_hour(env, runs, served[1]["version"], monkeypatch)

    # Rollback through Airflow: the manual DAG with its default target (the previous version)
    # serves the 11:00 version again, and the API follows within its pointer cache.
    rolled_back_at = datetime.combine(datetime.fromisoformat(DAY), time(16), NY)
    runs.run("flashfeed_rollback", rolled_back_at)
    pointer = control.served_version(_client(env), None)
    assert (pointer["version"], pointer["previous"]) == (served[0]["version"], served[1]["version"])
    assert pointer["history"][-3:] == [served[0]["version"], served[1]["version"], served[0]["version"]]
    response = _api_get(env, "/v1/members/m-not-a-member/feeds/brands?variant=full", monkeypatch)
    assert response.status_code == 200 and response.headers["x-feed-version"] == served[0]["version"]
