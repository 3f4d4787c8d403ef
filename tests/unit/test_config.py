"""The one config file: seed defaults, and per-group overrides of the ALS parameters."""
from __future__ import annotations

import pytest

from flashfeed.config import group_settings, load_config


def test_defaults_are_the_write_up_parameters():
    config = load_config()
    assert config["features"]["event_weights"] == {"pdp_view": 3, "add_to_cart": 10, "still_want_it": 30, "purchase": 40}
    als = config["als"]
    assert (als["rank"], als["max_iter"], als["reg_param"], als["alpha"], als["top_k"]) == (50, 10, 0.01, 0.05, 5000)
    assert config["collections"]["max_subclass_brands_per_class"] == 4
    assert config["scoring"]["min_qty_on_hand"] == 3 and config["scoring"]["products_per_subclass_brand"] == 15


def test_group_overrides_replace_only_their_keys():
    config = load_config()
    config["als"]["group_overrides"] = {"13": {"rank": 20, "alpha": 0.1}}
    women_3 = group_settings(config, "als", "13")
    assert (women_3["rank"], women_3["alpha"], women_3["max_iter"]) == (20, 0.1, 10)
    assert group_settings(config, "als", "21")["rank"] == 50
    assert "group_overrides" not in women_3


def test_unknown_override_key_is_a_clear_error():
    config = load_config()
    config["als"]["group_overrides"] = {"13": {"ranks": 20}}
    with pytest.raises(ValueError, match=r"als.group_overrides.13 sets unknown keys \['ranks'\]"):
        group_settings(config, "als", "13")
