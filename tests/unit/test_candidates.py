"""The gate's candidates and its choice on tiny data, figures worked out by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spark_jobs.transforms import candidates
from spark_jobs.transforms.candidates import Settings, blend_scorer, choose, row_scaled, stage

PARAMS = {"alpha": 1.0, "reg_param": 0.1}


def history(rows):
    return pd.DataFrame(rows, columns=candidates.HISTORY_COLUMNS)


def items(values: dict[int, float]) -> pd.DataFrame:
    """Rank-1 item factors: with positive factors every folded-in member vector is positive, so
    each member ranks the items by their factor."""
    return pd.DataFrame({"subclass_brand_id": list(values), "features": [np.array([v]) for v in values.values()]})


def settings(**changes) -> Settings:
    return Settings(**{"k": 1, "margin": 0.0, "tolerance": 0.0, "blend_weights": [0.1, 0.25, 0.5, 0.75, 0.9],
                       "exclude_seen": False, "block": 8, **changes})


def test_rows_are_scaled_by_their_largest_absolute_value_and_unrankable_items_go_lowest():
    scaled = row_scaled(np.array([[2.0, -4.0, -np.inf], [0.0, 0.0, 0.0]]))
    assert scaled.tolist() == [[0.5, -1.0, -1.0], [0.0, 0.0, 0.0]]


def test_the_blend_mixes_scaled_cf_with_the_members_own_recency_weighted_history():
    member = pd.DataFrame({"history_items": [np.array([20, 30])], "history_values": [np.array([3.0, 1.0])]})
    cf = lambda part: np.array([[0.8, 0.4, -np.inf]])                    # noqa: E731 - 10, 20, 30 (30 unknown)
    got = blend_scorer(cf, 0.5, np.array([10, 20, 30]))(member)
    # CF scaled [1, 0.5, -1]; history scaled [0, 1, 1/3]; halves: [0.5, 0.75, -1/3]
    assert got[0].tolist() == pytest.approx([0.5, 0.75, -1 / 3])


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_a_stage_evaluates_members_with_a_history_on_what_they_did_next(exclude_seen):
    known = history([(1, 10, 3.0, 1.5), (1, 20, 40.0, 30.0), (2, 10, 3.0, 3.0)])
    target = pd.DataFrame({"member_sk": [1, 1, 2, 3], "subclass_brand_id": [20, 30, 10, 30]})
    judged = stage(known, target, np.array([30, 10, 20, 10]), exclude_seen)
    relevant = {row.member_sk: row.relevant.tolist() for row in judged.members.itertuples()}
    # Member 3 has no history: not evaluated. Excluding seen, member 2's only pick (10) was seen.
    assert relevant == ({1: [30]} if exclude_seen else {1: [20, 30], 2: [10]})
    first = judged.members.iloc[0]
    assert first.history_items.tolist() == [10, 20] and first.history_values.tolist() == [1.5, 30.0]
    assert judged.item_ids.tolist() == [10, 20, 30]
    assert judged.popularity.tolist() == [1.0, 0.5, 0.0]         # shares of the 2 members with a history


def test_choose_serves_the_best_model_unless_popularity_is_better():
    test = {"group_als": {"ndcg@k": 0.30}, "global_als": {"ndcg@k": 0.31}, "repeat_blend": {"ndcg@k": 0.305},
            "popularity": {"ndcg@k": 0.20}}
    assert choose(test, settings())[:2] == ("global_als", True)
    assert choose(test, settings(tolerance=0.01))[:2] == ("group_als", True)        # 0.30 >= 0.31 - 0.01: a tie
    worse = {**test, "popularity": {"ndcg@k": 0.35}}
    chosen, passed, reason = choose(worse, settings())
    assert (chosen, passed) == ("popularity", False) and "global_als" in reason and "0.3100" in reason
    assert choose(worse, settings(margin=0.05))[:2] == ("global_als", True)         # 0.31 >= 0.35 - 0.05
    assert choose({"popularity": {"ndcg@k": 0.1}}, settings()) == ("popularity", False, "no model could be judged")


def test_the_gate_tunes_the_blend_on_validation_and_chooses_on_test():
    # Training: member 1 rated 10, member 2 rated 20. The group model ranks 10 > 20 > 30, the
    # global one 30 > 20 > 10. k = 1, seen items count.
    train = history([(1, 10, 3.0, 3.0), (2, 20, 3.0, 3.0)])
    validation_part = pd.DataFrame({"member_sk": [1, 2], "subclass_brand_id": [30, 30]})
    validation = stage(train, validation_part, np.array([10, 20, 30]), False)
    known = candidates.summed(pd.concat([train, history([(1, 30, 3.0, 3.0), (2, 30, 3.0, 3.0)])]))
    test = stage(known, pd.DataFrame({"member_sk": [1, 2], "subclass_brand_id": [10, 20]}), np.array([10, 20, 30]),
                 False)
    result, _ = candidates.gate(validation, test, {"group_als": (items({10: 0.9, 20: 0.5, 30: 0.1}), PARAMS),
                                                "global_als": (items({10: 0.1, 20: 0.5, 30: 0.9}), PARAMS)},
                             settings())
    ndcg = {part: {name: m["ndcg@k"] for name, m in result[part].items()} for part in ("validation", "test")}
    # Validation (both want 30): global hits both, group and popularity (10 first, a tie with 20
    # broken by id) miss both.
    assert ndcg["validation"] == {"popularity": 0.0, "group_als": 0.0, "global_als": 1.0, "repeat_blend": 1.0}
    # The blend of global: member 1 scores 10 at (1-w)/9 + w and 30 at 1-w: 30 stays first for
    # w < 8/17; member 2 scores 20 at 5(1-w)/9 + w: 30 stays first for w < 4/13. So 0.1 and 0.25
    # find both, 0.5 and above neither: the first best, 0.1.
    assert result["blend"] == {"cf": "global_als", "weight": 0.1, "validation_ndcg_by_weight":
                               {"0.1": 1.0, "0.25": 1.0, "0.5": 0.0, "0.75": 0.0, "0.9": 0.0}}
    # Test (member 1 wants 10, member 2 wants 20): only the group model's 10 finds one of two.
    # Popularity (30 by both) and the blend at 0.1 (30: 0.9 + 0.1 beats 10: 0.1 + 0.1) miss.
    assert ndcg["test"] == {"popularity": 0.0, "group_als": 0.5, "global_als": 0.0, "repeat_blend": 0.0}
    assert (result["chosen"], result["passed"]) == ("group_als", True)
    assert result["test"]["group_als"]["members"] == 2


def test_the_boost_multiplies_the_scores_of_recently_browsed_subclass_brands():
    member = pd.DataFrame({"boost_items": [np.array([10, 99])]})            # 99 is no candidate
    got = candidates.boosted_scorer(candidates.shared_scorer(np.array([0.5, 0.6])), 0.25, np.array([10, 20]))(member)
    assert got[0].tolist() == pytest.approx([0.625, 0.6])                  # 0.5 x 1.25 now outranks 0.6
