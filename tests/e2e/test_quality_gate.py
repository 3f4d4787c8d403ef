"""The daily quality gate and its fallbacks, running the real Spark jobs on a small generated world.

train_global and train_group are run as their own processes (as spark-submit would), with
configs and weekly-tune settings that force each path:
1. training fails on the first day (a weekly tune's settings hold rank 0: the config's validation
   cannot catch that) and nothing earlier exists -> the group is served from popularity;
2. the global model is trained, the gate passes (margin 1.0: any model is good enough) -> served
   from the day's best model, every candidate judged on both parts;
3. training fails the next day (no global model either) -> served from the last good model;
4. no model can reach popularity (margin -1.0) -> popularity, although a last good model exists.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

from flashfeed.core import lake
from flashfeed.core.config import REPO_ROOT
from tests.e2e.helpers import e2e_env, run

DAY1, DAY2 = "2026-11-22", "2026-11-23"
MEMBERS, DAYS, SEED = 500, 21, 5     # 21 days: the gate needs a training part before its 7 + 7


def _run(args: list[str], env: dict) -> str:
    """A module of the project run with this venv's Python (as spark-submit would run the job)."""
    result = run([sys.executable, *args], env, timeout=900)
    return result.stdout + result.stderr


def _config(tmp_path: Path, name: str, change) -> str:
    """The project config with `change(config)` applied, written to a file of its own."""
    config = yaml.safe_load((REPO_ROOT / "include" / "flashfeed.yaml").read_text())
    change(config)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _metrics(root: str, day: str, group: str) -> dict:
    return json.loads(Path(lake.models(day, group, root), "metrics.json").read_text())


def _tune(root: str, day: str, group: str, settings: dict | None) -> None:
    """The weekly tune of `day` chose `settings` for the group (None: no tune that day)."""
    tuning = Path(lake.tuning(day, root))
    if settings is None:
        shutil.rmtree(tuning)
        return
    tuning.mkdir(parents=True)
    (tuning / "settings.json").write_text(json.dumps({"dt": day, "groups": {group: {"settings": settings}}}))


def test_gate_and_fallbacks(tmp_path, demo_world):
    env = e2e_env(tmp_path / "home")
    root = demo_world(env["FLASHFEED_LAKE"], members=MEMBERS, days=DAYS, end_date=DAY2, seed=SEED)
    _run(["-m", "spark_jobs.features", "--dt", DAY1], env)
    group = json.loads(Path(lake.features(DAY1, root), "groups.json").read_text())["groups"][0]
    lenient = _config(tmp_path, "lenient", lambda c: c["evaluation"].update(gate_ndcg_margin=1.0))
    strict = _config(tmp_path, "strict", lambda c: c["evaluation"].update(gate_ndcg_margin=-1.0))
    train = ["-m", "spark_jobs.train_group", "--group", group]

    # 1. Training fails, no earlier model: popularity, and the reason is recorded.
    _tune(root, "2026-11-21", group, {"rank": 0})
    log = _run([*train, "--dt", DAY1], env)
    _tune(root, "2026-11-21", group, None)
    first = _metrics(root, DAY1, group)
    assert first["served_from"] == "popularity"
    assert first["fallback_reason"].startswith("training failed: ") and "rank" in first["fallback_reason"]
    assert "FAILED" in log and "is served from popularity because training failed" in log
    assert first["affinity_rows"] > 0 and Path(lake.success(lake.affinity(DAY1, group, root))).exists()

    # 2. With the global model, the gate passes: the day's best model is served and becomes the last
    # good one. A weekly tune of the day before chose the group's settings: they replace the config's.
    _run(["-m", "spark_jobs.train_global", "--dt", DAY1], env)
    _tune(root, "2026-11-21", group, {"rank": 3, "reg_param": 0.5, "alpha": 2.0})
    log = _run([*train, "--dt", DAY1], {**env, "FLASHFEED_CONFIG": lenient})
    good = _metrics(root, DAY1, group)
    assert good["tuned_from"] == "2026-11-21" and "the weekly tune of 2026-11-21 chose" in log
    assert (good["params"]["rank"], good["params"]["reg_param"], good["params"]["alpha"]) == (3, 0.5, 2.0)
    _tune(root, "2026-11-21", group, None)      # the groups return to the config's settings
    assert good["served_from"] == "model" and good["fallback_reason"] is None
    assert good["gate"]["evaluated"] and good["gate"]["passed"] and good["served_model"] == good["gate"]["chosen"]
    candidates = {"group_als", "global_als", "repeat_blend", "popularity"}
    assert set(good["gate"]["validation"]) == set(good["gate"]["test"]) == candidates
    members = {m["members"] for m in good["gate"]["test"].values()}
    assert len(members) == 1 and members.pop() > 0            # every candidate on the same members
    best = max(good["gate"]["test"][name]["ndcg@k"] for name in candidates - {"popularity"})
    assert good["gate"]["test"][good["served_model"]]["ndcg@k"] == best
    assert good["gate"]["blend"]["weight"] in good["gate"]["blend"]["validation_ndcg_by_weight"] or \
        str(good["gate"]["blend"]["weight"]) in good["gate"]["blend"]["validation_ndcg_by_weight"]
    assert Path(lake.models(DAY1, group, root), "factors", "members").is_dir()

    # 3. Next day training fails: the day before's model serves today's members.
    _run(["-m", "spark_jobs.features", "--dt", DAY2], env)
    _tune(root, DAY2, group, {"rank": 0})
    _run([*train, "--dt", DAY2], env)
    _tune(root, DAY2, group, None)
    second = _metrics(root, DAY2, group)
    assert second["served_from"] == f"last_good_model:{DAY1}"
    assert second["fallback_reason"].startswith("training failed: ")
    assert 0 < second["members_scored"] <= second["members"]
    assert second["served_model"] == good["served_model"]

    # 4. Every model judged below popularity: popularity, not the last good model.
    _run([*train, "--dt", DAY2], {**env, "FLASHFEED_CONFIG": strict})
    strictly = _metrics(root, DAY2, group)
    assert strictly["served_from"] == "popularity" and strictly["served_model"] is None
    assert strictly["fallback_reason"].startswith("quality gate: the best model, ")
