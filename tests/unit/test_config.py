"""The one config file: seed defaults, and per-group overrides of the ALS parameters."""
from __future__ import annotations

import pytest

from flashfeed.core.config import REPO_ROOT, group_settings, load_config


def test_defaults_are_the_write_up_parameters_except_tuned_als():
    config = load_config()
    assert config["features"]["event_weights"] == {"pdp_view": 3, "add_to_cart": 10, "still_want_it": 30, "purchase": 40}
    als = config["als"]
    assert (als["max_iter"], als["top_k"]) == (10, 500)
    assert config["collections"]["max_subclass_brands_per_class"] == 4
    assert config["scoring"]["min_qty_on_hand"] == 3 and config["scoring"]["products_per_subclass_brand"] == 15


def test_group_overrides_replace_only_their_keys():
    config = load_config()
    config["als"]["group_overrides"] = {"13": {"rank": 20, "alpha": 0.1}}
    women_3 = group_settings(config, "als", "13")
    assert (women_3["rank"], women_3["alpha"], women_3["max_iter"]) == (20, 0.1, 10)
    assert group_settings(config, "als", "21")["rank"] == config["als"]["rank"]
    assert "group_overrides" not in women_3


def test_unknown_override_key_is_a_clear_error():
    config = load_config()
    config["als"]["group_overrides"] = {"13": {"ranks": 20}}
    with pytest.raises(ValueError, match=r"als.group_overrides.13 sets unknown keys \['ranks'\]"):
        group_settings(config, "als", "13")


def test_als_defaults_come_from_the_committed_tuning_tables():
    """The defaults are the grid point whose member-weighted validation NDCG@10, relative to the
    best point of each table, is highest on average over the committed sweeps (include/tuning/:
    the demo world and the UCI sample), and no group is overridden: per-group settings come from
    each retailer's own data through the weekly tune."""
    import csv
    from collections import defaultdict

    from flashfeed.core.config import REPO_ROOT

    config = load_config()
    relative = defaultdict(list)
    tables = sorted((REPO_ROOT / "include" / "tuning").glob("*.csv"))
    assert len(tables) == 3
    for table in tables:
        with open(table, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r["model"] != "popularity"]
        totals = defaultdict(lambda: [0.0, 0])
        for row in rows:
            point = (int(row["rank"]), float(row["reg_param"]), float(row["alpha"]))
            totals[point][0] += float(row["validation_ndcg@k"]) * int(row["validation_members"])
            totals[point][1] += int(row["validation_members"])
        means = {point: total / members for point, (total, members) in totals.items()}
        for point, mean in means.items():
            relative[point].append(mean / max(means.values()))
    best = max((p for p in relative if len(relative[p]) == len(tables)), key=lambda p: sum(relative[p]))
    assert (config["als"]["rank"], config["als"]["reg_param"], config["als"]["alpha"]) == best
    assert not config["als"]["group_overrides"]


def test_spark_submit_gets_the_configured_memory():
    import sys

    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    from flashfeed_airflow.planning import spark_submit_settings
    from flashfeed_airflow.schedules import SPARK_SUBMIT_KEYS

    config = load_config()
    config["spark"].update(driver_memory="5g", executor_memory="7g")
    settings = spark_submit_settings(config)
    assert settings == {"spark.driver.memory": "5g", "spark.executor.memory": "7g"}
    assert set(settings) == set(SPARK_SUBMIT_KEYS)


def test_the_local_spark_worker_offers_room_for_one_configured_executor():
    from flashfeed.local import spark_standalone

    assert [spark_standalone.memory_mb(s) for s in ("512m", "3g", "3G", "2gb", "1t")] == [512, 3072, 3072, 2048,
                                                                                          1048576]
    with pytest.raises(ValueError, match="not a memory size: 'lots'"):
        spark_standalone.memory_mb("lots")
    config = load_config()
    config["spark"]["executor_memory"] = "3g"
    # A worker offering less than an executor asks for would leave every job waiting.
    assert spark_standalone.default_worker_memory(config) == "4096m"
