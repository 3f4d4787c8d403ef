"""Evaluation transforms on tiny frames, with the expected figures worked out by hand."""
from __future__ import annotations

from datetime import datetime

from spark_jobs.transforms import evaluation

EVENT_SCHEMA = "member_id string, subclass_brand_id int, occurred_at timestamp"


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
    marked = evaluation.mark_time_holdout(events, holdout_days=3)
    train, test = marked.where("not held_out"), marked.where("held_out")
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
