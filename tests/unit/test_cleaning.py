"""Input cleaning: every rejected event keeps its reason; nothing is dropped silently."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from spark_jobs.transforms.cleaning import TooManyRejects, check_reject_share, clean_events, reject_summary

TYPES = ["pdp_view", "add_to_cart", "still_want_it", "purchase"]
CUTOFF = datetime(2026, 11, 22, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)
T2 = datetime(2026, 11, 21, 11, 0, tzinfo=timezone.utc)
FUTURE = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)

ROWS = [
    ("e-1", "m-1", "s-1", "pdp_view", T1, 20.0),       # kept
    ("e-1", "m-1", "s-1", "pdp_view", T1, 20.0),       # duplicate event_id
    ("e-2", "m-1", "s-1", "purchase", T2, 19.0),       # kept
    ("e-3", "m-1", "s-1", "purchase", T2, 19.0),       # same member/style/type/time as e-2: duplicate
    ("e-4", None, "s-1", "pdp_view", T1, None),        # null id
    ("e-5", "m 2", "s-1", "pdp_view", T1, None),       # malformed id (space)
    ("e-6", "m-2", "s-1", "wishlist", T1, None),       # unknown event type
    ("e-7", "m-2", "s-1", "purchase", T1, 0.0),        # purchase without a positive price
    ("e-8", "m-2", "s-1", "pdp_view", FUTURE, None),   # after the cutoff
    ("e-9", "m-2", "s-404", "pdp_view", T1, None),     # style not in the catalog
    ("e-10", "m-2", "s-2", "add_to_cart", T1, None),   # kept
]


def test_each_bad_row_is_rejected_with_its_reason(spark):
    events = spark.createDataFrame(
        ROWS, "event_id string, member_id string, style_id string, event_type string, "
              "occurred_at timestamp, price double")
    styles = spark.createDataFrame([("s-1",), ("s-2",)], "style_id string")
    clean, rejects = clean_events(events, styles, TYPES, CUTOFF)
    assert sorted(r.event_id for r in clean.collect()) == ["e-1", "e-10", "e-2"]
    assert reject_summary(rejects) == {
        "duplicate": 2, "null_id": 1, "malformed_id": 1, "unknown_event_type": 1,
        "bad_price": 1, "bad_timestamp": 1, "unknown_style": 1,
    }
    assert clean.count() + rejects.count() == len(ROWS)  # every row is accounted for
    assert set(clean.columns) == set(events.columns)


def test_reject_share_above_the_limit_fails_with_the_next_step():
    assert check_reject_share(1000, {"duplicate": 50}, 0.05, "/lake/rejects/dt=D") == 0.05  # at the limit
    with pytest.raises(TooManyRejects, match=r"5.1% of 1000 events.*rejects/dt=D.*re-run"):
        check_reject_share(1000, {"duplicate": 50, "null_id": 1}, 0.05, "/lake/rejects/dt=D")
    assert check_reject_share(0, {}, 0.05, "x") == 0.0


# --- the catalogue's hierarchy: one subclass-brand per style, and few moves between days ------
CATALOG_COLUMNS = "style_id string, brand string, division string, department string, class string, subclass string"


def _catalog(spark, rows):
    from spark_jobs.transforms import catalog as catalog_t

    return catalog_t.with_subclass_brand(spark.createDataFrame(rows, CATALOG_COLUMNS))


def test_a_style_listed_under_two_subclass_brands_in_one_catalogue_is_a_conflict(spark):
    from spark_jobs.transforms import catalog as catalog_t

    catalog = _catalog(spark, [
        ("s1", "Gracia", "women", "Clothing", "Dresses", "Day Dresses"),
        ("s1", "Gracia", "women", "Clothing", "Dresses", "Maxi Dresses"),
        ("s2", "Velora", "home", "Kitchen", "Dining", "Glassware"),
        ("s2", " velora", "Home", "Kitchen", "Dining", "glassware "),   # the same key: not a conflict
    ])
    conflicts = catalog_t.conflicting_styles(catalog).collect()
    assert [(r.style_id, r.hierarchies) for r in conflicts] == [
        ("s1", ["women > Clothing > Dresses > Day Dresses / Gracia",
                "women > Clothing > Dresses > Maxi Dresses / Gracia"])]


def test_hierarchy_changes_are_styles_in_both_catalogues_whose_subclass_brand_moved(spark):
    from spark_jobs.transforms import catalog as catalog_t

    before = _catalog(spark, [("s1", "Gracia", "women", "Clothing", "Dresses", "Day Dresses"),
                              ("s2", "Velora", "home", "Kitchen", "Dining", "Glassware"),
                              ("s3", "Lumen", "home", "Decor", "Lighting", "Table Lamps")])
    after = _catalog(spark, [("s1", "Gracia", "women", "Clothing", "Dresses", "Maxi Dresses"),   # moved
                             ("s2", "VELORA", "home", "Kitchen", "Dining", "Glassware"),         # case only
                             ("s4", "Lumen", "home", "Decor", "Lighting", "Floor Lamps")])       # new
    rows = sorted(catalog_t.hierarchy_changes(after, before).collect())
    assert [(r.style_id, r.changed) for r in rows] == [("s1", True), ("s2", False)]
    assert rows[0].before == "women > Clothing > Dresses > Day Dresses / Gracia"
    assert rows[0].after == "women > Clothing > Dresses > Maxi Dresses / Gracia"


@pytest.mark.parametrize("changed, in_both, refused", [(1, 100, False), (2, 100, True), (0, 0, False)])
def test_more_moves_than_the_share_refuse_the_catalogue(changed, in_both, refused):
    from spark_jobs.transforms import catalog as catalog_t

    problem = catalog_t.hierarchy_change_problem(changed, in_both, 0.01)
    assert (problem is not None) == refused
    if refused:
        assert problem == ("2 of the 100 styles in both catalogues (2.0%) changed subclass or brand, above "
                           "cleaning.max_hierarchy_change_share (1.0%)")
