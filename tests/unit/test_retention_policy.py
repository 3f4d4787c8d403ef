"""The pure retention and rollback policies on plain data: no DynamoDB, figures worked out by hand.

The applied functions (apply_retention, rollback) against dynalite: test_retention_rollback.py.
"""
from __future__ import annotations

import pytest

from flashfeed.serving import errors
from flashfeed.serving.retention import (
    check_rollback_target,
    last_served,
    pointer_unchanged,
    retention_plan,
    rollback_target_version,
)

# Six launches in time order: V0 is the oldest.
V0, V1, V2, V3, V4, V5 = (f"2026112{day}t{hhmm}" for day in (1, 2) for hhmm in ("1100", "1500", "2000"))
ALL = [V0, V1, V2, V3, V4, V5]


# --- last_served -------------------------------------------------------------------------------

def test_last_served_counts_a_version_served_twice_once_at_its_latest_flip():
    history = ["a", "b", "a", "c", "b"]            # newest first: b, c, a (b and a served twice)
    assert last_served(history, 1) == ["b"]
    assert last_served(history, 2) == ["b", "c"]
    assert last_served(history, 3) == ["b", "c", "a"]
    assert last_served(history, 10) == ["b", "c", "a"]   # fewer distinct versions than keep
    assert last_served([], 3) == []


# --- retention_plan ----------------------------------------------------------------------------

def test_keep_three_deletes_older_tables_and_keeps_a_newer_unflipped_one():
    # Served V0..V4 in turn (V4 served, V3 previous); V5 loaded by a dry run, never flipped.
    plan = retention_plan(3, V4, V3, [V0, V1, V2, V3, V4], ALL)
    assert plan.protected == {V4, V3, V2}          # the last 3 served
    assert plan.delete == [V0, V1]
    assert plan.not_yet_flipped == [V5]
    assert not plan.history_missing


def test_keep_one_still_keeps_the_previous_version():
    plan = retention_plan(1, V3, V2, [V0, V1, V2, V3], ALL[:4])
    assert plan.protected == {V3, V2}              # last served = V3; V2 as the previous one
    assert plan.delete == [V0, V1]
    assert plan.not_yet_flipped == []


def test_after_a_rollback_distinct_served_versions_count():
    # V0..V4 served, then rolled back to V3: history ... V3 V4 V3, previous V4.
    plan = retention_plan(3, V3, V4, [V0, V1, V2, V3, V4, V3], ALL[:5])
    assert plan.protected == {V3, V4, V2}          # distinct, newest first: V3, V4, V2
    assert plan.delete == [V0, V1]
    assert plan.not_yet_flipped == []              # V4 is newer than V3 but protected, not "unflipped"


def test_without_history_only_served_previous_and_newer_are_kept():
    # A control item written before history was kept: served V2, previous V1.
    plan = retention_plan(3, V2, V1, [], ALL[:4])
    assert plan.history_missing
    assert plan.protected == {V2, V1}
    assert plan.delete == [V0]
    assert plan.not_yet_flipped == [V3]


def test_keep_more_than_was_ever_served_deletes_nothing():
    plan = retention_plan(10, V1, V0, [V0, V1], ALL[:3])
    assert plan.delete == []
    assert plan.not_yet_flipped == [V2]


def test_versions_without_a_table_are_not_planned():
    # V0 and V1 were served but their tables are gone already: nothing to delete for them.
    plan = retention_plan(2, V4, V3, [V0, V1, V2, V3, V4], [V2, V3, V4])
    assert plan.delete == [V2]                     # last 2 served = V4, V3


@pytest.mark.parametrize("keep", [0, -1])
def test_keep_below_one_is_refused(keep):
    with pytest.raises(ValueError, match="at least 1"):
        retention_plan(keep, V1, V0, [V0, V1], [V0, V1])


def test_a_plan_stands_only_while_the_pointer_is_unchanged():
    plan = retention_plan(3, V4, V3, [V0, V1, V2, V3, V4], ALL)
    assert pointer_unchanged(plan, {"version": V4, "previous": V3})
    assert not pointer_unchanged(plan, {"version": V5, "previous": V4})     # a launch flipped meanwhile
    assert not pointer_unchanged(plan, {"version": V4, "previous": V5})     # flipped away and back
    assert not pointer_unchanged(plan, None)


# --- rollback_target_version -------------------------------------------------------------------

SERVED = {"version": V2, "previous": V1}


