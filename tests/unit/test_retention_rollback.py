"""Flip history, retention, rollback and the coverage check, against a real DynamoDB (dynalite)."""
from __future__ import annotations

import logging

import pytest
from test_serving_store import VERSION, make_table, write_feeds

from flashfeed.serving import control, errors, retention, tables

V = [f"2026112{day}t{hhmm}" for day in (1, 2) for hhmm in ("1100", "1500", "2000")]   # 6 versions, in order


def serve_in_order(client, prefix: str, versions: list[str]) -> None:
    """Create a table per version and flip to each in turn, as successive launches would."""
    current = control.served_version(client, prefix)
    expected = current["version"] if current else None
    for version in versions:
        if not tables.table_exists(client, tables.feeds_table(version, prefix)):
            make_table(client, prefix, version)
        control.flip(client, prefix, version, f"m-{version}", expected_version=expected)
        expected = version


def remaining(client, prefix: str) -> list[str]:
    """Versions with a table that is not being deleted (dynalite deletes asynchronously)."""
    alive = []
    for version in tables.feeds_versions(client, prefix):
        description = tables.describe_table(client, tables.feeds_table(version, prefix))
        if description and description.get("TableStatus") != "DELETING":
            alive.append(version)
    return alive


# --- history -----------------------------------------------------------------------------------

def test_flip_appends_to_history(client, prefix):
    serve_in_order(client, prefix, V[:3])
    served = control.served_version(client, prefix)
    assert served["history"] == V[:3]
    assert (served["version"], served["previous"]) == (V[2], V[1])
    assert served["manifest"] == f"m-{V[2]}"

    # A lost flip leaves the history untouched (same single conditional write).
    with pytest.raises(errors.FlipConflictError):
        control.flip(client, prefix, V[0], "x", expected_version=V[1])
    assert control.served_version(client, prefix)["history"] == V[:3]


def test_feeds_versions_ignores_other_tables(client, prefix):
    make_table(client, prefix, V[0])
    tables.ensure_control_table(client, prefix)
    tables.ensure_feeds_table(client, f"{prefix}feeds-not-a-version")
    assert tables.feeds_versions(client, prefix) == [V[0]]


# --- retention ---------------------------------------------------------------------------------

def test_retention_keeps_last_n_served_and_never_newer_unflipped(client, prefix, caplog):
    serve_in_order(client, prefix, V[:5])            # served V4, previous V3
    make_table(client, prefix, V[5])                  # a dry run's table, newer, never flipped
    with caplog.at_level(logging.INFO, logger=retention.logger.name):
        deleted = retention.apply_retention(client, prefix, keep=3)
    assert deleted == [tables.feeds_table(v, prefix) for v in V[:2]]
    assert remaining(client, prefix) == V[2:]
    assert "not-yet-flipped " + V[5] in caplog.text
    # Idempotent: nothing more to delete.
    assert retention.apply_retention(client, prefix, keep=3) == []


def test_retention_never_deletes_served_or_previous_even_with_keep_1(client, prefix):
    serve_in_order(client, prefix, V[:4])
    deleted = retention.apply_retention(client, prefix, keep=1)
    assert deleted == [tables.feeds_table(v, prefix) for v in V[:2]]
    assert remaining(client, prefix) == V[2:4]
    with pytest.raises(ValueError, match="at least 1"):
        retention.apply_retention(client, prefix, keep=0)


def test_retention_after_rollback_counts_distinct_served_versions(client, prefix):
    serve_in_order(client, prefix, V[:5])
    retention.rollback(client, prefix)                     # V4 -> V3; history ... V3 V4 V3
    assert control.served_version(client, prefix)["history"][-1] == V[3]
    deleted = retention.apply_retention(client, prefix, keep=3)   # distinct, newest first: V3, V4, V2
    assert deleted == [tables.feeds_table(v, prefix) for v in V[:2]]
    assert remaining(client, prefix) == V[2:5]


def test_retention_without_history_keeps_served_previous_and_newer(client, prefix):
    for version in V[:4]:
        make_table(client, prefix, version)
    tables.ensure_control_table(client, prefix)
    # A control item written before history was kept.
    client.put_item(TableName=tables.control_table(prefix), Item={
        "pk": {"S": "served"}, "version": {"S": V[2]}, "previous": {"S": V[1]}, "manifest": {"S": "m"}})
    deleted = retention.apply_retention(client, prefix, keep=3)
    assert deleted == [tables.feeds_table(V[0], prefix)]
    assert remaining(client, prefix) == V[1:4]


def test_retention_with_nothing_served_deletes_nothing(client, prefix):
    make_table(client, prefix, V[0])
    assert retention.apply_retention(client, prefix, keep=1) == []
    assert remaining(client, prefix) == [V[0]]


