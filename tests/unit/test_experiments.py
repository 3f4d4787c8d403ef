"""A/B experiments: the stable assignment (Python and Spark agree), config checks, and serving
variants from one versioned table over a real DynamoDB, with a stop that needs no reload."""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flashfeed.core import experiments
from flashfeed.serving import control, loader, retention, tables
from flashfeed.serving.api import create_app

SETTINGS = {"name": "boost-test", "salt": "s1",
            "variants": {"control": {"share": 0.5}, "strong_boost": {"share": 0.5, "collections": {"boost": 0.5}}}}
EXPERIMENT = experiments.from_dict(SETTINGS, {"boost"})


def test_assignment_is_the_documented_salted_hash_and_follows_the_shares():
    member = "m-000123"
    point = int(hashlib.sha256(f"s1:{member}".encode()).hexdigest()[:8], 16) / 2 ** 32
    assert experiments.bucket(member, "s1") == point
    assert EXPERIMENT.variant(member) == ("control" if point < 0.5 else "strong_boost")
    members = [f"m-{i:06d}" for i in range(4000)]
    counts = {}
    for variant in experiments.assignment(members, EXPERIMENT).values():
        counts[variant] = counts.get(variant, 0) + 1
    assert abs(counts["strong_boost"] / 4000 - 0.5) < 0.03         # 4 standard errors
    reshuffled = experiments.from_dict({**SETTINGS, "salt": "s2"})
    moved = sum(EXPERIMENT.variant(m) != reshuffled.variant(m) for m in members)
    assert 0.4 < moved / 4000 < 0.6                                  # a new salt is a new draw


def test_spark_assigns_every_member_as_python_does(spark):
    from pyspark.sql import functions as F

    three = experiments.from_dict({"name": "x", "salt": "pepper", "variants": {
        "control": {"share": 0.2}, "a": {"share": 0.3}, "b": {"share": 0.5}}})
    members = [f"m-{i:06d}" for i in range(3000)] + ["ü-1", "x" * 64]
    frame = spark.createDataFrame([(m,) for m in members], "member_id string")
    spark_side = {r["member_id"]: r["v"] for r in
                  frame.select("member_id", experiments.variant_column(F.col("member_id"), three).alias("v")).collect()}
    assert spark_side == experiments.assignment(members, three)
    assert set(spark_side.values()) == {"control", "a", "b"}


@pytest.mark.parametrize("change, message", [
    ({"salt": ""}, "salt is empty"),
    ({"name": "Bad Name"}, "name 'Bad Name'"),
    ({"variants": {"control": {"share": 0.5}, "b": {"share": 0.4}}}, "add up to 0.9"),
    ({"variants": {"a": {"share": 0.5}, "b": {"share": 0.5}}}, "must hold `control`"),
    ({"variants": {"control": {"share": 0.5, "collections": {"boost": 1}}, "b": {"share": 0.5}}}, "control is"),
    ({"variants": {"control": {"share": 0.5}, "b": {"share": 0.5, "collections": {"bost": 1}}}}, "unknown keys"),
    ({"variants": {"control": {"share": 0.5}, "b": {"share": 0.5, "rank": 3}}}, "unknown keys"),
])
def test_config_mistakes_are_named(change, message):
    with pytest.raises(experiments.ExperimentConfigError, match=message):
        experiments.from_dict({**SETTINGS, **change}, {"boost"})
    assert experiments.from_dict({**SETTINGS, "name": ""}) is None        # no experiment


VERSION = "20261122t1500"


def line(member_id: str, feed: str, variant: str, marker: str, arm: str | None = None) -> str:
    record = {"member_id": member_id, "feed": feed, "variant": variant, "version": VERSION,
              "groups": [{"key": marker, "styles": ["s-1"]}]}
    if arm:
        record["experiment"] = arm
    return json.dumps(record, separators=(",", ":"))


