"""train_group's decisions and numpy steps on tiny data, figures computed by hand."""
from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from spark_jobs import train_group
from spark_jobs.common import JobError
from spark_jobs.transforms.als import factor_matrix, fitted_factors
from spark_jobs.transforms.candidates import Settings, choose, popularity_share


def ratings(rows):
    return pd.DataFrame(rows, columns=["member_id", "member_sk", "subclass_brand_id", "rating"])


def test_popularity_is_the_share_of_the_groups_members_who_rated_each_candidate():
    group = ratings([("a", 1, 10, 3.0), ("b", 2, 10, 40.0), ("c", 3, 10, 3.0), ("a", 1, 20, 3.0), ("b", 2, 30, 9.0)])
    # 10: 3 of 3 members, 30: 1 of 3, 40: nobody (a candidate nobody rated); 20 is no candidate.
    assert popularity_share(group, "member_id", np.array([10, 30, 40])).tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_factor_matrix_follows_the_requested_ids_and_marks_the_missing():
    factors = pd.DataFrame({"id": [7, 3], "features": [np.array([1.0, 2.0]), np.array([3.0, 4.0])]})
    present, matrix = factor_matrix(factors, "id", np.array([3, 5, 7]))
    assert present.tolist() == [True, False, True]
    assert matrix.tolist() == [[3.0, 4.0], [0.0, 0.0], [1.0, 2.0]]


@pytest.mark.parametrize(("limit", "engine"), [(1000, "driver"), (10, "spark")])
def test_a_group_is_fit_on_the_driver_up_to_the_limit_and_by_spark_above_it(spark, tmp_path, limit, engine):
    """30 ratings: within a limit of 1000 the fit runs in numpy and no Spark session is asked
    for, above a limit of 10 Spark's ALS fits them; both give factors keyed as the gate and the
    scoring read them."""
    spark.sparkContext.setCheckpointDir(str(tmp_path))
    sessions = []

    def session():
        sessions.append(spark)
        return spark

    rng = np.random.default_rng(2)
    frame = ratings([(f"m{u}", u, int(i), float(rng.choice([3.0, 40.0])))
                     for u in range(10) for i in rng.choice(8, 3, replace=False)])
    params = {"rank": 3, "max_iter": 4, "reg_param": 0.1, "alpha": 0.5, "seed": 1, "item_blocks": 1,
              "checkpoint_interval": 10, "driver_fit_max_ratings": limit}
    users, items = fitted_factors(session, frame, params, blocks=1)
    assert bool(sessions) == (engine == "spark")
    assert sorted(users["member_sk"]) == list(range(10))
    assert sorted(items["subclass_brand_id"]) == sorted(frame["subclass_brand_id"].unique())
    assert {len(f) for f in users["features"]} == {3}
    assert {len(f) for f in items["features"]} == {3}


# --- Which model the gate serves (train_group.serving_decision), branch by branch -----------------


def _figures(**ndcg):
    return {name: {"ndcg@k": value, "members": 10} for name, value in ndcg.items()}


def _gate(test, margin, tolerance=0.0, blend=None):
    """A gate verdict from per-candidate NDCG@k (candidates.choose), as candidates.gate records it."""
    chosen, passed, reason = choose(test, Settings(k=10, margin=margin, tolerance=tolerance, blend_weights=[0.5],
                                                   exclude_seen=False, block=100))
    return {"evaluated": True, "passed": passed, "chosen": chosen, "reason": reason, "test": test,
            **({"blend": blend} if blend else {})}


def test_the_gate_serves_the_best_model_when_it_reaches_popularity_minus_the_margin():
    # best model global_als 0.27 >= popularity 0.30 - margin 0.05 = 0.25: served, nothing falls back
    gate = _gate(_figures(popularity=0.30, group_als=0.25, global_als=0.27), margin=0.05)
    decision = train_group.serving_decision(gate, models_trained=True, last_good=("2026-11-20", {}))
    assert decision == train_group.ServingDecision("model", "global_als", None, cf="global_als")


def test_models_within_the_tolerance_of_the_best_go_to_the_first_in_order():
    # tolerance 0.03: 0.25 >= 0.27 - 0.03 = 0.24, so group_als (first of MODELS) wins
    gate = _gate(_figures(popularity=0.20, group_als=0.25, global_als=0.27), margin=0.0, tolerance=0.03)
    assert train_group.serving_decision(gate, models_trained=True).served_model == "group_als"


