"""Collections: grouping by subclass-brand, brand and category; full/card limits; truncation."""
from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from spark_jobs.transforms.collections import (
    ENVELOPE_BYTES,
    attach_styles,
    fallback_affinity,
    feed_units,
    limit_groups,
    payloads,
    styles_by_subclass_brand,
)

CFG = {"min_saleable_products": 3, "card_groups": 2, "card_products": 2, "products_per_member": 8}
SB = {  # subclass_brand_id: (brand, subclass, styles in score order)
    1: ("Gracia", "Day Dresses", ["a1", "a2", "a3"]),
    2: ("Gracia", "Tops", ["b1", "b2", "b3", "b4"]),
    3: ("Tahari", "Day Dresses", ["c1", "c2", "c3"]),
    4: ("Vince", "Heels", ["d1", "d2"]),  # only 2 saleable products: never a group
}


@pytest.fixture()
def inputs(spark):
    products = spark.createDataFrame(
        [(style, sb, rank + 1) for sb, (_, _, styles) in SB.items() for rank, style in enumerate(styles)],
        "style_id string, subclass_brand_id int, rank_in_subclass_brand int",
    )
    names = spark.createDataFrame(
        [(sb, brand, sub, f"women>clothing>x>{sub.lower()}") for sb, (brand, sub, _) in SB.items()],
        "subclass_brand_id int, brand string, subclass string, subclass_key string",
    )
    affinity = spark.createDataFrame(
        [("m-1", 1, 0.9, 0.0), ("m-1", 2, 0.8, 0.25), ("m-1", 3, 0.7, 0.0), ("m-1", 4, 0.95, 0.0)],
        "member_id string, subclass_brand_id int, affinity double, boost double",
    ).join(names.select("subclass_brand_id", "subclass_key"), "subclass_brand_id")
    return affinity, styles_by_subclass_brand(products), names


def groups_of(units_df, styles):
    """Every group with all its products, most relevant first."""
    whole = attach_styles(units_df.withColumn("take", F.col("n")), styles)
    return [(r.name, round(r.affinity, 4), list(r.styles))
            for r in whole.orderBy("affinity", ascending=False).collect()]


def test_three_feeds_group_the_same_affinities_differently(inputs):
    affinity, styles, names = inputs
    assert groups_of(feed_units(affinity, styles, names, "products"), styles)[:3] == [
        ("Vince Heels", 0.95, ["d1", "d2"]),
        ("Gracia Day Dresses", 0.9, ["a1", "a2", "a3"]),
        ("Gracia Tops", 0.8, ["b1", "b2", "b3", "b4"]),
    ]
    # a brand is as relevant as the member's best subclass-brand of it; styles follow affinity
    assert groups_of(feed_units(affinity, styles, names, "brands"), styles) == [
        ("Vince", 0.95, ["d1", "d2"]),
        ("Gracia", 0.9, ["a1", "a2", "a3", "b1", "b2", "b3", "b4"]),
        ("Tahari", 0.7, ["c1", "c2", "c3"]),
    ]
    assert groups_of(feed_units(affinity, styles, names, "categories"), styles) == [
        ("Heels", 0.95, ["d1", "d2"]),
        ("Day Dresses", 0.9, ["a1", "a2", "a3", "c1", "c2", "c3"]),
        ("Tops", 0.8, ["b1", "b2", "b3", "b4"]),
    ]


def payload_of(df):
    rows = df.selectExpr("to_json(struct(member_id, feed, variant, version, groups)) AS j",
                         "truncated_groups").collect()
    assert len(rows) == 1
    return json.loads(rows[0].j), rows[0].truncated_groups


def test_card_and_full_limits(inputs):
    affinity, styles, names = inputs
    units = feed_units(affinity, styles, names, "products")
    card, _ = payload_of(payloads(attach_styles(limit_groups(units, "card", CFG), styles), "products", "card", "v1",
                                  400_000))
    # Vince Heels has too few saleable products; then 2 groups x 2 products
    assert [(g["name"], g["styles"]) for g in card["groups"]] == [
        ("Gracia Day Dresses", ["a1", "a2"]), ("Gracia Tops", ["b1", "b2"])]
    assert card["groups"][1]["boost"] == 0.25
    full, _ = payload_of(payloads(attach_styles(limit_groups(units, "full", CFG), styles), "products", "full", "v1",
                                  400_000))
    # at most 8 products per member: 3 + 4, then 1 of Tahari's
    assert [g["styles"] for g in full["groups"]] == [["a1", "a2", "a3"], ["b1", "b2", "b3", "b4"], ["c1"]]
    every_style = [s for g in full["groups"] for s in g["styles"]]
    assert len(every_style) == len(set(every_style))  # no product twice in one payload
    assert full["version"] == "v1" and full["feed"] == "products" and full["variant"] == "full"


def test_oversized_payload_keeps_its_most_relevant_groups_that_fit(inputs):
    affinity, styles, names = inputs
    units = attach_styles(limit_groups(feed_units(affinity, styles, names, "categories"), "full",
                                       {**CFG, "products_per_member": 300}), styles)
    first = '{"key":"women>clothing>x>day dresses","name":"Day Dresses","affinity":0.9,"boost":0.0,' \
            '"styles":["a1","a2","a3","c1","c2","c3"]}'
    budget = ENVELOPE_BYTES + len(first) + 1  # exactly room for the first group
    payload, dropped = payload_of(payloads(units, "categories", "full", "v1", budget))
    assert [g["name"] for g in payload["groups"]] == ["Day Dresses"] and dropped == 1
    payload, dropped = payload_of(payloads(units, "categories", "full", "v1", budget - 1))
    assert payload["groups"] == [] and dropped == 2


def test_fallback_affinity_scales_best_scores_per_division_and_overall(spark):
    products = spark.createDataFrame(
        [(1, "women", "k1", "c1", 2.0), (1, "women", "k1", "c1", 4.0), (2, "women", "k2", "c2", 1.0),
         (3, "home", "k3", "c3", 3.0), (4, "home", "k4", "c4", 5.0)],
        "subclass_brand_id int, division string, subclass_key string, class_key string, score double",
    )
    rows = {(r.member_id, r.subclass_brand_id): r.affinity for r in fallback_affinity(products).collect()}
    assert rows[("__fallback__#women", 1)] == 1.0 and rows[("__fallback__#women", 2)] == 0.0
    assert rows[("__fallback__#home", 3)] == 0.0 and rows[("__fallback__#home", 4)] == 1.0
    # overall: best scores 4, 1, 3, 5 -> (s - 1) / 4
    assert [rows[("__fallback__#all", sb)] for sb in (1, 2, 3, 4)] == [0.75, 0.0, 0.5, 1.0]


@pytest.mark.parametrize("payload_bytes, refused", [(409_400, False), (409_401, True)])
def test_a_payload_over_dynamodbs_item_limit_after_truncation_is_refused(payload_bytes, refused):
    from spark_jobs.build_collections import item_limit_problem

    # 409,600 bytes (400 KB) less about 200 bytes of keys: 409,400 is the largest payload that fits
    problem = item_limit_problem({"member_id": "m-7", "feed": "products", "variant": "full", "bytes": payload_bytes})
    assert (problem is not None) == refused
    if refused:
        assert problem.startswith("payload of member m-7 feed products#full is 409,401 bytes after truncation")
        assert problem.endswith("over DynamoDB's item limit of 409,600 bytes")
