"""`flashfeed evaluate` and `flashfeed tune` as a user runs them: on the imported UCI sample."""
from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest

from flashfeed.config import REPO_ROOT
from flashfeed.env import project_env
from flashfeed.metrics import METRICS
from tests.conftest import UCI_SAMPLE

MODELS = {"popularity", "global_als", "group_als", "group_als_boosted"}

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not UCI_SAMPLE.is_file(), reason=f"the UCI sample is not at {UCI_SAMPLE}")]


def _flashfeed(args: list[str], env: dict) -> str:
    result = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "flashfeed"), *args], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"flashfeed {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_evaluate_and_tune_on_the_uci_sample(tmp_path):
    env = project_env({"PATH": os.environ["PATH"], "FLASHFEED_HOME": str(tmp_path / "home")})
    lake = str(tmp_path / "lake")
    _flashfeed(["uci-to-csv", "--csv", str(UCI_SAMPLE), "--out", str(tmp_path / "csv")], env)
    _flashfeed(["import", "--events", str(tmp_path / "csv" / "events.csv"),
                "--items", str(tmp_path / "csv" / "items.csv"), "--lake", lake], env)

    out = tmp_path / "metrics.json"
    table = _flashfeed(["evaluate", "--lake", lake, "--out", str(out), "--split", "stratified",
                        "--ratio", "0.75", "--seed", "3"], env)
    report = json.loads(out.read_text())
    assert report["k"] == 10 and report["split"]["type"] == "stratified" and report["split"]["seed"] == 3
    assert report["split"]["dt"] == "2011-12-10"            # the day after the last invoice
    assert set(report["models"]) == MODELS
    evaluated = report["split"]["members_evaluated"]
    assert evaluated > 100
    for name, metrics in report["models"].items():
        assert metrics["members"] == evaluated, name        # every model on the same members
        assert all(0.0 <= metrics[m] <= 1.0 for m in METRICS), name
    assert report["models"]["popularity"]["ndcg@k"] > 0      # the baseline finds something
    for name in MODELS:
        assert name in table
    assert "ndcg@10" in table and "recall@10" in table

    # One grid point for one group: a row per grid point plus the group's popularity baseline.
    results = tmp_path / "tune.csv"
    group = next(iter(report["split"]["groups"]))
    _flashfeed(["tune", "--lake", lake, "--split", "stratified", "--ratio", "0.75", "--seed", "3",
                "--groups", group, "--rank", "5", "--reg-param", "0.1",
                "--alpha", "0.05", "1.0", "--out", str(results)], env)
    with open(results, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["alpha"]) for r in rows] == [("popularity", ""), ("als", "0.05"), ("als", "1.0")]
    assert all(r["group"] == group and 0 <= float(r["ndcg@k"]) <= 1 for r in rows)