def test_the_repeat_blend_is_served_with_its_cf_models_factors_and_its_weight():
    gate = _gate(_figures(popularity=0.20, group_als=0.25, global_als=0.22, repeat_blend=0.31), margin=0.0,
                 blend={"cf": "group_als", "weight": 0.7, "validation_ndcg_by_weight": {}})
    decision = train_group.serving_decision(gate, models_trained=True)
    assert (decision.served_from, decision.served_model, decision.cf, decision.history_weight) == \
        ("model", "repeat_blend", "group_als", 0.7)


def test_every_model_below_popularity_minus_the_margin_serves_popularity_not_the_last_good_model():
    # best model global_als 0.27 < popularity 0.30 - margin 0.02 = 0.28
    gate = _gate(_figures(popularity=0.30, group_als=0.25, global_als=0.27), margin=0.02)
    decision = train_group.serving_decision(gate, models_trained=True, last_good=("2026-11-20", {}))
    assert (decision.served_from, decision.served_model) == ("popularity", None)
    assert decision.fallback_reason == ("quality gate: the best model, global_als, has NDCG@10 0.2700, below "
                                        "popularity 0.3000 - margin 0.02")


def test_no_model_trained_serves_the_last_good_model_with_its_own_choice_and_weight():
    gate = train_group.untrained_gate("training failed: ValueError: rank")
    metrics = {"served_from": "model", "served_model": "repeat_blend", "history_weight": 0.3}
    decision = train_group.serving_decision(gate, models_trained=False, last_good=("2026-11-21", metrics))
    assert decision == train_group.ServingDecision("last_good_model:2026-11-21", "repeat_blend",
                                                   "training failed: ValueError: rank", history_weight=0.3,
                                                   last_good_day="2026-11-21")
    # a last good model recorded before served_model existed was the group's ALS
    older = train_group.serving_decision(gate, False, ("2026-11-19", {"served_from": "model"}))
    assert (older.served_model, older.history_weight) == ("group_als", None)


def test_no_model_trained_and_no_last_good_model_serves_popularity_with_the_training_failure():
    decision = train_group.serving_decision(train_group.untrained_gate("training failed: boom"), False, None)
    assert decision == train_group.ServingDecision("popularity", None, "training failed: boom")


@pytest.mark.parametrize(("group_trained", "chosen"), [(True, "group_als"), (False, "global_als")])
def test_without_a_gate_split_the_trained_model_is_served_unjudged(group_trained, chosen):
    gate = train_group.unjudged_gate(group_trained, k=10, margin=0.05)
    assert (gate["evaluated"], gate["passed"], gate["chosen"], gate["k"], gate["margin"]) == \
        (False, True, chosen, 10, 0.05)
    assert train_group.serving_decision(gate, True) == train_group.ServingDecision("model", chosen, None, cf=chosen)


def test_the_last_good_day_is_the_newest_earlier_day_whose_model_was_served():
    looked_at = []
    metrics = {"2026-11-23": {"served_from": "model"},          # not before the day
               "2026-11-22": {"served_from": "popularity"},     # fell back that day
               "2026-11-21": None,                              # no metrics.json or no factors
               "2026-11-20": {"served_from": "model", "served_model": "global_als"},
               "2026-11-19": {"served_from": "model"}}

    def metrics_of(day):
        looked_at.append(day)
        return metrics[day]

    assert train_group.last_good_day(list(metrics), date(2026, 11, 23), metrics_of) == \
        ("2026-11-20", {"served_from": "model", "served_model": "global_als"})
    assert looked_at == ["2026-11-22", "2026-11-21", "2026-11-20"]          # newest first, stops at the first
    assert train_group.last_good_day(["2026-11-22"], date(2026, 11, 23), metrics_of) is None


