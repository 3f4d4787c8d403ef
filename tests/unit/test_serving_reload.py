"""Reloading a slot against a real DynamoDB (dynalite): the table holds exactly the new export
(members who left the export leave the table), verification counts the table's own items, and
the served version is reloaded only when asked, into a new table switched to in one write."""
from __future__ import annotations

import threading

import pytest
from test_retention_rollback import V, serve_in_order
from test_serving_store import make_table, payload_line, write_feeds

from flashfeed.serving import control, errors, loader, retention, tables

OLD_MEMBERS, NEW_MEMBERS = 40, 25          # members m-000025 .. m-000039 left the export
LEFT = [f"m-{i:06d}" for i in range(NEW_MEMBERS, OLD_MEMBERS)]
STAYED = "m-000005"
VERSION = V[1]


def exports(tmp_path, version: str = VERSION) -> tuple[tuple[str, dict], tuple[str, dict]]:
    """(folder, manifest) of a first export and of a re-run's export without the members in
    LEFT, whose products cards differ (3 groups instead of 2), so a reader can tell them apart."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old = write_feeds(old_dir, members=OLD_MEMBERS, version=version, files_per_data_set=1)
    cards = [payload_line(f"m-{i:06d}", "products", "card", version, groups=3) for i in range(NEW_MEMBERS)]
    new = write_feeds(new_dir, members=NEW_MEMBERS, version=version, files_per_data_set=1,
                      lines={("products", "card"): cards})
    return (str(old_dir), old), (str(new_dir), new)


def load(client, prefix, feeds_dir: str, manifest: dict, **kwargs) -> loader.LoadResult:
    dry_run = kwargs.pop("dry_run", False)
    result = loader.load_feeds(client, feeds_dir, manifest, prefix, threads=2, **kwargs)
    loader.verify_load(client, prefix, manifest, feeds_dir, result.written, sample_members=5, seed=1,
                       table=result.table, replaces=result.replaces, dry_run=dry_run)
    return result


def members_in(client, table: str) -> set[str]:
    found = set()
    for page in client.get_paginator("scan").paginate(TableName=table, ProjectionExpression="member_id",
                                                      ConsistentRead=True):
        found.update(item["member_id"]["S"] for item in page["Items"])
    return found


# --- a slot that is not served -----------------------------------------------------------------

def test_reloading_a_slot_after_members_left_keeps_none_of_their_items(tmp_path, client, prefix, caplog):
    (old_dir, old), (new_dir, new) = exports(tmp_path)
    serve_in_order(client, prefix, V[:1])                # another version is served; VERSION is a dry run's
    first = load(client, prefix, old_dir, old)
    table = tables.feeds_table(VERSION, prefix)
    assert first.table == table and set(LEFT) <= members_in(client, table)

    with caplog.at_level("INFO", logger=loader.logger.name):
        again = load(client, prefix, new_dir, new)       # the re-run, after the export lost LEFT
    assert again.table == table and again.created_table and again.replaces is None
    assert "Deleting 1 existing table(s) of " + VERSION in caplog.text
    assert f"Counted {new['total_payloads']:,} items in {table}" in caplog.text
    assert loader.count_items(client, table) == new["total_payloads"]
    assert not set(LEFT) & members_in(client, table)     # none of their items survive
    mark = control.loaded_versions(client, prefix)[VERSION]
    assert (mark["table"], mark["written"]) == (table, new["total_payloads"])


def test_verification_counts_the_tables_own_items(tmp_path, client, prefix):
    """What an overwrite in place left behind (an item of an earlier export) fails verification,
    although the loader's own count is right; so does a missing item."""
    (old_dir, old), _ = exports(tmp_path)
    result = loader.load_feeds(client, old_dir, old, prefix, threads=2)
    table = result.table
    stale = {"member_id": {"S": "m-999999"}, "feed": {"S": "brands#card"}, "payload": {"S": "{}"}}
    client.put_item(TableName=table, Item=stale)
    assert loader.count_items(client, table, segments=3) == loader.count_items(client, table) == \
        old["total_payloads"] + 1                                     # parallel segments add up
    with pytest.raises(errors.VerificationError, match=rf"holds {old['total_payloads'] + 1:,} items but the manifest "
                                                       rf"of {VERSION} lists {old['total_payloads']:,} \(items of "
                                                       "another export in it\\)"):
        loader.verify_load(client, prefix, old, old_dir, result.written, sample_members=5)
    client.delete_item(TableName=table, Key={"member_id": stale["member_id"], "feed": stale["feed"]})
    client.delete_item(TableName=table, Key={"member_id": {"S": "m-000003"}, "feed": {"S": "brands#full"}})
    with pytest.raises(errors.VerificationError, match=r"\(items missing\)"):
        loader.verify_load(client, prefix, old, old_dir, result.written, sample_members=5)
    assert VERSION not in control.loaded_versions(client, prefix)