def test_rollback_target_is_the_previous_version_unless_one_is_given():
    assert rollback_target_version(SERVED, None, ALL[:3]) == V1
    assert rollback_target_version(SERVED, "", ALL[:3]) == V1
    assert rollback_target_version(SERVED, f"  {V0} ", ALL[:3]) == V0
    assert rollback_target_version(SERVED, V2, ALL[:3]) == V2       # served already: the caller does nothing


def test_rollback_refusals_name_what_can_be_served():
    with pytest.raises(errors.RollbackError, match="nothing is served"):
        rollback_target_version(None, V0, [V0])
    with pytest.raises(errors.RollbackError, match=rf"no previous version.*retained versions: {V0}, {V2}\)"):
        rollback_target_version({"version": V2, "previous": None}, None, [V0, V2])
    with pytest.raises(errors.RollbackError, match=r"retained versions: none"):
        rollback_target_version({"version": V2, "previous": None}, None, [])
    with pytest.raises(ValueError, match=rf"'yesterday' is not YYYYMMDDtHHMM.*\({V1}, {V2}\)"):
        rollback_target_version(SERVED, "yesterday", [V1, V2])


# --- check_rollback_target ---------------------------------------------------------------------

def test_a_target_needs_an_active_table_and_a_loaded_mark():
    check_rollback_target(V1, "t-feeds-" + V1, True, {V1: {}, V2: {}}, [V1, V2])     # servable: no error
    gone = rf"t-feeds-{V0} does not exist.*still have a table: {V1}, {V2}"
    with pytest.raises(errors.TableNotFoundError, match=gone):
        check_rollback_target(V0, "t-feeds-" + V0, False, {V1: {}, V2: {}}, [V1, V2])
    with pytest.raises(errors.NotLoadedError, match=rf"roll back to {V1}: .* Loaded versions: {V0}, {V2}$"):
        check_rollback_target(V1, "t-feeds-" + V1, True, {V2: {}, V0: {}}, [V0, V1, V2])
    with pytest.raises(errors.NotLoadedError, match="Loaded versions: none"):
        check_rollback_target(V1, "t-feeds-" + V1, True, {}, [V1])


# --- table names of reloads, the lease's backoff (pure) ----------------------------------------

def test_feeds_table_names_of_reloads_and_their_inverse():
    from flashfeed.serving.tables import feeds_table, next_reload, parse_feeds_table

    assert feeds_table(V0, "p-") == f"p-feeds-{V0}"                 # DESIGN.md's name: the normal one
    assert feeds_table(V0, "p-", reload=2) == f"p-feeds-{V0}-r2"
    assert parse_feeds_table(f"p-feeds-{V0}", "p-") == (V0, 0)
    assert parse_feeds_table(f"p-feeds-{V0}-r12", "p-") == (V0, 12)
    for other in (f"p-feeds-{V0}-r0", f"p-feeds-{V0}-r", f"p-feeds-{V0}-x1", "p-feeds-not-a-version",
                  f"q-feeds-{V0}", "p-control"):
        assert parse_feeds_table(other, "p-") is None, other
    # The next reload is one more than the highest present, gaps included.
    assert next_reload([], "p-") == 1
    assert next_reload([f"p-feeds-{V0}"], "p-") == 1
    assert next_reload([f"p-feeds-{V0}", f"p-feeds-{V0}-r1", f"p-feeds-{V0}-r3"], "p-") == 4


def test_lease_retry_delays_double_up_to_the_cap_and_add_up_to_the_wait():
    from flashfeed.serving.control import lease_retry_delays

    # 0.1 + 0.2 + 0.4 + 0.8 = 1.5; the cap (0.8) would come next, only 0.5 is left.
    assert lease_retry_delays(2.0, base=0.1, cap=0.8) == pytest.approx([0.1, 0.2, 0.4, 0.8, 0.5])
    assert lease_retry_delays(0.25, base=0.1, cap=0.8) == pytest.approx([0.1, 0.15])
    assert lease_retry_delays(0) == []
    # The defaults (0.05 doubling, cap 2 s) over the config's 120 s: 0.05 .. 1.6 add up to 3.15,
    # then 58 pauses of 2 s (116) and a last one of 0.85.
    delays = lease_retry_delays(120)
    assert len(delays) == 6 + 58 + 1 and max(delays) == 2.0
    assert delays[-1] == pytest.approx(0.85) and sum(delays) == pytest.approx(120)
