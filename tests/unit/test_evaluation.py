"""Evaluation transforms on tiny frames, with the expected figures worked out by hand."""
from __future__ import annotations

from datetime import datetime

import pytest

from spark_jobs.transforms import evaluation

EVENT_SCHEMA = "member_id string, subclass_brand_id int, occurred_at timestamp"
RATING_SCHEMA = "member_id string, subclass_brand_id int, rating double"


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour)


def pairs(frame) -> set:
    return {(r.member_id, r.subclass_brand_id) for r in frame.collect()}


def test_time_split_holds_out_each_members_own_last_days(spark):
    events = spark.createDataFrame([
        ("a", 1, at(1)), ("a", 2, at(10)), ("a", 3, at(13)), ("a", 4, at(14)),   # a's last event: 14th
        ("b", 5, at(2)), ("b", 6, at(4)),                                        # b's last event: 4th
        ("c", 7, at(20)),                                                        # one day only
    ], EVENT_SCHEMA)
    train, test = evaluation.time_split(events, holdout_days=3)
    # Held out: after (last - 3 days): a after the 11th 12:00 -> 3, 4; b after the 1st 12:00 -> 5, 6.
    assert pairs(test) == {("a", 3), ("a", 4), ("b", 5), ("b", 6), ("c", 7)}
    assert pairs(train) == {("a", 1), ("a", 2)}


def test_gate_parts_hold_out_the_last_days_and_the_days_before_them(spark):
    # a: events on the 1st, 10th, 16th and 20th. Test: her last 3 days up to the 20th (after the
    # 17th, 12:00): the 20th. Validation: 3 days up to her last earlier event, the 16th: the 16th
    # (the 10th is before the 13th, 12:00). b: one event, all test.
    events = spark.createDataFrame([("a", 1, at(1)), ("a", 2, at(10)), ("a", 3, at(16)), ("a", 4, at(20)),
                                    ("b", 5, at(5))], EVENT_SCHEMA)
    marked = {(r.member_id, r.subclass_brand_id): r.part
              for r in evaluation.mark_gate_parts(events, holdout_days=3, validation_days=3).collect()}
    assert marked == {("a", 1): "train", ("a", 2): "train", ("a", 3): "validation", ("a", 4): "test",
                      ("b", 5): "test"}


def test_stratified_split_keeps_ceil_ratio_of_each_members_items_and_is_seeded(spark):
    events = spark.createDataFrame(
        [("a", item, at(1)) for item in range(1, 5)] + [("a", 1, at(2))] + [("b", 9, at(1))], EVENT_SCHEMA)
    train, test = evaluation.stratified_split(events, ratio=0.75, seed=7)
    a_train = {i for m, i in pairs(train) if m == "a"}
    a_test = {i for m, i in pairs(test) if m == "a"}
    assert len(a_train) == 3 and len(a_test) == 1 and a_train | a_test == {1, 2, 3, 4}   # ceil(0.75 x 4) = 3
    assert pairs(train) >= {("b", 9)} and not any(m == "b" for m, _ in pairs(test))     # ceil(0.75 x 1) = 1
    both = train.unionByName(test)
    assert both.count() == events.count()        # every event lands on one side, with its pair
    again_train, _ = evaluation.stratified_split(events.repartition(3), ratio=0.75, seed=7)
    assert pairs(again_train) == pairs(train)    # same seed, other partitioning: same split
    splits = {frozenset(pairs(evaluation.stratified_split(events, 0.75, seed)[1])) for seed in range(8)}
    assert len(splits) > 1                       # the seed matters


def test_relevant_items_exclude_seen_and_members_without_training(spark):
    train = spark.createDataFrame([("a", 1, 3.0), ("a", 2, 10.0)], RATING_SCHEMA)
    test = spark.createDataFrame([("a", 2, 3.0), ("a", 3, 40.0), ("z", 4, 3.0)], RATING_SCHEMA)
    assert pairs(evaluation.relevant_items(train, test)) == {("a", 3)}
    assert pairs(evaluation.relevant_items(train, test, exclude_seen=False)) == {("a", 2), ("a", 3)}


def test_popularity_ranks_candidates_by_members_and_skips_what_a_member_has(spark):
    train = spark.createDataFrame([
        ("a", 1, 3.0), ("b", 1, 3.0), ("c", 1, 3.0),      # item 1: 3 members
        ("a", 2, 90.0), ("b", 2, 3.0),                    # item 2: 2 members (rating does not count)
        ("c", 3, 3.0), ("d", 4, 3.0), ("d", 5, 3.0),      # items 3, 4, 5: 1 member each
    ], RATING_SCHEMA)
    members = spark.createDataFrame([("a",), ("d",)], "member_id string")
    scores = evaluation.popularity_scores(train, members, k=2)
    top = evaluation.top_k_unseen(scores, train, k=2)
    ranked = {(r.member_id, r.rank): r.subclass_brand_id for r in top.collect()}
    # a has 1 and 2: next are 3, 4 (1 member each, lower id first); d has 4, 5: 1, 2.
    assert ranked == {("a", 1): 3, ("a", 2): 4, ("d", 1): 1, ("d", 2): 2}
    live = spark.createDataFrame([(2,), (5,)], "subclass_brand_id int")
    only_live = evaluation.top_k_unseen(evaluation.popularity_scores(train, members, 2, live), train, k=2)
    assert pairs(only_live) == {("a", 5), ("d", 2)}   # live: 2 and 5; a has 2, d has 5


def test_boost_multiplies_scores_of_recently_browsed_subclasses(spark):
    scores = spark.createDataFrame([("a", 1, "w>shoes", 0.5), ("a", 2, "w>bags", 0.6)],
                                   "member_id string, subclass_brand_id int, subclass_key string, score double")
    interest = spark.createDataFrame([("a", "w>shoes")], "member_id string, subclass_key string")
    boosted = {r.subclass_brand_id: r.score for r in evaluation.boosted(scores, interest, 0.25).collect()}
    assert boosted == pytest.approx({1: 0.625, 2: 0.6})   # 0.5 x 1.25 now outranks 0.6


def test_evaluate_means_over_every_member_with_relevant_items(spark):
    top = spark.createDataFrame([("a", 7, 1), ("a", 8, 2)], "member_id string, subclass_brand_id int, rank int")
    relevant = spark.createDataFrame([("a", 8), ("b", 9)], "member_id string, subclass_brand_id int")
    got = evaluation.evaluate(top, relevant, k=2)
    # a: hit at 2 -> precision 1/2, recall 1, RR 1/2; b has no list -> 0 everywhere. Means over 2.
    assert got["members"] == 2
    assert got["precision@k"] == pytest.approx(0.25) and got["recall@k"] == pytest.approx(0.5)
    assert got["mrr"] == pytest.approx(0.25)