# --- the served slot ---------------------------------------------------------------------------

class Reader:
    """Reads as the API does, in a loop: the served pointer, then two items of the served table
    (a member who stays, one who left). Each answer is `old` (2 groups, the leaver present),
    `new` (3 groups, the leaver absent), or mixed."""

    def __init__(self, client, prefix):
        self.client, self.prefix, self.seen, self.tables = client, prefix, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _item(self, table: str, member: str):
        return self.client.get_item(TableName=table, Key={"member_id": {"S": member}, "feed": {"S": "products#card"}},
                                    ConsistentRead=True).get("Item")

    def read(self) -> str:
        table = control.served_version(self.client, self.prefix)["table"]
        stayed, left = self._item(table, STAYED), self._item(table, LEFT[0])
        groups = stayed["payload"]["S"].count('"key"')
        self.tables.add(table)
        return {(2, True): "old", (3, False): "new"}.get((groups, left is not None), f"mixed in {table}")

    def _run(self):
        while not self._stop.is_set():
            self.seen.append(self.read())

    def __enter__(self):
        self.seen.append(self.read())
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seen.append(self.read())


def test_reloading_the_served_version_is_refused_unless_asked_then_never_mixed(tmp_path, client, prefix):
    (old_dir, old), (new_dir, new) = exports(tmp_path)
    load(client, prefix, old_dir, old)
    control.flip(client, prefix, VERSION, f"{old_dir}/manifest.json", expected_version=None)
    live = tables.feeds_table(VERSION, prefix)

    with pytest.raises(errors.ServedVersionReloadError, match=rf"refusing to reload {VERSION}: it is served right "
                                                              rf"now \(from {live}\).*reload_served_version=true"):
        loader.load_feeds(client, new_dir, new, prefix, threads=2)
    assert tables.feeds_tables(client, prefix)[VERSION] == [live]             # nothing created ...
    assert loader.count_items(client, live) == old["total_payloads"]         # ... or rewritten
    assert control.loaded_versions(client, prefix)[VERSION]["table"] == live

    with Reader(client, prefix) as reader:
        result = load(client, prefix, new_dir, new, reload_served=True)
    reloaded = tables.feeds_table(VERSION, prefix, reload=1)
    assert (result.table, result.replaces) == (reloaded, live)
    assert reader.seen[0] == "old" and reader.seen[-1] == "new" and reader.seen.count("old") > 1   # read meanwhile
    assert set(reader.seen) == {"old", "new"}, sorted(set(reader.seen))      # never a mix
    first_new = reader.seen.index("new")
    assert set(reader.seen[first_new:]) == {"new"}                            # and no way back
    served = control.served_version(client, prefix)
    assert (served["version"], served["table"], served["manifest"]) == (VERSION, reloaded, f"{new_dir}/manifest.json")
    assert control.loaded_versions(client, prefix)[VERSION]["table"] == reloaded
    assert not set(LEFT) & members_in(client, reloaded)
    assert loader.count_items(client, reloaded) == new["total_payloads"]
    assert tables.table_exists(client, live)          # the replaced table stays until retention takes the version

    # Another reload takes the next number; a flip to the served version stays a no-op.
    assert load(client, prefix, new_dir, new, reload_served=True).table == tables.feeds_table(VERSION, prefix, 2)
    assert control.served_version(client, prefix)["table"] == tables.feeds_table(VERSION, prefix, 2)


def test_a_reload_switch_loses_to_a_flip_that_happened_meanwhile(tmp_path, client, prefix):
    (old_dir, old), (new_dir, new) = exports(tmp_path)
    load(client, prefix, old_dir, old)
    control.flip(client, prefix, VERSION, "m", expected_version=None)
    result = loader.load_feeds(client, new_dir, new, prefix, threads=2, reload_served=True)
    make_table(client, prefix, V[2])
    control.flip(client, prefix, V[2], "m", expected_version=VERSION)            # a launch, during the reload
    with pytest.raises(errors.FlipConflictError, match=f"reload of {VERSION} not switched: .* now {V[2]} is served"):
        loader.verify_load(client, prefix, new, new_dir, result.written, sample_members=5, table=result.table,
                           replaces=result.replaces)
    served = control.served_version(client, prefix)
    assert (served["version"], served["table"]) == (V[2], tables.feeds_table(V[2], prefix))
    assert control.loaded_versions(client, prefix)[VERSION]["table"] == tables.feeds_table(VERSION, prefix)


