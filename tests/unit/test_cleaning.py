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
