"""Division keys (issue 24, part 7): one spelling of a division for the import, the jobs' fallbacks and
groups, the config and the API; the Spark expression agrees with the Python function."""
from __future__ import annotations

import pytest

from flashfeed.core.divisions import MAX_KEY_LENGTH, division_key, division_key_column, is_division_key

# (name, key) worked out by hand from the rule in flashfeed/core/divisions.py.
KEYS = [
    ("Women's Apparel", "womens_apparel"),
    ("HOME & décor", "home_decor"),
    ("Home & Decor", "home_decor"),
    ("Home & De\u0301cor", "home_decor"),          # decomposed: e + combining acute accent
    ("Men\u2019s Shoes", "mens_shoes"),            # typographic apostrophe
    ("Kids` Toys", "kids_toys"),
    ("  women  ", "women"),
    ("women", "women"),
    ("WOMEN", "women"),
    ("home-decor", "home_decor"),                  # the UCI converter's former names
    ("Beauty/Health", "beauty_health"),
    ("__weird -- name__", "weird_name"),
    ("100% Cotton", "100_cotton"),
    ("Jeans (Denim)", "jeans_denim"),
    ("Été Collection", "ete_collection"),
    ("Straße", "strae"),                           # no decomposition: dropped, as NFKD + ASCII drops it
    ("Ça va, ÇA VA", "ca_va_ca_va"),
    ("Ｗｏｍｅｎ", "women"),                           # full-width letters fold to ASCII (NFKD)
    ("a" * 70, "a" * MAX_KEY_LENGTH),
    ("a" * 63 + " b", "a" * 63),                   # cut at 64, no "_" left at the end
]


@pytest.mark.parametrize("name, key", KEYS)
def test_division_key(name, key):
    assert division_key(name) == key
    assert division_key(key) == key                # idempotent: a key is its own key
    assert is_division_key(key)


@pytest.mark.parametrize("name", ["", "   ", "&&", "'", "\u00d8", "日本"])
def test_a_name_without_a_letter_or_digit_has_no_key(name):
    with pytest.raises(ValueError, match="no letter or digit"):
        division_key(name)


def test_is_division_key():
    assert is_division_key("womens_apparel") and is_division_key("a1")
    assert not any(is_division_key(text) for text in ("Women", "home-decor", "_women", "women_", "a__b",
                                                      "a" * (MAX_KEY_LENGTH + 1), ""))


def test_the_spark_expression_equals_division_key(spark):
    names = [name for name, _ in KEYS] + [
        "Ørsted & Co", "Crème brûlée", "naïve café", "Ōsaka", "ÀÁÂÃÄÅ", "Łódź", "Ñandú", "São Paulo",
        "Dépôt-Vente", "İstanbul", "x\u0327y", "tab\tand\nnewline", "émigré’s"]
    ligature = "\ufb01ne"                                          # "ﬁ" folds to two letters, "fi"
    frame = spark.createDataFrame([(name,) for name in names] + [(None,), ("&&",), (ligature,)], "name string")
    rows = frame.select("name", division_key_column("name").alias("key")).collect()
    keyed = {row["name"]: row["key"] for row in rows}
    assert {name: keyed[name] for name in names} == {name: division_key(name) for name in names}
    assert keyed[None] is None and keyed["&&"] is None           # no key: null (the function raises)
    # The documented limit: translate maps one character to one, so the column drops a character
    # that folds to several; the import, which stores keys, is where names become canonical.
    assert (division_key(ligature), keyed[ligature]) == ("fine", "ne")
