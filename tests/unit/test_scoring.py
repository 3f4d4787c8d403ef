"""Cold-start product scoring, with the scores of the default weights worked out by hand."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from flashfeed.core.config import load_config
from spark_jobs.common import read_sql
from spark_jobs.transforms.catalog import with_subclass_brand
from spark_jobs.transforms.scoring import live_products, product_features, product_scores, top_products

START = datetime(2026, 11, 22, 16, 0, tzinfo=timezone.utc)  # the 11:00 launch, EST
END = START + timedelta(hours=24)
DAY = timedelta(days=1)


@pytest.fixture()
def frames(spark):
    catalog = with_subclass_brand(spark.createDataFrame(
        [
            ("s-new", "Gracia", "women", "Clothing", "Dresses", "Day Dresses"),    # never seen before
            ("s-sold", "Gracia", "women", "Clothing", "Dresses", "Day Dresses"),   # sold well, not on sale now
            ("s-stale", "Obscura", "women", "Clothing", "Dresses", "Day Dresses"),  # clicked, never bought
            ("s-low", "Obscura", "women", "Clothing", "Dresses", "Day Dresses"),    # almost sold out
        ],
        "style_id string, brand string, division string, department string, class string, subclass string",
    ))
    calendar = spark.createDataFrame(
        [
            ("s-new", "b-9", START, START + 3 * DAY, 40),
            ("s-sold", "b-1", START - 21 * DAY, START - 18 * DAY, 0),
            ("s-stale", "b-2", START - 30 * DAY, START - 27 * DAY, 10),
            ("s-stale", "b-3", START - 20 * DAY, START - 17 * DAY, 10),
            ("s-stale", "b-4", START - 10 * DAY, START - 7 * DAY, 10),
            ("s-stale", "b-5", START - 2 * DAY, START + DAY, 25),
            ("s-low", "b-5", START - 2 * DAY, START + DAY, 2),
            ("s-gone", "b-6", START - 5 * DAY, START - 2 * DAY, 9),   # ended before the window
        ],
        "style_id string, sale_id string, starts_at timestamp, ends_at timestamp, qty_on_hand long",
    )
    activity = spark.createDataFrame(
        [("s-sold", 100, 10, 30, 0, 0, 1), ("s-stale", 40, 2, 0, 0, 0, 0)],
        "style_id string, clicks long, carts long, purchases long, recent_clicks long, "
        "recent_purchases long, returns_and_cancels long",
    )
    return catalog, calendar, activity


def test_live_products_are_those_on_sale_in_the_window(spark, frames):
    _, calendar, _ = frames
    live = {r.style_id: r.sale_id for r in live_products(calendar, START, END).collect()}
    assert live == {"s-new": "b-9", "s-stale": "b-5", "s-low": "b-5"}


def test_new_style_of_a_selling_brand_outranks_a_stale_one(spark, frames):
    catalog, calendar, activity = frames
    cfg = load_config()["scoring"]
    live = live_products(calendar, START, END).where(f"qty_on_hand >= {cfg['min_qty_on_hand']}")
    features = product_features(live, calendar, catalog, activity, START, cfg["brand_persistence_days"])
    scores = {r.style_id: r.score for r in product_scores(features, cfg["weights"]).collect()}
    assert set(scores) == {"s-new", "s-stale"}  # s-low culled: 2 on hand < 3
    w = cfg["weights"]
    # s-new: first sale, launching now; its brand sold 30 Gracia day dresses; Gracia had a sale
    # start on 1 of the last 90 days; it is the only (hence 100 % new) Gracia product on sale.
    new = (w["brand_persistence"] * 1 / 90 + w["first_day"] + w["first_72h"]
           + w["new_share"] * 1.0 + w["subclass_brand_conversion"] * math.log1p(30))
    # s-stale: 3 earlier sales, on site for 2 days, 40 clicks and no purchase; Obscura had sale
    # starts on 4 of the last 90 days.
    stale = (w["times_sold_before"] * math.log1p(3) + w["days_on_site"] * 2 / 3
             + w["brand_persistence"] * 4 / 90 + w["clicks"] * math.log1p(40) + w["first_72h"])
    assert scores["s-new"] == pytest.approx(new, abs=1e-5)
    assert scores["s-stale"] == pytest.approx(stale, abs=1e-5)
    assert scores["s-new"] > scores["s-stale"]


def test_top_products_keep_the_best_n_per_subclass_brand(spark):
    scored = spark.createDataFrame(
        [(f"s-{i}", 7, float(i)) for i in range(20)] + [("s-x", 8, 1.0)],
        "style_id string, subclass_brand_id int, score double",
    )
    top = top_products(spark, scored, read_sql("top_products_per_subclass_brand.sql"), 15)
    by_sb = {}
    for r in top.collect():
        by_sb.setdefault(r.subclass_brand_id, []).append((r.rank_in_subclass_brand, r.style_id))
    assert [s for _, s in sorted(by_sb[7])] == [f"s-{i}" for i in range(19, 4, -1)]
    assert by_sb[8] == [(1, "s-x")]