def test_a_weekly_tune_replaces_the_groups_settings_and_refuses_unknown_ones():
    params = {"rank": 10, "reg_param": 0.1, "alpha": 1.0}
    tuned = ("2026-11-16", {"groups": {"13": {"settings": {"rank": 3, "alpha": 2.0}}}})
    assert train_group.with_tuning(params, tuned, "13") == ({"rank": 3, "reg_param": 0.1, "alpha": 2.0}, "2026-11-16")
    assert train_group.with_tuning(params, tuned, "21") == (params, None)
    assert train_group.with_tuning(params, None, "13") == (params, None)
    with pytest.raises(JobError, match=r"unknown als settings \['ranks'\] for group 13"):
        train_group.with_tuning(params, ("2026-11-16", {"groups": {"13": {"settings": {"ranks": 3}}}}), "13")


# --- transform on tiny frames, no Spark, no lake -----------------------------------------------------

PARAMS = {"rank": 2, "max_iter": 2, "reg_param": 0.1, "alpha": 1.0, "seed": 1, "item_blocks": 1,
          "checkpoint_interval": 10, "driver_fit_max_ratings": 0, "serve_iterations": 1, "top_k": 2,
          "top_k_products": 100, "score_block_members": 2, "user_blocks_threshold": 1000,
          "user_blocks_divisor_small": 1, "user_blocks_divisor_large": 1}


def _inputs(last_good=None, last_good_factors=None):
    def no_spark():
        raise RuntimeError("no Spark here")         # driver_fit_max_ratings 0: the fit asks for Spark and fails

    rows = ratings([("a", 1, 10, 3.0), ("a", 1, 20, 1.0), ("b", 2, 10, 3.0), ("c", 3, 30, 40.0)])
    rows["recent_rating"] = rows["rating"]
    candidate_rows = pd.DataFrame({"subclass_brand_id": [10, 20, 30, 40], "products": [5, 5, 5, 5]})
    return train_group.GroupInputs(
        date(2026, 11, 23), "13", rows, candidate_rows, None, None, lambda: (None, None),
        lambda: last_good, last_good_factors, no_spark, "/lake/models/dt=2026-11-23/global",
        train_group.group_counts(rows, candidate_rows["subclass_brand_id"].to_numpy(), PARAMS))


def _settings():
    return train_group.GroupSettings(PARAMS, PARAMS, Settings(10, 0.05, 0.0, [0.5], False, 2), None)


def test_transform_serves_popularity_when_no_model_trains_and_there_is_no_last_good_model():
    outputs = train_group.transform(_inputs(), _settings())
    assert outputs.decision.served_from == "popularity"
    assert outputs.decision.fallback_reason.startswith("training failed: RuntimeError: no Spark here")
    assert outputs.gate == {"evaluated": False, "passed": False, "reason": outputs.decision.fallback_reason}
    # popularity: 10 rated by 2 of 3 members, 20 and 30 by 1 of 3, 40 by none; top 2 per member
    assert outputs.served.values.tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0.0])
    rows = pd.concat(list(outputs.affinity), ignore_index=True)
    assert rows.groupby("member_id")["subclass_brand_id"].apply(list).to_dict() == \
        {"a": [10, 20], "b": [10, 20], "c": [10, 20]}
    assert outputs.counts["members_scored"] == 3


def test_transform_serves_the_last_good_models_factors_when_no_model_trains():
    members = pd.DataFrame({"member_id": ["a", "b"], "features": [np.array([1.0, 0.0]), np.array([0.0, 1.0])]})
    items = pd.DataFrame({"subclass_brand_id": [10, 30, 40],
                          "features": [np.array([0.5, 0.0]), np.array([0.0, 2.0]), np.array([1.0, 1.0])]})
    read = []
    outputs = train_group.transform(
        _inputs(("2026-11-20", {"served_from": "model", "served_model": "global_als"}),
                lambda day: read.append(day) or (members, items)), _settings())
    assert (outputs.decision.served_from, outputs.decision.served_model) == ("last_good_model:2026-11-20", "global_als")
    assert read == ["2026-11-20"]
    # a: 10 -> 0.5, 30 -> 0, 40 -> 1 ; b: 10 -> 0, 30 -> 2, 40 -> 1 ; 20 is unknown to the factors; c is unknown
    rows = pd.concat(list(outputs.affinity), ignore_index=True)
    assert rows.groupby("member_id")["subclass_brand_id"].apply(list).to_dict() == {"a": [40, 10], "b": [30, 40]}
