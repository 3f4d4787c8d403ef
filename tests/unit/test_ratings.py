"""Implicit ratings: weighted event sums per (member, subclass-brand), worked out by hand."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from spark_jobs.transforms.ratings import implicit_ratings

WEIGHTS = {"pdp_view": 3, "add_to_cart": 10, "still_want_it": 30, "purchase": 40}
T = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


@pytest.fixture()
def style_keys(spark):
    # s-1 and s-2 are two Gracia day dresses (one subclass-brand, 101); s-3 is a Tahari dress (202).
    return spark.createDataFrame(
        [("s-1", 101), ("s-2", 101), ("s-3", 202)], "style_id string, subclass_brand_id int"
    )


def events(spark, rows):
    return spark.createDataFrame(
        [(f"e-{i}", m, s, t, T, None) for i, (m, s, t) in enumerate(rows)],
        "event_id string, member_id string, style_id string, event_type string, occurred_at timestamp, price double",
    )


def as_dict(df):
    return {(r.member_id, r.subclass_brand_id): r.rating for r in df.collect()}


def test_weighted_sum_per_member_and_subclass_brand(spark, style_keys):
    ev = events(spark, [
        ("m-1", "s-1", "pdp_view"),       # 3
        ("m-1", "s-1", "pdp_view"),       # 3
        ("m-1", "s-2", "add_to_cart"),    # 10  (same subclass-brand as s-1)
        ("m-1", "s-2", "purchase"),       # 40
        ("m-1", "s-3", "still_want_it"),  # 30
        ("m-2", "s-3", "pdp_view"),       # 3
        ("m-2", "s-3", "add_to_cart"),    # 10
    ])
    assert as_dict(implicit_ratings(ev, style_keys, WEIGHTS)) == {
        ("m-1", 101): 3 + 3 + 10 + 40,   # 56
        ("m-1", 202): 30.0,
        ("m-2", 202): 3 + 10,            # 13
    }


def test_weights_come_from_config(spark, style_keys):
    ev = events(spark, [("m-1", "s-1", "pdp_view"), ("m-1", "s-1", "purchase")])
    ratings = as_dict(implicit_ratings(ev, style_keys, {"pdp_view": 1, "purchase": 100}))
    assert ratings == {("m-1", 101): 101.0}


def test_event_types_without_weight_and_unknown_styles_do_not_rate(spark, style_keys):
    ev = events(spark, [
        ("m-1", "s-1", "pdp_view"),
        ("m-1", "s-9", "purchase"),         # style not in the catalog: no subclass-brand
    ])
    ratings = as_dict(implicit_ratings(ev, style_keys, {"purchase": 40}))
    assert ratings == {}  # the only rated style is unknown, the view has no weight
