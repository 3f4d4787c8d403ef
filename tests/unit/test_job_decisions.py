"""The Spark jobs' decisions as pure functions of plain values, figures worked out by hand
(train_group's serving decision: test_train_group.py)."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
import pytest

from flashfeed.core import calendar
from spark_jobs import build_collections, features, refresh_feeds, related, score_products, train_global, tune
from spark_jobs.transforms.cleaning import TooManyRejects

D = date(2026, 11, 23)


def test_the_previous_catalogue_is_the_newest_complete_one_before_the_day():
    asked = []

    def complete(day):
        asked.append(day)
        return day != date(2026, 11, 22)               # that day's export never finished

    names = ["dt=2026-11-23", "dt=2026-11-22", "dt=2026-11-21", "dt=2026-11-20", "dt=2026-11-2x.tmp", "other"]
    assert features.newest_complete_before(names, D, complete) == date(2026, 11, 21)
    assert asked == [date(2026, 11, 22), date(2026, 11, 21)]   # newest first, stops at the first complete one
    assert features.newest_complete_before(["dt=2026-11-23"], D, complete) is None


def test_the_history_read_is_the_longer_of_the_look_back_and_the_interaction_months():
    cutoff, days, interaction_days = features.history_window(D, lookback_days=90, interaction_months=6)
    assert cutoff == datetime(2026, 11, 23, tzinfo=timezone.utc)
    assert interaction_days == 180 and len(days) == 180                 # 6 x 30 > 90
    assert (days[0], days[-1]) == (date(2026, 11, 22), date(2026, 5, 27))
    assert len(features.history_window(D, lookback_days=200, interaction_months=6)[1]) == 200


def test_the_day_is_refused_when_more_than_the_limit_of_its_events_are_rejected():
    # 6 of 100 rejected: 6 % > 5 %; 5 of 100 is at the limit and passes
    refusal = features.reject_refusal(100, {"duplicate": 4, "unknown_style": 2}, 0.05, "/lake/rejects/dt=D")
    assert isinstance(refusal, TooManyRejects) and "6.0% of 100 events were rejected (limit 5%)" in str(refusal)
    assert "inspect /lake/rejects/dt=D (column `reason`)" in str(refusal)
    assert features.reject_refusal(100, {"duplicate": 5}, 0.05, "/lake/rejects/dt=D") is None
    assert features.reject_refusal(0, {}, 0.05, "/lake/rejects/dt=D") is None


def test_group_counts_are_keyed_by_the_groups_name():
    rows = [{"group": "13", "ratings": 7, "members": 2, "items": 5}]
    assert features.per_group_counts(rows) == {"13": {"ratings": 7, "members": 2, "subclass_brands": 5}}


def test_the_global_als_is_fit_on_the_gates_training_part_or_on_every_rating_without_one():
    train = pd.DataFrame({"member_sk": [1], "subclass_brand_id": [10], "rating": [3.0]})
    every = pd.DataFrame({"member_sk": [1, 2], "subclass_brand_id": [10, 20], "rating": [3.0, 1.0]})
    assert train_global.fit_frame(train, every) == (train, True)
    frame, gate_fit = train_global.fit_frame(train.iloc[0:0], every)
    assert frame is every and gate_fit is False


def test_a_launch_without_stock_or_without_catalogued_products_is_refused():
    slot = calendar.slot(D, "1100")
    assert score_products.no_stock_problem(1, 40, 3, slot, "/lake/raw/sale_calendar/dt=D") is None
    problem = score_products.no_stock_problem(0, 40, 3, slot, "/lake/raw/sale_calendar/dt=D")
    assert f"no product with 3+ on hand is on sale in {slot.starts_at} .. {slot.ends_at} (40 on sale in all) " \
           "according to /lake/raw/sale_calendar/dt=D" in str(problem)
    assert "Next step: deliver raw sale_calendar for 2026-11-23 again" in str(problem)
    assert score_products.no_product_problem(5, 12, slot, "/lake/raw/catalog/dt=D") is None
    problem = score_products.no_product_problem(0, 12, slot, "/lake/raw/catalog/dt=D")
    assert "none of the 12 stocked products on sale is in the catalog /lake/raw/catalog/dt=D" in str(problem)


def test_collections_below_the_full_share_target_are_named_and_files_follow_the_members():
    stats = {"products_full": {"full_share": 0.5}, "products_card": {"full_share": 0.95},
             "brands_full": {"payloads": 0}}                 # no payloads: not reported as short
    assert build_collections.short_data_sets(stats, ["products_full", "products_card", "brands_full", "x"],
                                             0.9) == {"products_full": 0.5}
    # 25,001 members at 5,000 payloads per file: 6 files; no member still writes one
    assert build_collections.files_per_data_set(25_001, 5_000) == 6
    assert build_collections.files_per_data_set(0, 5_000) == 1


def _test(cases, **mrr):
    return {"cases": cases, "mrr": mrr}


def test_related_models_are_served_only_when_they_rank_the_hold_out_at_least_as_well_as_popularity():
    test = {"cooccurrence": _test(10, llr=0.31, count=0.2, popularity=0.30),
            "bought_together": _test(5, fp_growth=0.10, popularity=0.12)}
    assert related.served_models(test, "llr") == ("llr", "popularity")
    assert related.served_models(test, "count") == ("popularity", "popularity")
    # no case in the hold-out: nothing says the model is worse, it is served
    empty = {"cooccurrence": _test(0), "bought_together": _test(0)}
    assert related.served_models(empty, "llr") == ("llr", "fp_growth")


def test_fp_growth_without_one_to_one_rules_serves_popularity():
    assert related.rules_served("fp_growth", has_one_to_one_rules=False) == "popularity"
    assert related.rules_served("fp_growth", has_one_to_one_rules=True) == "fp_growth"
    assert related.rules_served("popularity", has_one_to_one_rules=True) == "popularity"


def test_tune_takes_every_group_by_default_and_refuses_unknown_ones():
    assert tune.selected_groups(None, ["13", "21"]) == ["13", "21"]
    assert tune.selected_groups(["21"], ["13", "21"]) == ["21"]
    with pytest.raises(SystemExit, match=r"groups \['99'\] do not exist in this split; groups: \['13', '21'\]"):
        tune.selected_groups(["21", "99"], ["13", "21"])


def test_a_refresh_reads_every_quarter_hour_since_midnight_up_to_its_own():
    since = datetime(2026, 11, 23, tzinfo=timezone.utc)
    quarter = refresh_feeds.parse_quarter("20261123t0030")
    assert refresh_feeds.quarter_starts(since, quarter) == [
        since, datetime(2026, 11, 23, 0, 15, tzinfo=timezone.utc), quarter]
    with pytest.raises(ValueError, match="does not start a quarter hour"):
        refresh_feeds.parse_quarter("20261123t0020")
