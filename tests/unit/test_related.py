"""Item-to-item co-occurrence, bought-together baskets and their offline test, on tiny frames.

Figures are worked out by hand in the comments: the 2 x 2 tables, Jaccard, the reciprocal ranks.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from pyspark.sql import functions as F

from spark_jobs.transforms import related as related_t

T0 = datetime(2026, 11, 20, 10, 0)


def g_squared(k11: int, k12: int, k21: int, k22: int) -> float:
    """The textbook G^2 = 2 sum O ln(O / E) of a 2 x 2 table: an independent check of the Spark column."""
    n = k11 + k12 + k21 + k22
    rows, cols = (k11 + k12, k21 + k22), (k11 + k21, k12 + k22)
    cells = ((k11, rows[0], cols[0]), (k12, rows[0], cols[1]), (k21, rows[1], cols[0]), (k22, rows[1], cols[1]))
    return 2 * sum(o * math.log(o * n / (r * c)) for o, r, c in cells if o > 0)


def events_frame(spark, rows):
    """rows: (member, item, minutes after T0, event_type); event ids in row order."""
    return spark.createDataFrame(
        [(f"e{i}", m, f"s-{item}", item, kind, T0 + timedelta(minutes=minutes))
         for i, (m, item, minutes, kind) in enumerate(rows)],
        "event_id string, member_id string, style_id string, subclass_brand_id int, event_type string, "
        "occurred_at timestamp")


def test_llr_of_the_wehkamp_shirt_and_jeans_table(spark):
    # Jeans & shirt 12, jeans only 73, shirt only 51, neither 5334 (5470 sessions).
    row = spark.range(1).select(related_t.log_likelihood_ratio(F.lit(12), F.lit(73), F.lit(51), F.lit(5334))
                                .alias("llr")).first()
    assert row["llr"] == pytest.approx(g_squared(12, 73, 51, 5334), rel=1e-9)
    assert row["llr"] == pytest.approx(41.73, abs=0.01)
    independent = spark.range(1).select(related_t.log_likelihood_ratio(
        F.lit(10), F.lit(90), F.lit(90), F.lit(810)).alias("llr")).first()
    assert independent["llr"] == pytest.approx(0.0, abs=1e-9)     # 10/100 = 100/1000: no association


def test_cooccurrence_counts_members_scores_pairs_and_drops_negative_association(spark):
    # 5 members. Items 1 and 2 go together (m1, m2, m3); item 3 is everywhere; item 4 only with m5.
    rows = [("m1", 1, 0, "pdp_view"), ("m1", 2, 1, "pdp_view"), ("m1", 3, 2, "pdp_view"),
            ("m2", 1, 0, "pdp_view"), ("m2", 2, 1, "purchase"), ("m2", 3, 2, "pdp_view"),
            ("m3", 1, 0, "pdp_view"), ("m3", 2, 1, "pdp_view"), ("m3", 2, 5, "pdp_view"), ("m3", 3, 6, "pdp_view"),
            ("m4", 3, 0, "pdp_view"),
            ("m5", 3, 0, "pdp_view"), ("m5", 4, 1, "pdp_view")]
    items = related_t.member_items(events_frame(spark, rows), max_items=10)
    pairs = {(r["item"], r["related"]): r for r in related_t.cooccurrence(items, min_members=1).collect()}
    # 1-2: both 3, item 1 in 3 members, item 2 in 3, N = 5 -> table (3, 0, 0, 2)
    one_two = pairs[(1, 2)]
    assert (one_two["both"], one_two["members"]) == (3, 5)
    assert one_two["llr"] == pytest.approx(g_squared(3, 0, 0, 2))
    assert one_two["jaccard"] == pytest.approx(3 / (3 + 3 - 3)) and one_two["count"] == 3
    assert pairs[(2, 1)]["llr"] == pytest.approx(one_two["llr"])     # both directions
    # 1-3: both 3, item 1 in 3, item 3 in 5: 3 x 5 = 15 = 3 x 5 (expected) -> not positive, dropped
    assert (1, 3) not in pairs and (3, 1) not in pairs
    # 3-4: both 1, 1 x 5 = 5 x 1: dropped too
    assert (3, 4) not in pairs
    assert set(p for p, r in pairs.items() if r["both"] >= 2) == {(1, 2), (2, 1)}
    assert related_t.cooccurrence(items, min_members=4).count() == 0


def test_member_items_keeps_each_members_most_recent(spark):
    rows = [("m1", 1, 0, "pdp_view"), ("m1", 2, 10, "pdp_view"), ("m1", 3, 20, "pdp_view"), ("m1", 1, 30, "pdp_view")]
    kept = related_t.member_items(events_frame(spark, rows), max_items=2)
    assert sorted(r["item"] for r in kept.collect()) == [1, 3]      # item 1 seen again last, then 3


def test_top_related_ranks_by_the_chosen_score(spark):
    scored = spark.createDataFrame([(1, 2, 5.0, 9.0), (1, 3, 7.0, 1.0), (1, 4, 1.0, 5.0)],
                                   "item int, related int, llr double, count double")
    by_llr = [(r["related"], r["rank"]) for r in related_t.top_related(scored, "llr", 2).orderBy("rank").collect()]
    by_count = [r["related"] for r in related_t.top_related(scored, "count", 3).orderBy("rank").collect()]
    assert by_llr == [(3, 1), (2, 2)] and by_count == [2, 4, 3]


def test_baskets_split_a_members_purchases_by_the_order_window(spark):
    rows = [("m1", 1, 0, "purchase"), ("m1", 2, 30, "purchase"), ("m1", 1, 50, "purchase"),   # one basket
            ("m1", 3, 200, "purchase"),                                                       # 150 min later
            ("m2", 2, 0, "purchase")]
    baskets = {r["basket_id"]: r["items"] for r in related_t.baskets(events_frame(spark, rows), 60).collect()}
    assert sorted(baskets.values()) == [[1, 2], [2], [3]]
    cases = related_t.basket_cases(related_t.baskets(events_frame(spark, rows), 60)).collect()
    assert [(c["anchor"], c["target"]) for c in cases] == [(1, 2)]


def test_next_item_cases_take_a_sessions_first_two_subclass_brands(spark):
    rows = [("m1", 1, 0, "pdp_view"), ("m1", 1, 5, "pdp_view"), ("m1", 2, 10, "pdp_view"), ("m1", 3, 12, "pdp_view"),
            ("m1", 4, 100, "pdp_view"),                      # 88 min later: a new session of one item, no case
            ("m2", 5, 0, "pdp_view"), ("m2", 6, 29, "pdp_view")]
    cases = related_t.next_item_cases(related_t.sessions(events_frame(spark, rows), 30)).collect()
    assert sorted((c["anchor"], c["target"]) for c in cases) == [(1, 2), (5, 6)]


def test_mean_reciprocal_rank_takes_the_best_target_and_counts_misses_as_zero(spark):
    lists = spark.createDataFrame([("m", 1, 2, 1), ("m", 1, 3, 2), ("m", 1, 4, 3), ("m", 5, 6, 1), ("n", 1, 9, 1)],
                                  "model string, item int, related int, rank int")
    cases = spark.createDataFrame([("a", 1, 3), ("b", 1, 4), ("b", 1, 2), ("c", 1, 9), ("d", 7, 2)],
                                  "case_id string, anchor int, target int")
    # m: a rank 2 -> 1/2; b best of ranks 3 and 1 -> 1; c not listed -> 0; d no list -> 0. n: only c, rank 1.
    figures = related_t.mean_reciprocal_ranks(cases, lists, ["m", "n", "none"])
    assert figures == pytest.approx({"m": (0.5 + 1 + 0 + 0) / 4, "n": 1 / 4, "none": 0.0})
    assert related_t.mean_reciprocal_ranks(cases.limit(0), lists, ["m"]) == {"m": 0.0}


def test_with_popular_fills_after_the_models_list_and_never_lists_the_item_itself(spark):
    lists = spark.createDataFrame([("m", 1, 7, 3.5, 1)], "model string, item int, related int, score double, rank int")
    ranks = spark.createDataFrame([(1, 1), (2, 2), (7, 3), (4, 4)], "item int, popularity_rank int")
    items = spark.createDataFrame([(1,), (9,)], "item int")
    filled = {(r["model"], r["item"], r["rank"]): (r["related"], r["score"], r["from_model"])
              for r in related_t.with_popular(lists, items, ranks, 3, ["m", "popularity"]).collect()}
    # item 1: its own 7, then popular 2 and 4 (1 is itself, 7 is already listed)
    assert [filled[("m", 1, k)] for k in (1, 2, 3)] == [(7, 3.5, True), (2, None, False), (4, None, False)]
    # item 9, unknown to the model, and a model without lists: popularity alone
    assert [filled[("m", 9, k)][0] for k in (1, 2, 3)] == [1, 2, 7]
    assert [filled[("popularity", 1, k)][0] for k in (1, 2, 3)] == [2, 7, 4]


def test_association_rules_keep_one_to_one_rules_best_first(spark):
    rules = spark.createDataFrame(
        [([1], [2], 0.5, 2.0, 0.1), ([1], [3], 0.5, 3.0, 0.1), ([1, 2], [3], 0.9, 4.0, 0.05),
         ([2], [1], 0.2, 2.0, 0.1)],
        "antecedent array<int>, consequent array<int>, confidence double, lift double, support double")
    kept = [(r["item"], r["related"], r["rank"]) for r in
            related_t.association_rules(rules, 5).orderBy("item", "rank").collect()]
    assert kept == [(1, 3, 1), (1, 2, 2), (2, 1, 1)]      # equal confidence: the higher lift first


def test_recent_views_one_per_subclass_brand_newest_first(spark):
    rows = [("m1", 1, 0, "pdp_view"), ("m1", 2, 10, "add_to_cart"), ("m1", 3, 20, "purchase"),
            ("m1", 1, 30, "pdp_view"), ("m1", 4, -600, "pdp_view")]       # 4: before `since`
    events = events_frame(spark, rows).withColumn(
        "style_id", F.when(F.col("event_id") == "e3", F.lit("s-1b")).otherwise(F.col("style_id")))
    views = related_t.recent_views(events, T0 - timedelta(minutes=60), ["pdp_view", "add_to_cart"], 5)
    got = [(r["subclass_brand_id"], r["style_id"], r["view_rank"]) for r in views.orderBy("view_rank").collect()]
    assert got == [(1, "s-1b", 1), (2, "s-2", 2)]      # the purchase is no view; 1's newest product s-1b