def test_retention_and_rollback_follow_a_reloaded_version(client, prefix):
    """V0 reloaded while served: rolled back to later, it serves its reloaded table; retention
    keeps both of its tables while it is retained and deletes both with it."""
    serve_in_order(client, prefix, V[:1])
    first, reloaded = tables.feeds_table(V[0], prefix), tables.feeds_table(V[0], prefix, reload=1)
    tables.ensure_feeds_table(client, reloaded)
    control.switch_served_table(client, prefix, V[0], first, reloaded, 0, f"m-{V[0]}")
    serve_in_order(client, prefix, V[1:2])                                       # V1 served, V0 previous
    assert retention.apply_retention(client, prefix, keep=1) == []               # both V0 tables kept
    serve_in_order(client, prefix, V[2:4])                                       # V3 served, V2 previous
    assert tables.feeds_tables(client, prefix)[V[0]] == [first, reloaded]
    rolled = retention.rollback(client, prefix, V[0])
    assert rolled["table"] == reloaded == control.served_version(client, prefix)["table"]
    serve_in_order(client, prefix, V[4:6])                                       # V5 served, V4 previous
    deleted = retention.apply_retention(client, prefix, keep=1)
    assert deleted == [first, reloaded] + [tables.feeds_table(v, prefix) for v in V[1:4]]


def test_load_operator_reloads_the_served_version_only_when_asked(tmp_path, operators, client, prefix):
    (old_dir, old), (new_dir, new) = exports(tmp_path)
    load(client, prefix, old_dir, old)
    control.flip(client, prefix, VERSION, f"{old_dir}/manifest.json", expected_version=None)
    live, reloaded = tables.feeds_table(VERSION, prefix), tables.feeds_table(VERSION, prefix, reload=1)

    def op(**kwargs):
        return operators.LoadFeedsOperator(task_id="load", feeds_uri=new_dir, version=VERSION, **kwargs)

    with pytest.raises(errors.ServedVersionReloadError, match="re-run with reload_served_version=true"):
        op().execute({})
    dry = op(reload_served_version="True", dry_run="True").execute({})          # verified, not switched
    assert dry["table"] == reloaded and control.served_version(client, prefix)["table"] == live
    done = op(reload_served_version="True").execute({})
    assert done == {"table": tables.feeds_table(VERSION, prefix, 2), "written": new["total_payloads"],
                    "version": VERSION}
    assert control.served_version(client, prefix)["table"] == done["table"]
    flip = operators.FlipServedVersionOperator(task_id="flip", version=VERSION, manifest_uri=f"{new_dir}/manifest.json")
    assert flip.execute({})["flipped"] is False                                   # already served: nothing to do


class ThrottledScans:
    """The real client, whose first `throttled` Scan calls fail as a provisioned table's do."""

    def __init__(self, client, throttled: int):
        self._client, self.throttled, self.scans = client, throttled, 0

    def scan(self, **kwargs):
        self.scans += 1
        if self.scans <= self.throttled:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                              "Scan")
        return self._client.scan(**kwargs)


def test_the_count_asks_a_throttled_page_again_and_gives_up_with_a_clear_error(tmp_path, client, prefix,
                                                                                monkeypatch):
    monkeypatch.setattr(tables, "BACKOFF_BASE_SECONDS", 0.001)
    (old_dir, old), _ = exports(tmp_path)
    serve_in_order(client, prefix, V[:1])
    load(client, prefix, old_dir, old)
    table = tables.feeds_table(VERSION, prefix)
    throttled = ThrottledScans(client, throttled=3)
    assert loader.count_items(throttled, table) == old["total_payloads"]        # one segment: 3 retries, then ok
    assert throttled.scans == 4
    attempts = tables.MAX_BATCH_ATTEMPTS
    with pytest.raises(errors.VerificationError, match=f"throttled {attempts} times in a row.*read_capacity"):
        loader.count_items(ThrottledScans(client, throttled=attempts), table)