def test_retention_stops_when_a_flip_happens_meanwhile(client, prefix, monkeypatch):
    serve_in_order(client, prefix, V[:5])
    real = control.served_version
    calls = {"n": 0}

    def flipping_served_version(c, p=None):
        calls["n"] += 1
        if calls["n"] == 3:                            # after the first delete: a launch flips
            make_table(client, prefix, V[5])
            control.flip(client, prefix, V[5], "m", expected_version=V[4])
        return real(c, p)

    monkeypatch.setattr(retention, "served_version", flipping_served_version)
    deleted = retention.apply_retention(client, prefix, keep=3)
    assert deleted == [tables.feeds_table(V[0], prefix)]   # V1 is left for the next run


# --- rollback ----------------------------------------------------------------------------------

def test_rollback_to_previous_then_to_an_explicit_version(client, prefix):
    serve_in_order(client, prefix, V[:3])
    result = retention.rollback(client, prefix)
    assert result["flipped"] and result["version"] == V[1]
    served = control.served_version(client, prefix)
    assert (served["version"], served["previous"]) == (V[1], V[2])
    assert served["manifest"] == f"m-{V[1]}"            # from the target's loaded mark

    result = retention.rollback(client, prefix, V[0], manifest_uri="explicit")
    served = control.served_version(client, prefix)
    assert (served["version"], served["previous"], served["manifest"]) == (V[0], V[1], "explicit")
    assert served["history"] == [V[0], V[1], V[2], V[1], V[0]]

    # Already served: nothing changes.
    assert retention.rollback(client, prefix, V[0])["flipped"] is False
    assert control.served_version(client, prefix)["history"][-1] == V[0]


def test_rollback_refuses_a_version_whose_reload_did_not_finish(client, prefix):
    serve_in_order(client, prefix, V[:3])
    control.clear_loaded(client, prefix, V[0])              # as a reload of V0 does when it starts
    with pytest.raises(errors.NotLoadedError, match=f"roll back to {V[0]}: .* Loaded versions: {V[1]}, {V[2]}"):
        retention.rollback(client, prefix, V[0])
    assert control.served_version(client, prefix)["version"] == V[2]


def test_rollback_refuses_a_missing_table_and_names_retained_versions(client, prefix):
    serve_in_order(client, prefix, V[:4])
    retention.apply_retention(client, prefix, keep=2)       # deletes V0, V1
    assert sorted(control.loaded_versions(client, prefix)) == V[2:4]   # with their loaded marks
    with pytest.raises(errors.TableNotFoundError) as refused:
        retention.rollback(client, prefix, V[0])
    message = str(refused.value)
    assert tables.feeds_table(V[0], prefix) in message
    assert f"{V[2]}, {V[3]}" in message
    assert control.served_version(client, prefix)["version"] == V[3]


def test_rollback_refusals(client, prefix):
    with pytest.raises(errors.RollbackError, match="nothing is served"):
        retention.rollback(client, prefix)
    serve_in_order(client, prefix, V[:1])
    with pytest.raises(errors.RollbackError, match="no previous version"):
        retention.rollback(client, prefix)
    serve_in_order(client, prefix, V[1:2])
    with pytest.raises(ValueError, match="YYYYMMDDtHHMM"):
        retention.rollback(client, prefix, "yesterday")
    # Planned against V0 being served, but V1 is: conditional, nothing changes.
    with pytest.raises(errors.FlipConflictError, match=f"expected {V[0]} .* but {V[1]} is served"):
        retention.rollback(client, prefix, V[0], expected_version=V[0])
    assert control.served_version(client, prefix)["version"] == V[1]


# --- coverage ----------------------------------------------------------------------------------

def test_check_coverage():
    ok = control.check_coverage({"members": 80}, {"members": 100}, 0.8)
    assert ok.ok and ok.ratio == 0.8
    low = control.check_coverage({"members": 79, "version": "b"}, {"members": 100}, 0.8)
    assert not low.ok and "coverage 79.0% below 80%" in low.describe()
    assert control.check_coverage({"members": 5}, {"members": 0}, 0.8).ok
    with pytest.raises(errors.ManifestError, match="no member count"):
        control.check_coverage({"version": "b"}, {"members": 1}, 0.8)
    assert control.check_coverage({"members": 1}, {"members": 1}).min_ratio == 0.8     # config default


# --- the Airflow operators, executed directly --------------------------------------------------


def task_log(capsys, caplog) -> str:
    """Operators log through Airflow's structlog (stdout) outside a task runner; plain logging
    otherwise: look at both."""
    return capsys.readouterr().out + caplog.text


