"""The demo's task table: times relative to the run, start order, and how many tasks overlapped
(figures by hand from the stamps below)."""
from __future__ import annotations

from flashfeed.local.airflow_runs import format_task_table, most_at_once, task_rows


def instance(task, start, end, state="success", map_index=-1, label=None):
    stamp = "2026-11-22T10:{}+00:00".format
    return {"task_id": task, "map_index": map_index, "rendered_map_index": label, "state": state,
            "start_date": stamp(start) if start else None, "end_date": stamp(end) if end else None,
            "duration": None if not (start and end) else
            (int(end[:2]) * 60 + int(end[3:])) - (int(start[:2]) * 60 + int(start[3:]))}


INSTANCES = [
    instance("train.train_group_als", "01:10", "01:40", map_index=1, label="group women"),
    instance("features.build_features", "00:05", "01:05"),
    instance("related.related_items", "01:10", "02:30"),
    instance("train.train_group_als", "01:40", "02:00", map_index=0, label=None),
    instance("publish.quality_gate", None, None, state="upstream_failed"),
]


def test_rows_are_in_start_order_with_seconds_after_the_first_start():
    rows = task_rows(INSTANCES)
    assert [r["task"] for r in rows] == ["features.build_features", "related.related_items",
                                         "train.train_group_als [group women]", "train.train_group_als [0]",
                                         "publish.quality_gate"]
    assert [(r["start_s"], r["end_s"], r["seconds"]) for r in rows[:4]] == [
        (0.0, 60.0, 60), (65.0, 145.0, 80), (65.0, 95.0, 30), (95.0, 115.0, 20)]
    assert rows[4]["start_s"] is None and rows[4]["state"] == "upstream_failed"


def test_most_at_once_counts_overlaps_not_touching_intervals():
    # related 65-145 overlaps group women 65-95 and group 0 95-115; the two groups only touch.
    assert most_at_once(task_rows(INSTANCES)) == 2
    assert most_at_once(task_rows(INSTANCES[:2])) == 1
    assert most_at_once([]) == 0


def test_the_table_has_a_line_per_task_and_leaves_unknown_times_blank():
    lines = format_task_table(task_rows(INSTANCES)).splitlines()
    assert lines[0].split() == ["task", "state", "start", "s", "end", "s", "seconds"]
    assert len(lines) == 6
    assert lines[1].split() == ["features.build_features", "success", "0.0", "60.0", "60.0"]
    assert lines[5].split() == ["publish.quality_gate", "upstream_failed"]