def write_feeds(feeds_dir: Path, members: list[str], experiment: dict | None) -> dict:
    data_sets = {"products_card": [line(m, "products", "card", "control") for m in members],
                 "fallback": [line("__fallback__#all", "products", "card", "popular")]}
    if experiment:
        arm = experiments.from_dict(experiment)
        data_sets["products_card.strong_boost"] = [line(m, "products", "card", "strong", "strong_boost")
                                                   for m in members if arm.variant(m) == "strong_boost"]
    manifest_sets = {}
    for name, rows in data_sets.items():
        data = "".join(f"{row}\n" for row in rows).encode()
        (feeds_dir / name).mkdir(parents=True)
        (feeds_dir / name / "part-00000.json").write_bytes(data)
        manifest_sets[name] = {"payloads": len(rows), "files": [{"path": f"{name}/part-00000.json", "bytes": len(data),
                                                                 "sha256": hashlib.sha256(data).hexdigest(),
                                                                 "payloads": len(rows)}]}
    manifest = {"version": VERSION, "data_sets": manifest_sets, "members": len(members),
                "total_payloads": sum(len(r) for r in data_sets.values())}
    if experiment:
        manifest["experiment"] = experiment
    (feeds_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_variants_served_from_one_table_and_a_stop_needs_no_reload(dynamodb_endpoint, tmp_path):
    client = tables.dynamodb_client(dynamodb_endpoint)
    prefix = f"ab{uuid.uuid4().hex[:8]}-"
    members = [f"m-{i:06d}" for i in range(40)]
    manifest = write_feeds(tmp_path, members, EXPERIMENT.as_dict())
    result = loader.load_feeds(client, str(tmp_path), manifest, prefix, threads=2)
    loader.verify_load(client, prefix, manifest, str(tmp_path), result.written, sample_members=10, seed=1)
    control.flip(client, prefix, VERSION, str(tmp_path / "manifest.json"), expected_version=None)
    served = control.served_version(client, prefix)
    assert served["experiment"] == EXPERIMENT.as_dict() and served["stopped"] == []

    api = TestClient(create_app(client=client, prefix=prefix))
    treated = next(m for m in members if EXPERIMENT.variant(m) == "strong_boost")
    control_member = next(m for m in members if EXPERIMENT.variant(m) == "control")
    got = api.get(f"/v1/members/{treated}/feeds/products")
    assert got.headers["x-feed-experiment"] == "boost-test:strong_boost"
    assert got.text == line(treated, "products", "card", "strong", "strong_boost")
    got = api.get(f"/v1/members/{control_member}/feeds/products")
    assert got.headers["x-feed-experiment"] == "boost-test:control" and got.json()["groups"][0]["key"] == "control"

    # Stop the variant: its members see control at once (a fresh API: no pointer cache), nothing reloaded.
    control.set_variant_stopped(client, prefix, "boost-test", "strong_boost", True)
    stopped = TestClient(create_app(client=client, prefix=prefix)).get(f"/v1/members/{treated}/feeds/products")
    assert stopped.headers["x-feed-experiment"] == "boost-test:control"
    assert stopped.text == line(treated, "products", "card", "control")
    control.set_variant_stopped(client, prefix, "boost-test", "strong_boost", False)
    resumed = TestClient(create_app(client=client, prefix=prefix)).get(f"/v1/members/{treated}/feeds/products")
    assert resumed.headers["x-feed-experiment"] == "boost-test:strong_boost"

    # The next version runs no experiment: the flip switches payloads and assignment together.
    later = "20261122t2000"
    next_dir = tmp_path / "next"
    next_dir.mkdir()
    plain = write_feeds(next_dir, members, None)
    plain["version"] = later
    for name in plain["data_sets"]:
        part = next_dir / name / "part-00000.json"
        part.write_text(part.read_text().replace(VERSION, later))
        plain["data_sets"][name]["files"][0].update(
            bytes=part.stat().st_size, sha256=hashlib.sha256(part.read_bytes()).hexdigest())
    (next_dir / "manifest.json").write_text(json.dumps(plain))
    result = loader.load_feeds(client, str(next_dir), plain, prefix, threads=2)
    loader.verify_load(client, prefix, plain, str(next_dir), result.written, sample_members=5, seed=1)
    control.flip(client, prefix, later, str(next_dir / "manifest.json"), expected_version=VERSION)
    after = TestClient(create_app(client=client, prefix=prefix)).get(f"/v1/members/{treated}/feeds/products")
    assert "x-feed-experiment" not in after.headers and after.json()["groups"][0]["key"] == "control"
    # ... and a rollback to the experiment's version serves its experiment again
    retention.rollback(client, prefix, VERSION)
    assert control.served_version(client, prefix)["experiment"]["name"] == "boost-test"
