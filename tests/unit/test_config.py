"""The one config file: seed defaults, and per-group overrides of the ALS parameters."""
from __future__ import annotations

import pytest

from flashfeed.config import REPO_ROOT, group_settings, load_config


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


def test_als_defaults_and_overrides_come_from_the_committed_tuning_table():
    """Each group with an override uses its best row of include/tuning/demo_time_split.csv; every
    other group's NDCG@10 with the defaults is within 5 % of its best."""
    import csv

    from flashfeed.config import REPO_ROOT

    config = load_config()
    with open(REPO_ROOT / "include" / "tuning" / "demo_time_split.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["model"] == "als"]
    def params(row):
        return int(row["rank"]), float(row["reg_param"]), float(row["alpha"])
    for group in sorted({r["group"] for r in rows}):
        mine = [r for r in rows if r["group"] == group]
        best = max(mine, key=lambda r: float(r["ndcg@k"]))
        settings = group_settings(config, "als", group)
        chosen = next(r for r in mine if params(r) == (settings["rank"], settings["reg_param"], settings["alpha"]))
        if group in config["als"]["group_overrides"]:
            assert chosen is best, f"group {group}: override is not the table's best row"
        else:
            assert float(chosen["ndcg@k"]) >= 0.95 * float(best["ndcg@k"]), f"group {group}: defaults far from best"


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
    from flashfeed import spark_standalone

    assert [spark_standalone.memory_mb(s) for s in ("512m", "3g", "3G", "2gb", "1t")] == [512, 3072, 3072, 2048,
                                                                                          1048576]
    with pytest.raises(ValueError, match="not a memory size: 'lots'"):
        spark_standalone.memory_mb("lots")
    config = load_config()
    config["spark"]["executor_memory"] = "3g"
    # A worker offering less than an executor asks for would leave every job waiting.
    assert spark_standalone.default_worker_memory(config) == "4096m"
