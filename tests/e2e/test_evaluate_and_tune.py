"""`flashfeed evaluate` and `flashfeed tune` as a user runs them: on the imported UCI sample."""
from __future__ import annotations

import csv
import json

import pytest

from flashfeed.quality.metrics import METRICS
from tests.e2e.helpers import e2e_env
from tests.e2e.helpers import flashfeed as _flashfeed

MODELS = {"popularity", "group_als", "global_als", "repeat_blend", "served", "served_boosted"}


def test_evaluate_and_tune_on_the_uci_sample(tmp_path, uci_csv):
    env = e2e_env(tmp_path / "home")
    lake = str(tmp_path / "lake")
    _flashfeed(["import", "--events", str(uci_csv["events"]), "--items", str(uci_csv["items"]), "--lake", lake], env)

    out = tmp_path / "metrics.json"
    table = _flashfeed(["evaluate", "--lake", lake, "--out", str(out), "--split", "stratified",
                        "--ratio", "0.75", "--seed", "3"], env)
    report = json.loads(out.read_text())
    assert report["k"] == 10 and report["split"]["type"] == "stratified" and report["split"]["seed"] == 3
    assert report["split"]["dt"] == "2011-12-10"            # the day after the last invoice
    # All imported history by default: from the sample's first invoice day on.
    with open(uci_csv["events"], newline="") as handle:
        first_day = min(row["occurred_at"][:10] for row in csv.DictReader(handle))
    assert report["split"]["oldest_day"] == first_day
    assert set(report["models"]) == MODELS
    evaluated = report["models"]["popularity"]["members"]
    assert evaluated > 100
    for name, metrics in report["models"].items():
        assert metrics["members"] == evaluated, name        # every model on the same members
        assert all(0.0 <= metrics[m] <= 1.0 for m in METRICS), name
    assert report["models"]["popularity"]["ndcg@k"] > 0      # the baseline finds something
    # `served` is each group's choice (made on validation), reported on the test part.
    for group, result in report["groups"].items():
        assert result["test"]["served"] == result["test"][report["served_by_group"][group]], group
    for name in MODELS:
        assert name in table
    assert "ndcg@10" in table and "recall@10" in table

    # The MSR protocol on the last 7 days: every item ranked, seen items excluded.
    msr = tmp_path / "msr.json"
    _flashfeed(["evaluate", "--lake", lake, "--out", str(msr), "--protocol", "msr", "--lookback-days", "7"], env)
    protocol = json.loads(msr.read_text())
    assert protocol["protocol"] == "msr" and protocol["split"]["ratio"] == 0.75
    assert protocol["split"]["candidates"] == "all" and protocol["split"]["exclude_seen"] is True
    assert protocol["split"]["history_days"] == 7 and protocol["split"]["oldest_day"] == "2011-12-03"

    # Two grid points for one group: popularity, then a row per point, on both parts; one is chosen.
    results, chosen = tmp_path / "tune.csv", tmp_path / "settings.json"
    group = next(iter(report["split"]["groups"]))
    _flashfeed(["tune", "--lake", lake, "--split", "stratified", "--ratio", "0.75", "--seed", "3",
                "--groups", group, "--rank", "5", "--reg-param", "0.1",
                "--alpha", "0.05", "1.0", "--out", str(results), "--settings-out", str(chosen)], env)
    with open(results, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"] == "popularity", r["alpha"]) for r in rows] == [(True, ""), (False, "0.05"), (False, "1.0")]
    # A point is judged as the gate would serve it: the ALS, or its blend (stratified: seen excluded).
    assert {r["model"] for r in rows[1:]} <= {"group_als", "repeat_blend"}
    assert all(r["group"] == group and 0 <= float(r["validation_ndcg@k"]) <= 1 and 0 <= float(r["test_ndcg@k"]) <= 1
               for r in rows)
    best = max(rows[1:], key=lambda r: float(r["validation_ndcg@k"]))
    assert [r["chosen"] for r in rows] == [str(r is best) for r in rows]
    settings = json.loads(chosen.read_text())["groups"][group]
    assert settings["settings"] == {"rank": 5, "reg_param": 0.1, "alpha": float(best["alpha"])}
    assert settings["evidence"]["test"]["ndcg@k"] == pytest.approx(float(best["test_ndcg@k"]), abs=1e-4)