def test_flip_operator_refuses_low_coverage_unless_allowed(tmp_path, operators, client, prefix, caplog, capsys):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    write_feeds(old_dir, members=10, files_per_data_set=1)
    write_feeds(new_dir, members=7, version="20261122t1500", files_per_data_set=1)
    make_table(client, prefix, VERSION)
    make_table(client, prefix, "20261122t1500")
    control.flip(client, prefix, VERSION, str(old_dir / "manifest.json"), expected_version=None)

    def flip_op(**kwargs):
        return operators.FlipServedVersionOperator(
            task_id="flip", version="20261122t1500", manifest_uri=str(new_dir / "manifest.json"), **kwargs)

    with pytest.raises(errors.CoverageError, match=r"coverage 70.0% below 80% \(7 members vs 10 served\)"):
        flip_op(allow_low_coverage="False").execute({})
    assert control.served_version(client, prefix)["version"] == VERSION

    task_log(capsys, caplog)
    with caplog.at_level(logging.WARNING):
        dry = flip_op(dry_run="True").execute({})         # a dry run reports, does not fail
    assert dry["flipped"] is False and "DRY RUN: a real run would fail" in task_log(capsys, caplog)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert flip_op(allow_low_coverage="True").execute({})["flipped"] is True
    text = task_log(capsys, caplog)
    assert "coverage 70.0% below 80%" in text
    assert "flipped because allow_low_coverage=true" in text
    assert control.served_version(client, prefix)["version"] == "20261122t1500"


def test_flip_operator_passes_sufficient_coverage_and_tolerates_missing_served_manifest(
        tmp_path, operators, client, prefix, caplog, capsys):
    new_dir = tmp_path / "new"
    write_feeds(new_dir, members=9, version="20261122t1500", files_per_data_set=1)
    make_table(client, prefix, VERSION)
    make_table(client, prefix, "20261122t1500")
    control.flip(client, prefix, VERSION, str(tmp_path / "gone" / "manifest.json"), expected_version=None)
    with caplog.at_level(logging.WARNING):
        op = operators.FlipServedVersionOperator(task_id="flip", version="20261122t1500",
                                                 manifest_uri=str(new_dir / "manifest.json"))
        assert op.execute({})["flipped"] is True
    assert "Coverage check skipped" in task_log(capsys, caplog)


def test_rollback_and_retention_operators(operators, client, prefix):
    serve_in_order(client, prefix, V[:5])
    plan = operators.plan_rollback("")
    assert plan == {"served": V[4], "target": V[3], "table": tables.feeds_table(V[3], prefix)}

    op = operators.RollbackServedVersionOperator(task_id="rb", target_version=plan["target"],
                                                 expected_version=plan["served"])
    assert op.execute({})["flipped"] is True
    assert control.served_version(client, prefix)["version"] == V[3]
    assert op.execute({})["flipped"] is False            # cleared after success: no-op

    deleted = operators.ApplyRetentionOperator(task_id="ret").execute({})   # keep 3 from config
    assert deleted == [tables.feeds_table(v, prefix) for v in V[:2]]

    with pytest.raises(errors.TableNotFoundError, match=f"{V[2]}, {V[3]}, {V[4]}"):
        operators.plan_rollback(V[0])

    from airflow.sdk.exceptions import AirflowSkipException
    with pytest.raises(AirflowSkipException):
        operators.ApplyRetentionOperator(task_id="ret", dry_run="True").execute({})


def test_a_slot_older_than_the_served_version_is_neither_loaded_nor_flipped_unless_allowed(
        tmp_path, operators, client, prefix):
    """A backfill rebuilds old slots; it must not serve one over a newer served version."""
    from airflow.sdk.exceptions import AirflowSkipException

    older = "20261121t2000"
    feeds = tmp_path / "older"
    manifest = write_feeds(feeds, members=5, version=older, files_per_data_set=1)
    serve_in_order(client, prefix, [VERSION])                       # 20261122t1100 is served

    def load(**kwargs):
        return operators.LoadFeedsOperator(task_id="load", feeds_uri=str(feeds), version=older, **kwargs)

    def flip(**kwargs):
        return operators.FlipServedVersionOperator(task_id="flip", version=older,
                                                   manifest_uri=str(feeds / "manifest.json"), **kwargs)

    with pytest.raises(AirflowSkipException, match=rf"not loading {older}: it is older than the served "
                                                   rf"version {VERSION}.*allow_older_version=true"):
        load(allow_older_version="False").execute({})
    assert not tables.table_exists(client, tables.feeds_table(older, prefix))   # nothing written
    make_table(client, prefix, older)       # even when loaded (e.g. by an allowed run) ...
    with pytest.raises(AirflowSkipException, match=f"not flipping to {older}"):
        flip().execute({})                  # ... the flip refuses on its own
    assert control.served_version(client, prefix)["version"] == VERSION

    assert load(allow_older_version="True").execute({})["written"] == manifest["total_payloads"]
    assert flip(allow_older_version="True").execute({})["flipped"] is True
    assert control.served_version(client, prefix)["version"] == older
