"""Freshness: which quarter hour a run refreshes, and writing a refresh only into the served version
over a real DynamoDB, with a flip injected between two batches."""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from flashfeed.serving import control, loader, payloads, tables

OLD, NEW = "20261122t1100", "20261122t1500"


def write_feeds(folder: Path, version: str, members: list[str], marker: str) -> dict:
    """A feeds (or refresh) partition with one products_full payload per member."""
    rows = [json.dumps({"member_id": m, "feed": "products", "variant": "full", "version": version,
                        "groups": [{"key": marker, "styles": ["s-1"]}]}) for m in members]
    data = "".join(f"{row}\n" for row in rows).encode()
    (folder / "products_full").mkdir(parents=True)
    (folder / "products_full" / "part-00000.json").write_bytes(data)
    manifest = {"version": version, "members": len(members), "total_payloads": len(rows), "data_sets": {
        "products_full": {"payloads": len(rows), "files": [{"path": "products_full/part-00000.json", "bytes": len(data),
                                                            "sha256": hashlib.sha256(data).hexdigest(),
                                                            "payloads": len(rows)}]}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def serve(client, prefix: str, folder: Path, version: str, members: list[str], expected: str | None) -> None:
    manifest = write_feeds(folder, version, members, "launch")
    result = loader.load_feeds(client, str(folder), manifest, prefix, threads=2)
    loader.verify_load(client, prefix, manifest, str(folder), result.written, sample_members=3, seed=1)
    control.flip(client, prefix, version, str(folder / "manifest.json"), expected_version=expected)


def marker(client, prefix: str, version: str, member_id: str) -> str:
    payload = payloads.get_payload(client, tables.feeds_table(version, prefix), member_id, "products", "full")
    return json.loads(payload)["groups"][0]["key"]


def test_a_refresh_writes_only_while_its_version_is_served_and_a_flip_wins(dynamodb_endpoint, tmp_path):
    client = tables.dynamodb_client(dynamodb_endpoint)
    prefix = f"fr{uuid.uuid4().hex[:8]}-"
    members = [f"m-{i:06d}" for i in range(60)]             # 3 batches of at most 25
    serve(client, prefix, tmp_path / "old", OLD, members, None)
    refresh_dir = tmp_path / "refresh"
    manifest = write_feeds(refresh_dir, OLD, members, "fresh")

    result = loader.refresh_served(client, prefix, str(refresh_dir), manifest)
    assert (result.outcome, result.written, result.members) == ("refreshed", 60, 60)
    assert {marker(client, prefix, OLD, m) for m in members} == {"fresh"}

    # A launch flips to NEW before the second batch of the next refresh of OLD: that refresh
    # stops, NEW's table is untouched, and only the first batch reached OLD's table.
    serve_new = {"done": False}

    def flip_before_second_batch(number: int) -> None:
        if number == 2 and not serve_new["done"]:
            serve(client, prefix, tmp_path / "new", NEW, members, OLD)
            serve_new["done"] = True

    again = write_feeds(tmp_path / "again", OLD, members, "fresher")
    result = loader.refresh_served(client, prefix, str(tmp_path / "again"), again,
                                   before_batch=flip_before_second_batch)
    assert (result.outcome, result.written, result.served) == ("flipped during the refresh", 25, NEW)
    assert {marker(client, prefix, NEW, m) for m in members} == {"launch"}
    assert [marker(client, prefix, OLD, m) for m in members].count("fresher") == 25

    # A refresh of a version that is not served writes nothing.
    late = loader.refresh_served(client, prefix, str(tmp_path / "again"), again)
    assert (late.outcome, late.written, late.served) == ("not served", 0, NEW)


@pytest.mark.parametrize("when, quarter", [
    (datetime(2026, 11, 22, 14, 7, tzinfo=timezone.utc), "20261122t1345"),     # [13:45, 14:00) just ended
    (datetime(2026, 11, 22, 14, 15, tzinfo=timezone.utc), "20261122t1400"),
    (datetime(2026, 11, 23, 0, 0, 30, tzinfo=timezone.utc), "20261122t2345"),  # across midnight UTC
])
def test_plan_refresh_takes_the_quarter_hour_that_just_ended_and_the_served_version(
        operators, dynamodb_endpoint, prefix, tmp_path, when, quarter):
    from flashfeed_airflow.planning import plan_refresh  # on the path through `operators`

    client = tables.dynamodb_client(dynamodb_endpoint)
    with pytest.raises(LookupError, match="nothing is served"):
        plan_refresh(when)
    serve(client, prefix, tmp_path / "old", OLD, ["m-1"], None)
    plan = plan_refresh(when)
    assert (plan["version"], plan["dt"], plan["launch"], plan["quarter"]) == (OLD, "2026-11-22", "1100", quarter)
    day, hhmm = f"{quarter[:4]}-{quarter[4:6]}-{quarter[6:8]}", quarter[9:]
    assert plan["intraday_events"].endswith(f"/raw/events_intraday/dt={day}/hhmm={hhmm}")
    assert plan["refresh"].endswith(f"/feeds/dt=2026-11-22/launch=1100/refresh/quarter={quarter}")
