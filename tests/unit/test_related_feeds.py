"""The launch's related, bought-together and because payloads, on tiny frames."""
from __future__ import annotations

import json

import pytest

from spark_jobs.transforms import related_feeds

VERSION = "20261122t1100"


@pytest.fixture
def frames(spark):
    # On sale: subclass-brands 10 (s-a1, s-a2), 20 (s-b1, s-b2, s-b3), 30 (s-c1); 40 is not on sale.
    sb_styles = spark.createDataFrame([(10, ["s-a1", "s-a2"]), (20, ["s-b1", "s-b2", "s-b3"]), (30, ["s-c1"])],
                                      "subclass_brand_id int, styles array<string>")
    names = spark.createDataFrame([(10, "Gracia", "Dresses"), (20, "Velora", "Vases"), (30, "Sorina", "Candles"),
                                   (40, "Adriley", "Jackets")], "subclass_brand_id int, brand string, subclass string")
    # 10's related: 40 (not on sale), 20, 30; 20's related: 10
    lists = spark.createDataFrame([(10, 40, 9.0, 1), (10, 20, 5.0, 2), (10, 30, 2.0, 3), (20, 10, 4.0, 1)],
                                  "item int, related int, score double, rank int")
    return sb_styles, names, lists


def test_related_groups_keep_what_is_on_sale_in_list_order(frames):
    sb_styles, names, lists = frames
    groups = {r["subclass_brand_id"]: r["groups"] for r in
              related_feeds.related_groups(lists, sb_styles, names, groups=2, styles=2).collect()}
    assert [(g["key"], g["name"], g["score"], g["styles"]) for g in groups[10]] == [
        ("20", "Velora Vases", 5.0, ["s-b1", "s-b2"]), ("30", "Sorina Candles", 2.0, ["s-c1"])]
    assert [g["key"] for g in groups[20]] == ["10"]


def test_round_robin_takes_the_best_product_of_each_related_subclass_brand_first(frames):
    sb_styles, _, lists = frames
    styles = {r["subclass_brand_id"]: r["styles"] for r in related_feeds.round_robin(lists, sb_styles, 3).collect()}
    assert styles[10] == ["s-b1", "s-c1", "s-b2"]       # 20's best, 30's best, then 20's second
    assert styles[20] == ["s-a1", "s-a2"]


def test_style_payloads_one_line_per_product_on_sale(spark, frames):
    sb_styles, names, lists = frames
    products = spark.createDataFrame([("s-a1", 10), ("s-a2", 10), ("s-c1", 30)],
                                     "style_id string, subclass_brand_id int")
    per_sb = related_feeds.round_robin(lists, sb_styles, 3)
    lines = {r["style_id"]: json.loads(r["line"]) for r in
             related_feeds.style_payloads(products, per_sb, "bought_together", VERSION).collect()}
    assert set(lines) == {"s-a1", "s-a2"}               # 30 has no list: no payload for s-c1
    assert lines["s-a1"] == {"style_id": "s-a1", "feed": "bought_together", "version": VERSION,
                             "styles": ["s-b1", "s-c1", "s-b2"]}


def test_because_carousels_newest_view_first_without_the_viewed_product(spark, frames):
    sb_styles, _, lists = frames
    carousels = related_feeds.round_robin(lists, sb_styles, 4)
    views = spark.createDataFrame(
        [("m1", "s-a9", 10, "Gracia", "Dresses", 2), ("m1", "s-b2", 20, "Velora", "Vases", 1),
         ("m2", "s-x", 40, "Adriley", "Jackets", 1)],          # 40 has no list: no carousel
        "member_id string, style_id string, subclass_brand_id int, brand string, subclass string, view_rank int")
    groups = {r["member_id"]: r["groups"] for r in
              related_feeds.because_groups(views, carousels, min_styles=2, styles=3, anchors=2).collect()}
    assert set(groups) == {"m1"}
    first, second = groups["m1"]
    assert (first["key"], first["name"], first["styles"]) == ("s-b2", "Because you viewed Velora Vases",
                                                              ["s-a1", "s-a2"])
    # 10's carousel is s-b1, s-c1, s-b2, s-b3: s-b2 is the product of the newer carousel's anchor: kept
    assert (second["key"], second["styles"]) == ("s-a9", ["s-b1", "s-c1", "s-b2"])
    # a carousel shorter than min_styles is dropped
    short = related_feeds.because_groups(views, carousels, min_styles=3, styles=3, anchors=2).collect()
    assert [[g["key"] for g in r["groups"]] for r in short] == [["s-a9"]]


def test_because_shows_a_product_once_per_member(spark, frames):
    sb_styles, _, lists = frames
    # 30's only related subclass-brand is 20, as 10's best: the newer carousel (of 30) keeps s-b1, s-b2
    more = lists.unionByName(spark.createDataFrame([(30, 20, 1.0, 1)], lists.schema))
    carousels = related_feeds.round_robin(more, sb_styles, 10)
    views = spark.createDataFrame(
        [("m1", "s-a1", 10, "Gracia", "Dresses", 2), ("m1", "s-c1", 30, "Sorina", "Candles", 1)],
        "member_id string, style_id string, subclass_brand_id int, brand string, subclass string, view_rank int")
    [row] = related_feeds.because_groups(views, carousels, min_styles=1, styles=2, anchors=2).collect()
    # 10's round robin s-b1, s-c1, s-b2, s-b3 without s-b1 and s-b2 (shown in the newer carousel)
    assert [(g["key"], g["styles"]) for g in row["groups"]] == [("s-c1", ["s-b1", "s-b2"]),
                                                                ("s-a1", ["s-c1", "s-b3"])]
