"""Serving store against a real DynamoDB (dynalite): load, verify, restart, limits, flip."""
from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from flashfeed.core.lake import FEEDS, VARIANTS, feed_folder
from flashfeed.core.settings import ConfigError
from flashfeed.serving import control, errors, loader, manifests, payloads, tables

VERSION = "20261122t1100"
DIVISIONS = ("women", "men", "all")


# --- a feeds partition, as the collections export writes it ------------------------------------

def payload_line(member_id: str, feed: str, variant: str, version: str = VERSION, groups: int = 2) -> str:
    """One payload JSON line; a non-ASCII brand name checks the byte-for-byte round trip."""
    record = {
        "member_id": member_id, "feed": feed, "variant": variant, "version": version,
        "groups": [{"key": f"g{i}", "name": "Gracia Café" if i == 0 else f"Brand {i}",
                    "affinity": round(1 - i / 100, 3), "styles": [f"s-{i}-{j}" for j in range(3)]}
                   for i in range(groups)],
    }
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))


def write_feeds(feeds_dir: Path, members: int, version: str = VERSION, files_per_data_set: int = 2,
                lines: dict[tuple[str, str], list[str]] | None = None) -> dict:
    """Write a feeds partition with `members` members, fallback payloads and manifest.json."""
    member_ids = [f"m-{i:06d}" for i in range(members)]
    data_sets: dict[str, list[str]] = {}
    for feed in FEEDS:
        for variant in VARIANTS:
            data_sets[feed_folder(feed, variant)] = (lines or {}).get((feed, variant)) or [
                payload_line(m, feed, variant, version) for m in member_ids]
    data_sets["fallback"] = [payload_line(f"__fallback__#{d}", feed, variant, version)
                             for d in DIVISIONS for feed in FEEDS for variant in VARIANTS]
    manifest_sets = {}
    for name, rows in data_sets.items():
        folder = feeds_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        chunk = -(-len(rows) // files_per_data_set)
        for index in range(files_per_data_set):
            part = rows[index * chunk:(index + 1) * chunk]
            data = "".join(f"{row}\n" for row in part).encode("utf-8")
            path = f"{name}/part-{index:05d}-test.json"
            (feeds_dir / path).write_bytes(data)
            files.append({"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                          "payloads": len(part)})
        manifest_sets[name] = {"payloads": len(rows), "files": files}
    manifest = {"version": version, "dt": "2026-11-22", "launch": "1100", "data_sets": manifest_sets,
                "total_payloads": sum(len(rows) for rows in data_sets.values()), "members": members}
    (feeds_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def count_items(client, table: str) -> int:
    total = 0
    for page in client.get_paginator("scan").paginate(TableName=table, Select="COUNT"):
        total += page["Count"]
    return total


# --- names and client --------------------------------------------------------------------------

def test_table_names_follow_the_contract():
    assert tables.feeds_table(VERSION, "flashfeed-") == "flashfeed-feeds-20261122t1100"
    assert tables.control_table("flashfeed-") == "flashfeed-control"
    assert payloads.feed_key("brands", "card") == "brands#card"


def test_client_takes_endpoint_from_environment(monkeypatch, dynamodb_endpoint):
    monkeypatch.setenv(tables.ENDPOINT_ENV, dynamodb_endpoint)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    client = tables.dynamodb_client()
    assert client.meta.endpoint_url == dynamodb_endpoint
    assert client.meta.region_name == "us-east-1"
    client.list_tables()      # dummy credentials are accepted locally


# --- load and verify ---------------------------------------------------------------------------

def test_load_verify_and_idempotent_reload(tmp_path, client, prefix, caplog):
    manifest = write_feeds(tmp_path, members=500)
    assert manifest["total_payloads"] == 500 * 6 + len(DIVISIONS) * 6    # a few thousand
    table = tables.feeds_table(VERSION, prefix)

    with caplog.at_level(logging.INFO, logger=loader.logger.name):
        result = loader.load_feeds(client, str(tmp_path), manifest, prefix, threads=4)
    assert result.written == result.expected == manifest["total_payloads"]
    assert result.created_table and result.table == table
    assert count_items(client, table) == manifest["total_payloads"]
    assert "Checksums OK" in caplog.text and "Loaded" in caplog.text

    checked = loader.verify_load(client, prefix, manifest, str(tmp_path), result.written,
                                sample_members=40, seed=VERSION)
    assert checked == 40 + len(DIVISIONS) * 6

    # Byte-for-byte: the stored payload is the lake line, non-ASCII included.
    line = payload_line("m-000007", "brands", "card")
    assert payloads.get_payload(client, table, "m-000007", "brands", "card") == line
    assert payloads.get_payload(client, table, "__fallback__#all", "products", "full") == \
        payload_line("__fallback__#all", "products", "full")
    assert payloads.get_payload(client, table, "m-999999", "brands", "card") is None

    # A re-run deletes the version's table and loads a new one: same count, nothing left over.
    again = loader.load_feeds(client, str(tmp_path), manifest, prefix, threads=2)
    assert again.created_table and again.table == table and again.replaces is None
    assert again.written == manifest["total_payloads"]
    assert count_items(client, table) == manifest["total_payloads"]


def test_verify_refuses_wrong_count_and_changed_payload(tmp_path, client, prefix):
    manifest = write_feeds(tmp_path, members=30, files_per_data_set=1)
    table = tables.feeds_table(VERSION, prefix)
    result = loader.load_feeds(client, str(tmp_path), manifest, prefix, threads=2)

    with pytest.raises(errors.VerificationError, match="wrote 10 payloads but the manifest"):
        loader.verify_load(client, prefix, manifest, str(tmp_path), 10, sample_members=5, seed=1)

    client.put_item(TableName=table, Item={"member_id": {"S": "__fallback__#men"}, "feed": {"S": "brands#full"},
                                           "payload": {"S": "{}"}})
    with pytest.raises(errors.VerificationError, match="member __fallback__#men feed brands#full"):
        loader.verify_load(client, prefix, manifest, str(tmp_path), result.written, sample_members=5, seed=1)


def test_sample_is_deterministic(tmp_path):
    manifest = write_feeds(tmp_path, members=200, files_per_data_set=3)
    first = loader._sample_lines(str(tmp_path), manifest, 25, "seed")
    assert first == loader._sample_lines(str(tmp_path), manifest, 25, "seed")
    assert first != loader._sample_lines(str(tmp_path), manifest, 25, "other seed")
    assert len(first) == 25 + len(DIVISIONS) * 6


def test_oversized_item_is_rejected_before_writing(tmp_path, client, prefix):
    big = payload_line("m-000002", "products", "full", groups=4000)   # well over 400 KB
    assert len(big) > payloads.MAX_ITEM_BYTES
    rows = [payload_line(f"m-{i:06d}", "products", "full") for i in range(5)]
    rows[2] = big
    manifest = write_feeds(tmp_path, members=5, files_per_data_set=1, lines={("products", "full"): rows})
    with pytest.raises(errors.PayloadTooLargeError, match=r"member m-000002 feed products#full .* over DynamoDB"):
        loader.load_feeds(client, str(tmp_path), manifest, prefix, threads=2)


def test_checksum_mismatch_is_refused_before_anything_is_written(tmp_path, client, prefix):
    manifest = write_feeds(tmp_path, members=20, files_per_data_set=1)
    target = tmp_path / manifest["data_sets"]["brands_card"]["files"][0]["path"]
    data = target.read_bytes()
    target.write_bytes(data.replace(b"Gracia", b"Grazia", 1))          # same size, other bytes
    table = tables.feeds_table(VERSION, prefix)
    with pytest.raises(errors.ChecksumMismatchError, match=r"brands_card.*sha256"):
        loader.load_feeds(client, str(tmp_path), manifest, prefix, threads=2)
    assert tables.describe_table(client, table) is None                  # refused before creating


def test_manifest_is_read_and_checked(tmp_path):
    manifest = write_feeds(tmp_path, members=3, files_per_data_set=1)
    assert manifests.read_manifest(str(tmp_path)) == manifest
    with pytest.raises(errors.ManifestError, match="no manifest"):
        manifests.read_manifest(str(tmp_path / "missing"))
    broken = dict(manifest, total_payloads=manifest["total_payloads"] + 1)
    with pytest.raises(errors.ManifestError, match="total_payloads"):
        manifests.check_manifest(broken)


def test_duplicate_member_in_a_data_set_is_refused(tmp_path, client, prefix):
    rows = [payload_line("m-000001", "brands", "card"), payload_line("m-000001", "brands", "card")]
    manifest = write_feeds(tmp_path, members=2, files_per_data_set=1, lines={("brands", "card"): rows})
    with pytest.raises(errors.PayloadError, match="m-000001 feed brands#card appears twice"):
        loader.load_feeds(client, str(tmp_path), manifest, prefix, threads=2)


# --- retries (fault injection: dynalite never throttles) -------------------------------------------

class FlakyClient:
    """Like DynamoDB under load: the first call for every third batch is throttled, and each
    call writes only half of its items, returning the rest as UnprocessedItems. Deterministic
    (a batch is recognised by its last item, which stays in every retry), so a batch needs
    at most 1 + 5 calls, well within the loader's bounded attempts."""

    def __init__(self, real, always_unprocessed: bool = False):
        self._real = real
        self._lock = threading.Lock()
        self._attempts: dict[tuple[str, str], int] = {}
        self.unprocessed_returned = 0
        self.throttled = 0
        self.always_unprocessed = always_unprocessed

    def __getattr__(self, name):
        return getattr(self._real, name)

    def batch_write_item(self, RequestItems):
        (table, requests), = RequestItems.items()
        last = requests[-1]["PutRequest"]["Item"]
        batch = (last["member_id"]["S"], last["feed"]["S"])
        with self._lock:
            if batch not in self._attempts:
                self._attempts[batch] = 0
                throttle = len(self._attempts) % 3 == 0
            else:
                throttle = False
            self._attempts[batch] += 1
            self.throttled += throttle
        if throttle:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                         "Message": "injected"}}, "BatchWriteItem")
        keep = 0 if self.always_unprocessed else (len(requests) + 1) // 2
        if keep:
            self._real.batch_write_item(RequestItems={table: requests[:keep]})
        rest = requests[keep:]
        with self._lock:
            self.unprocessed_returned += len(rest)
        return {"UnprocessedItems": {table: rest} if rest else {}}


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(tables, "BACKOFF_BASE_SECONDS", 0.001)
    monkeypatch.setattr(tables, "BACKOFF_CAP_SECONDS", 0.005)


def test_unprocessed_items_and_throttling_are_retried(tmp_path, client, prefix, no_backoff):
    manifest = write_feeds(tmp_path, members=200)
    flaky = FlakyClient(client)
    table = tables.feeds_table(VERSION, prefix)
    result = loader.load_feeds(flaky, str(tmp_path), manifest, prefix, threads=4)
    assert flaky.unprocessed_returned > 0 and flaky.throttled > 0
    assert result.retried_batches > 0
    assert result.written == manifest["total_payloads"]
    assert count_items(client, table) == manifest["total_payloads"]
    loader.verify_load(client, prefix, manifest, str(tmp_path), result.written, sample_members=30, seed=7)


def test_retries_are_bounded(tmp_path, client, prefix, no_backoff):
    manifest = write_feeds(tmp_path, members=3, files_per_data_set=1)
    flaky = FlakyClient(client, always_unprocessed=True)
    with pytest.raises(errors.LoadError, match=r"still unwritten .* after 10 attempts.*re-run the load task"):
        loader.load_feeds(flaky, str(tmp_path), manifest, prefix, threads=2)


# --- the loaded mark: only a verified table can be flipped to -----------------------------------

def test_only_a_verified_load_is_marked_and_a_failed_reload_removes_the_mark(tmp_path, client, prefix, no_backoff):
    manifest = write_feeds(tmp_path, members=20, files_per_data_set=1)
    result = loader.load_feeds(client, str(tmp_path), manifest, prefix, threads=2)
    assert control.loaded_versions(client, prefix) == {}              # written, not yet verified
    with pytest.raises(errors.NotLoadedError, match="no loaded mark"):
        control.flip(client, prefix, VERSION, "m", expected_version=None)
    with pytest.raises(errors.VerificationError):
        loader.verify_load(client, prefix, manifest, str(tmp_path), result.written - 1, sample_members=5)
    assert control.loaded_versions(client, prefix) == {}              # a failed verification marks nothing

    loader.verify_load(client, prefix, manifest, str(tmp_path), result.written, sample_members=5)
    mark = control.loaded_versions(client, prefix)[VERSION]
    assert mark["written"] == manifest["total_payloads"] == 20 * 6 + 18
    assert mark["manifest"] == f"{tmp_path}/manifest.json" and mark["verified_at"].endswith("+00:00")

    # A reload of the same version that fails half-way (DynamoDB never takes the items) leaves
    # the table unmarked: the flip refuses it although every item of the earlier load is there.
    with pytest.raises(errors.LoadError):
        loader.load_feeds(FlakyClient(client, always_unprocessed=True), str(tmp_path), manifest, prefix, threads=2)
    assert VERSION not in control.loaded_versions(client, prefix)
    with pytest.raises(errors.NotLoadedError, match=f"refusing to flip to {VERSION}"):
        control.flip(client, prefix, VERSION, "m", expected_version=None)
    assert control.served_version(client, prefix) is None


class CapacityProbe:
    """Records the write capacity DynamoDB reports when the first batch is written, every
    UpdateTable, and can refuse capacity decreases as AWS does after too many in a day."""

    def __init__(self, real, refuse_decrease: bool = False):
        self._real = real
        self.capacity_while_writing: int | None = None
        self.updates: list[int] = []
        self.refuse_decrease = refuse_decrease

    def __getattr__(self, name):
        return getattr(self._real, name)

    def batch_write_item(self, RequestItems):
        if self.capacity_while_writing is None:
            (table,) = RequestItems
            throughput = self._real.describe_table(TableName=table)["Table"]["ProvisionedThroughput"]
            self.capacity_while_writing = throughput["WriteCapacityUnits"]
        return self._real.batch_write_item(RequestItems=RequestItems)

    def update_table(self, TableName, ProvisionedThroughput):
        units = ProvisionedThroughput["WriteCapacityUnits"]
        self.updates.append(units)
        current = self._real.describe_table(TableName=TableName)["Table"]["ProvisionedThroughput"]
        if self.refuse_decrease and units < current["WriteCapacityUnits"]:
            raise ClientError({"Error": {"Code": "LimitExceededException", "Message": "injected: too many decreases"}},
                              "UpdateTable")
        return self._real.update_table(TableName=TableName, ProvisionedThroughput=ProvisionedThroughput)


PROVISIONED = {"billing_mode: PAY_PER_REQUEST": "billing_mode: PROVISIONED",
               "load_write_capacity: 1000": "load_write_capacity: 400",
               "serving_write_capacity: 25 ": "serving_write_capacity: 2 ",
               "read_capacity: 100": "read_capacity: 30"}


def test_provisioned_tables_get_load_capacity_for_the_load_only(tmp_path, client, prefix, serving_config, caplog):
    serving_config(PROVISIONED)
    manifest = write_feeds(tmp_path, members=30, files_per_data_set=1)
    table = tables.feeds_table(VERSION, prefix)

    probe = CapacityProbe(client)
    with caplog.at_level(logging.INFO, logger=loader.logger.name):
        result = loader.load_feeds(probe, str(tmp_path), manifest, prefix, threads=2)
    assert result.written == manifest["total_payloads"]
    assert probe.capacity_while_writing == 400            # created at the load capacity
    assert probe.updates == [2]                           # one decrease, after the load
    throughput = tables.describe_table(client, table)["ProvisionedThroughput"]
    assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (30, 2)
    assert "provisioned, 30 read / 400 write units" in caplog.text

    # A re-run deletes the table and creates it again at load capacity, lowered after the load.
    again = CapacityProbe(client)
    loader.load_feeds(again, str(tmp_path), manifest, prefix, threads=2)
    assert again.capacity_while_writing == 400 and again.updates == [2]

    # The control table stays on-demand whatever the feeds tables use.
    control_table = tables.describe_table(client, tables.control_table(prefix))
    assert control_table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_a_refused_capacity_decrease_is_a_warning_not_a_failed_load(tmp_path, client, prefix, serving_config, caplog):
    serving_config(PROVISIONED)
    manifest = write_feeds(tmp_path, members=5, files_per_data_set=1)
    probe = CapacityProbe(client, refuse_decrease=True)
    with caplog.at_level(logging.INFO, logger=loader.logger.name):
        result = loader.load_feeds(probe, str(tmp_path), manifest, prefix, threads=2)
    assert result.written == manifest["total_payloads"]
    assert "Could not lower the write capacity" in caplog.text and "LimitExceededException" in caplog.text
    assert tables.describe_table(client, tables.feeds_table(VERSION, prefix))["ProvisionedThroughput"][
        "WriteCapacityUnits"] == 400


def test_provisioned_mode_needs_positive_capacities(serving_config):
    # The config's validation refuses them at load, before any table is created.
    serving_config({**PROVISIONED, "read_capacity: 100": "read_capacity: 0"})
    with pytest.raises(ConfigError, match=r"serving\.provisioned\.read_capacity: Input should be greater than or "
                                          r"equal to 1"):
        tables.feeds_billing()
    serving_config({"billing_mode: PAY_PER_REQUEST": "billing_mode: ON_DEMAND"})
    with pytest.raises(ConfigError, match=r"serving\.billing_mode: Input should be 'PAY_PER_REQUEST' or 'PROVISIONED'"):
        tables.feeds_billing()


# --- flip --------------------------------------------------------------------------------------

def make_table(client, prefix: str, version: str) -> str:
    """An (empty) feeds table with a loaded mark, as a verified load leaves it."""
    table = tables.feeds_table(version, prefix)
    tables.ensure_feeds_table(client, table)
    control.mark_loaded(client, prefix, version, 0, f"m-{version}")
    return table


def test_flip_is_conditional_and_the_loser_names_the_winner(client, prefix):
    assert control.served_version(client, prefix) is None
    for version in ("20261122t1100", "20261122t1500", "20261122t2000"):
        make_table(client, prefix, version)

    first = control.flip(client, prefix, "20261122t1100", "file:///lake/m1.json", expected_version=None)
    assert first["previous"] is None
    served = control.served_version(client, prefix)
    assert served["version"] == "20261122t1100" and served["manifest"] == "file:///lake/m1.json"
    assert served["previous"] is None and served["flipped_at"].endswith("+00:00")
    assert served["table"] == tables.feeds_table("20261122t1100", prefix)

    control.flip(client, prefix, "20261122t1500", "m2", expected_version="20261122t1100")
    served = control.served_version(client, prefix)
    assert (served["version"], served["previous"]) == ("20261122t1500", "20261122t1100")

    # A flip that still believes 11:00 is served loses, and is told what is served instead.
    with pytest.raises(errors.FlipConflictError, match="but 20261122t1500 is served now") as lost:
        control.flip(client, prefix, "20261122t2000", "m3", expected_version="20261122t1100")
    assert lost.value.served_version == "20261122t1500"
    with pytest.raises(errors.FlipConflictError, match="expected nothing"):
        control.flip(client, prefix, "20261122t2000", "m3", expected_version=None)
    assert control.served_version(client, prefix)["version"] == "20261122t1500"

    # A flip never serves an older version than the served one (a late run of an older slot) ...
    with pytest.raises(errors.OlderVersionError, match="older than 20261122t1500, which is served now"):
        control.flip(client, prefix, "20261122t1100", "m1", expected_version="20261122t1500")
    assert control.served_version(client, prefix)["version"] == "20261122t1500"
    # ... unless asked: a rollback is a flip back to a retained version.
    control.flip(client, prefix, "20261122t1100", "m1", expected_version="20261122t1500", allow_older=True)
    assert control.served_version(client, prefix)["version"] == "20261122t1100"


def test_concurrent_flips_exactly_one_wins(client, prefix):
    versions = [f"20261123t{hhmm}" for hhmm in ("1100", "1500", "2000")]
    for version in versions:
        make_table(client, prefix, version)
    tables.ensure_control_table(client, prefix)
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(len(versions))

    def attempt(version: str) -> None:
        barrier.wait()
        try:
            outcomes[version] = control.flip(client, prefix, version, "m", expected_version=None)
        except errors.FlipConflictError as error:
            outcomes[version] = error

    threads = [threading.Thread(target=attempt, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [v for v, outcome in outcomes.items() if isinstance(outcome, dict)]
    assert len(winners) == 1
    for version, outcome in outcomes.items():
        if version != winners[0]:
            assert outcome.served_version == winners[0]
            assert winners[0] in str(outcome)


def test_flip_refuses_a_missing_table(client, prefix):
    with pytest.raises(errors.TableNotFoundError, match="does not exist"):
        control.flip(client, prefix, "20261124t1100", "m", expected_version=None)
    assert control.served_version(client, prefix) is None


# --- the Airflow operators, executed directly --------------------------------------------------


def test_operators_load_then_flip(tmp_path, operators, client, prefix):
    feeds_dir = tmp_path / "feeds"
    manifest = write_feeds(feeds_dir, members=40, files_per_data_set=1)
    load = operators.LoadFeedsOperator(task_id="load", feeds_uri=str(feeds_dir), version=VERSION)
    assert load.execute({}) == {"table": f"{prefix}feeds-{VERSION}", "written": manifest["total_payloads"],
                                "version": VERSION}

    wrong = operators.LoadFeedsOperator(task_id="load2", feeds_uri=str(feeds_dir), version="20261122t1500")
    with pytest.raises(errors.ManifestError, match="is for version 20261122t1100"):
        wrong.execute({})

    manifest_uri = str(feeds_dir / "manifest.json")
    dry = operators.FlipServedVersionOperator(task_id="flip", version=VERSION, manifest_uri=manifest_uri,
                                              dry_run="True")
    assert dry.execute({})["flipped"] is False
    assert control.served_version(client, prefix) is None

    flip = operators.FlipServedVersionOperator(task_id="flip", version=VERSION, manifest_uri=manifest_uri,
                                               dry_run="False")
    assert flip.execute({})["flipped"] is True
    assert control.served_version(client, prefix)["version"] == VERSION
    assert flip.execute({})["flipped"] is False          # a retry after success changes nothing

    missing = operators.FlipServedVersionOperator(task_id="flip", version="20261122t1500",
                                                  manifest_uri="m")
    with pytest.raises(errors.TableNotFoundError):
        missing.execute({})

    unverified = "20261122t2000"
    tables.ensure_feeds_table(client, tables.feeds_table(unverified, prefix))   # a load that died half-way
    for dry_run in ("True", "False"):
        refused = operators.FlipServedVersionOperator(task_id="flip", version=unverified, manifest_uri="m",
                                                      dry_run=dry_run)
        with pytest.raises(errors.NotLoadedError, match="not marked loaded .* clear the load task"):
            refused.execute({})
    assert control.served_version(client, prefix)["version"] == VERSION


def test_operators_reach_dynamodb_through_their_airflow_connection(tmp_path, operators, client, prefix, monkeypatch,
                                                                   dynamodb_endpoint):
    from flashfeed.local.env import aws_connection

    with socket.socket() as probe:                               # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection(nowhere, "a", "b", "us-east-1"))
    monkeypatch.setenv("AIRFLOW_CONN_FLASHFEED_AWS", aws_connection(dynamodb_endpoint, "a", "b", "eu-west-1"))
    monkeypatch.delenv(tables.ENDPOINT_ENV)                       # the tasks do not read it
    from flashfeed_airflow.aws import dynamodb_client

    named = dynamodb_client("flashfeed_aws")
    assert (named.meta.endpoint_url, named.meta.region_name) == (dynamodb_endpoint, "eu-west-1")
    feeds_dir = tmp_path / "feeds"
    manifest = write_feeds(feeds_dir, members=10, files_per_data_set=1)
    load = operators.LoadFeedsOperator(task_id="load", feeds_uri=str(feeds_dir), version=VERSION,
                                       aws_conn_id="flashfeed_aws")
    assert load.execute({})["written"] == manifest["total_payloads"]
    with pytest.raises(EndpointConnectionError):                 # aws_default points nowhere here
        operators.LoadFeedsOperator(task_id="load", feeds_uri=str(feeds_dir), version=VERSION).execute({})
