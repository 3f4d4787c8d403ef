"""The one config file: seed defaults, and per-group overrides of the ALS parameters."""
from __future__ import annotations

import pytest

from flashfeed.core.config import REPO_ROOT, group_settings, load_config, load_settings
from flashfeed.core.settings import ConfigError


def test_defaults_are_the_write_up_parameters_except_tuned_als():
    config = load_config()
    weights = config["features"]["event_weights"]
    assert weights == {"pdp_view": 3, "add_to_cart": 10, "still_want_it": 30, "purchase": 40}
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


# --- the file is validated once, at load: every bad key named by its dotted path -------------

def write_config(tmp_path, change):
    import yaml

    raw = yaml.safe_load((REPO_ROOT / "include" / "flashfeed.yaml").read_text())
    change(raw)
    path = tmp_path / "flashfeed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_validated_values_are_exactly_the_file_s_with_their_types():
    import yaml

    raw = yaml.safe_load((REPO_ROOT / "include" / "flashfeed.yaml").read_text())
    config = load_config()
    assert config == raw
    assert type(config["features"]["event_weights"]["purchase"]) is int and type(config["als"]["alpha"]) is float
    assert type(config["serving"]["api_pointer_cache_seconds"]) is float           # written 2, a real number
    settings = load_settings()
    assert (settings.als.rank, settings.import_.max_bad_row_share, settings.scoring.weights.clicks) == (10, 0.01, 1.0)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(colections={}), r"colections: unknown key; known keys: airflow, als, because, calendar, "),
    (lambda c: c["als"].update(ranks=3), r"als\.ranks: unknown key; known keys: alpha, checkpoint_interval, "),
    (lambda c: c["scoring"]["weights"].update(click=1), r"scoring\.weights\.click: unknown key; known keys: "
                                                         r"brand_persistence, click_to_purchase, clicks, "),
    (lambda c: c["als"].update(rank=0), r"als\.rank: Input should be greater than or equal to 1"),
    (lambda c: c["import"].update(max_bad_row_share=2), r"import\.max_bad_row_share: Input should be less than or "
                                                         r"equal to 1"),
    (lambda c: c["als"].update(rank="ten"), r"als\.rank: Input should be a valid integer"),
    (lambda c: c["collections"].pop("boost"), r"collections\.boost: missing"),
    (lambda c: c["serving"].update(billing_mode="ON_DEMAND"), r"serving\.billing_mode: Input should be "
                                                               r"'PAY_PER_REQUEST' or 'PROVISIONED'"),
    (lambda c: c["serving"].update(lease_seconds=0), r"serving\.lease_seconds: Input should be greater than 0"),
    (lambda c: c["serving"].update(lease_seconds=901, lease_wait_seconds=1000),
     r"serving\.lease_seconds: Input should be less than or equal to 900"),
    (lambda c: c["serving"].update(lease_wait_seconds=30), r"serving: lease_wait_seconds \(30\) must be "
                                                            r"at least lease_seconds \(60\)"),
    (lambda c: c["calendar"].update(timezone="Mars/Base"), r"calendar\.timezone: unknown time zone 'Mars/Base'"),
    (lambda c: c["calendar"].update(launch_times=["11:00", "25:00"]), r"calendar\.launch_times\.1: String should "
                                                                       r"match pattern"),
    (lambda c: c["features"]["event_weights"].update(wishlist=3), r"features\.event_weights names event types "
                                                                   r"\['wishlist'\] that cleaning\.event_types"),
    (lambda c: c["experiments"].update(name="x", salt="s", variants={"control": {"share": 0.5}, "b": {"share": 0.4}}),
     r"variants' shares add up to 0\.9, not 1"),
    (lambda c: c["als"].update(seed=-1), r"als\.seed: Input should be greater than or equal to 0"),
    (lambda c: c["collections"].update(max_payload_bytes=409_000), r"collections\.max_payload_bytes: Input should be "
                                                                    r"less than or equal to 400000"),
    # an experiment variant's collections settings: known keys, each of its setting's type and range
    (lambda c: c["experiments"].update(name="x", salt="s", variants={
        "control": {"share": 0.8}, "b": {"share": 0.2, "collections": {"card_groups": "ten", "boost": -3}}}),
     r"experiments\.variants: variant b: collections: boost: Input should be greater than or equal to 0; "
     r"card_groups: Input should be a valid integer"),
    (lambda c: c["experiments"].update(name="x", salt="s", variants={
        "control": {"share": 0.8}, "b": {"share": 0.2, "collections": {"boosts": 1}}}),
     r"variant b: collections: boosts: unknown key; known keys: boost, boost_days, "),
    # per-group overrides: known groups, known keys, each value of its setting's type and range
    (lambda c: c["als"].update(group_overrides={"13": {"ranks": 3}}), r"als\.group_overrides: group 13: ranks: "
                                                                       r"unknown key; known keys: alpha, "),
    (lambda c: c["als"].update(group_overrides={"13": {"rank": -1}}), r"als\.group_overrides: group 13: rank: Input "
                                                                       r"should be greater than or equal to 1"),
    (lambda c: c["als"].update(group_overrides={"women": {"rank": 3}}), r"als\.group_overrides: group 'women': a "
                                                                         r"group key is a division code"),
])
def test_a_bad_config_file_fails_at_load_naming_the_key(tmp_path, change, message):
    path = write_config(tmp_path, change)
    with pytest.raises(ConfigError, match=rf"{path} is not a valid flashfeed config:\n  (.|\n)*{message}"):
        load_config(path)


def test_valid_group_overrides_load_with_their_types(tmp_path):
    path = write_config(tmp_path, lambda c: c["als"].update(group_overrides={"13": {"rank": 20, "alpha": 0.5},
                                                                             "global": {"max_iter": 5}}))
    config = load_config(path)
    assert config["als"]["group_overrides"] == {"13": {"rank": 20, "alpha": 0.5}, "global": {"max_iter": 5}}
    assert group_settings(config, "als", "13")["rank"] == 20
    assert group_settings(config, "als", "global")["max_iter"] == 5
