"""Member groups: division x spend bucket, small-group merging, worked out by hand."""
from __future__ import annotations

from spark_jobs.transforms.groups import division_codes, member_profiles, merge_small_groups


def test_small_bucket_merges_towards_the_middle():
    # women (1): buckets 1..5; bucket 1 and 5 are too small (min 100)
    counts = {(1, 1): 40, (1, 2): 300, (1, 3): 500, (1, 4): 300, (1, 5): 60}
    target = merge_small_groups(counts, min_members=100, buckets=5)
    assert target[(1, 1)] == (1, 2)   # 40 joins bucket 2 (its only neighbour)
    assert target[(1, 5)] == (1, 4)   # 60 joins bucket 4
    assert target[(1, 3)] == (1, 3)


def test_merges_repeat_until_large_enough():
    # men (2): 30 + 30 + 30 = 90 < 100 in three buckets; the division ends as one group, then
    # is still too small and joins the largest group overall (women bucket 3).
    counts = {(1, 3): 500, (2, 1): 30, (2, 2): 30, (2, 3): 30}
    target = merge_small_groups(counts, min_members=100, buckets=5)
    assert {target[(2, b)] for b in (1, 2, 3)} == {(1, 3)}


def test_division_with_one_large_enough_group_keeps_it():
    counts = {(1, 3): 500, (4, 2): 60, (4, 5): 70}
    target = merge_small_groups(counts, min_members=100, buckets=5)
    # home: 60 (bucket 2) merges into 5 -> 130 members in (4, 5), which is large enough
    assert target[(4, 2)] == (4, 5) and target[(4, 5)] == (4, 5)


def test_unknown_divisions_get_the_next_codes_in_order():
    codes = division_codes({"women": 1, "men": 2}, ["Women", "pets", "garden"])
    assert codes == {"women": 1, "men": 2, "garden": 3, "pets": 4}


def test_profiles_primary_division_and_90th_percentile_price(spark):
    ratings = spark.createDataFrame(
        [("m-1", "women", 56.0), ("m-1", "home", 40.0), ("m-1", "home", 20.0),  # home 60 > women 56
         ("m-2", "men", 3.0), ("m-3", "kids", 10.0)],
        "member_id string, division string, rating double",
    )
    priced = spark.createDataFrame(
        [("m-1", "purchase", p) for p in (10.0, 20.0, 30.0, 40.0, 100.0)]
        + [("m-1", "pdp_view", 999.0),        # views do not count when a member has purchases
           ("m-2", "pdp_view", 50.0), ("m-2", "pdp_view", 70.0)],
        "member_id string, event_type string, price double",
    )
    rows = {r.member_id: r for r in member_profiles(ratings, priced, 0.9, 2).collect()}
    assert rows["m-1"].division == "home"
    # 90th percentile of 10, 20, 30, 40, 100 (linear): 40 + 0.6 * (100 - 40) = 76
    assert abs(rows["m-1"].price_level - 76.0) < 1e-9
    # no purchases: the same percentile of viewed prices: 50 + 0.9 * 20 = 68
    assert abs(rows["m-2"].price_level - 68.0) < 1e-9
    # two buckets over the two priced members: m-2 (68) cheaper than m-1 (76)
    assert (rows["m-2"].spend_bucket, rows["m-1"].spend_bucket) == (1, 2)
    # no price at all: the middle bucket ((2 + 1) // 2 = 1)
    assert rows["m-3"].price_level is None and rows["m-3"].spend_bucket == 1
