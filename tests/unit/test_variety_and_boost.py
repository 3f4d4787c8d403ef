"""Variety limit (the seed's "Mary" example) and the recent-activity boost."""
from __future__ import annotations

import pytest

from spark_jobs.common import read_sql
from spark_jobs.transforms.affinity import apply_boost, variety_limit

# Mary (member 1000): CF output from the write-up, with the class each subclass-brand is in.
MARY = [
    ("Gracia Day Dresses", "day dresses", 0.998),
    ("Tahari ASL Day Dresses", "day dresses", 0.996),
    ("Adrianna Papell Career Dresses", "career dresses", 0.99),
    ("Donna Morgan Day Dresses", "day dresses", 0.92),
    ("Adrianna Papadell Day Dresses", "day dresses", 0.889),
    ("Gracia Tops", "tops", 0.873),
    ("Gracia Skirts", "skirts", 0.8),
    ("Tahari ASL Career Dresses", "career dresses", 0.765),
    ("Prada Heels", "heels", 0.724),
    ("Jimmy Choo Pumps", "pumps", 0.711),
    ("Vince Camuto Day Dresses", "day dresses", 0.653),
]


@pytest.fixture()
def mary(spark):
    rows = [("1000", i, name, cls, score) for i, (name, cls, score) in enumerate(MARY)]
    return spark.createDataFrame(
        rows, "member_id string, subclass_brand_id int, name string, class_key string, affinity double"
    )


def ranked_names(df):
    return [r.name for r in df.orderBy("affinity", ascending=False).collect()]


def test_mary_with_three_per_class_matches_the_write_up(spark, mary):
    kept = ranked_names(variety_limit(spark, mary, read_sql("variety_limit.sql"), 3))
    # Day dresses are limited to her top 3 brands; heels and pumps move up into the top 9.
    assert kept[:9] == [
        "Gracia Day Dresses", "Tahari ASL Day Dresses", "Adrianna Papell Career Dresses",
        "Donna Morgan Day Dresses", "Gracia Tops", "Gracia Skirts", "Tahari ASL Career Dresses",
        "Prada Heels", "Jimmy Choo Pumps",
    ]
    assert "Adrianna Papadell Day Dresses" not in kept and "Vince Camuto Day Dresses" not in kept


def test_default_of_four_keeps_a_fourth_day_dress_and_rank_order(spark, mary):
    kept = ranked_names(variety_limit(spark, mary, read_sql("variety_limit.sql"), 4))
    assert "Adrianna Papadell Day Dresses" in kept and "Vince Camuto Day Dresses" not in kept
    assert len(kept) == len(MARY) - 1
    assert kept == [name for name, _, _ in MARY if name != "Vince Camuto Day Dresses"]


def test_boost_multiplies_affinity_of_recently_browsed_subclasses_only(spark):
    affinity = spark.createDataFrame(
        [("m-1", 1, "women>clothing>dresses>day dresses", 0.5),
         ("m-1", 2, "home>bath>towels>bath towels", 0.8),
         ("m-2", 1, "women>clothing>dresses>day dresses", 0.4)],
        "member_id string, subclass_brand_id int, subclass_key string, affinity double",
    )
    interest = spark.createDataFrame(
        [("m-1", "women>clothing>dresses>day dresses", 30, 1)],
        "member_id string, subclass_key string, interest long, interest_rank int",
    )
    rows = {(r.member_id, r.subclass_brand_id): (r.affinity, r.boost)
            for r in apply_boost(affinity, interest, 0.25).collect()}
    assert rows[("m-1", 1)] == pytest.approx((0.625, 0.25))  # 0.5 * 1.25 = 0.625 still ranks below
    assert rows[("m-1", 2)] == pytest.approx((0.8, 0.0))     # the untouched 0.8: CF is not washed out
    assert rows[("m-2", 1)] == pytest.approx((0.4, 0.0))     # another member's browsing does not count
