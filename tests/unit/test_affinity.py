"""ALS helpers: user blocks, saleable candidates, and the stable subclass-brand key."""
from __future__ import annotations

import pytest

from spark_jobs.transforms.affinity import saleable_subclass_brands, user_blocks
from spark_jobs.transforms.catalog import with_subclass_brand


@pytest.mark.parametrize("members, expected", [
    (1, (1, 5000)), (5000, (1, 5000)), (5001, (2, 5000)), (99_999, (20, 5000)),
    (100_000, (2, 50000)), (1_000_000, (20, 50000)),
])
def test_user_blocks_use_the_small_or_large_divisor(members, expected):
    assert user_blocks(members, threshold=100_000, divisor_small=5000, divisor_large=50_000) == expected


def test_saleable_subclass_brands_need_stock_and_count_their_products(spark):
    live = spark.createDataFrame([("s-1", 5), ("s-2", 2), ("s-3", 3), ("s-4", 9), ("s-5", 9), ("s-6", 9)],
                                 "style_id string, qty_on_hand long")
    keys = spark.createDataFrame([("s-1", 7), ("s-2", 8), ("s-3", 9), ("s-4", 9), ("s-5", 9), ("s-6", 9)],
                                 "style_id string, subclass_brand_id int")
    got = {r.subclass_brand_id: r.products for r in saleable_subclass_brands(live, keys, 3, max_products=3).collect()}
    # 8 has only a style with 2 on hand; 9 has 4 stocked styles, of which a collection shows 3
    assert got == {7: 1, 9: 3}


def test_subclass_brand_key_is_stable_and_ignores_case_and_spaces(spark):
    schema = "style_id string, brand string, division string, department string, class string, subclass string"
    a = with_subclass_brand(spark.createDataFrame(
        [("s-1", "Gracia", "women", "Clothing", "Dresses", "Day Dresses"),
         ("s-2", "Gracia", "women", "Clothing", "Dresses", "Career Dresses")], schema))
    b = with_subclass_brand(spark.createDataFrame(
        [("s-9", " GRACIA ", "Women", "clothing", "dresses", "day dresses")], schema))
    ids = {r.style_id: r.subclass_brand_id for r in a.union(b).collect()}
    assert ids["s-1"] == ids["s-9"] != ids["s-2"]
    # the key is a value of the data, not of the run: the same number in every run and release
    assert ids["s-1"] == 989374467
