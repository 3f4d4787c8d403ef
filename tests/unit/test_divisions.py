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


# --- the jobs key divisions the same way (tiny Spark frames) ----------------------------------

def test_fallbacks_are_keyed_by_division_key_also_for_free_text_names(spark):
    from spark_jobs.transforms.collections import fallback_affinity

    products = spark.createDataFrame(
        [(1, "Women's Apparel", "k1", "c1", 2.0), (2, "womens apparel", "k2", "c2", 4.0),   # one division
         (3, "Home & Decor", "k3", "c3", 1.0), (4, "&&", "k4", "c4", 5.0)],                 # "&&": no key
        "subclass_brand_id int, division string, subclass_key string, class_key string, score double",
    ).withColumn("division", division_key_column("division"))      # as every job reads the catalogue
    rows = {(r.member_id, r.subclass_brand_id): r.affinity for r in fallback_affinity(products).collect()}
    assert {member for member, _ in rows} == {"__fallback__#womens_apparel", "__fallback__#home_decor",
                                              "__fallback__#all"}
    assert (rows[("__fallback__#womens_apparel", 1)], rows[("__fallback__#womens_apparel", 2)]) == (0.0, 1.0)
    assert rows[("__fallback__#home_decor", 3)] == 1.0
    assert rows[("__fallback__#all", 4)] == 1.0              # a keyless division's products stay in the global one


def test_member_groups_and_codes_are_keyed_by_division_key(spark):
    from spark_jobs.transforms.groups import division_codes, member_groups

    names = spark.createDataFrame([(1, "Women's Apparel"), (2, "womens apparel"), (3, "Home & Decor")],
                                  "subclass_brand_id int, division string",
                                  ).withColumn("division", division_key_column("division"))   # as read
    # m-1 rates the two spellings of womens_apparel 30 + 30 = 60 and home_decor 50: womens_apparel
    # is her primary division only because both spellings are one division.
    rated = spark.createDataFrame([("m-1", 1, 30.0), ("m-1", 2, 30.0), ("m-1", 3, 50.0), ("m-2", 3, 10.0)],
                                  "member_id string, subclass_brand_id int, rating double")
    events = spark.createDataFrame([("m-1", "purchase", 10.0), ("m-2", "purchase", 20.0)],
                                   "member_id string, event_type string, price double")
    feats = {"spend_percentile": 0.9, "spend_buckets": 1, "min_group_members": 1,
             "division_codes": {"womens_apparel": 1}}
    members, _, codes = member_groups(rated, events, names, feats)
    assert codes == {"womens_apparel": 1, "home_decor": 2}
    assert {r.member_id: (r.division, r.group) for r in members.collect()} == {
        "m-1": ("womens_apparel", "11"), "m-2": ("home_decor", "21")}
    assert division_codes({"women": 1}, ["Women", "Home & Decor", "home_decor", "&&"]) == {"women": 1, "home_decor": 2}


def test_subclass_brand_ids_are_the_same_for_a_division_name_and_its_key(spark):
    from pyspark.sql import functions as F

    from spark_jobs.transforms.catalog import with_subclass_brand

    catalog = spark.createDataFrame(
        [("s1", "Gracia", "Women's Apparel", "Dresses", "Day", "Midi"),
         ("s2", "Gracia", "womens_apparel", "Dresses", "Day", "Midi"),      # today's import: the key
         ("s3", "Gracia", " Women ", "Dresses", "Day", "Midi")],
        "style_id string, brand string, division string, department string, class string, subclass string")
    rows = {r.style_id: r for r in with_subclass_brand(catalog).collect()}
    assert rows["s1"].subclass_brand_id == rows["s2"].subclass_brand_id
    assert rows["s1"].subclass_key == "womens_apparel>dresses>day>midi"
    # A division that is already a key keeps the id it always had (lower(trim(...)) of each level).
    before = spark.range(1).select(F.xxhash64(*[F.lit(v) for v in ("women", "dresses", "day", "midi", "gracia")])
                                   .bitwiseAND(F.lit(0x7FFFFFFF).cast("bigint")).cast("int").alias("id")).first().id
    assert rows["s3"].subclass_brand_id == before


def test_the_configs_division_codes_are_keyed_by_division_keys(tmp_path):
    from flashfeed.core.config import load_config
    from flashfeed.core.settings import ConfigError
    from tests.unit.test_config import write_config

    path = write_config(tmp_path, lambda c: c["features"]["division_codes"].update({"Women's Apparel": 6}))
    with pytest.raises(ConfigError, match=r"features\.division_codes: \"Women's Apparel\" is not a "
                                          r"division key .*write it as its key 'womens_apparel'"):
        load_config(path)
    path = write_config(tmp_path, lambda c: c["features"]["division_codes"].update({"womens_apparel": 6}))
    assert load_config(path)["features"]["division_codes"]["womens_apparel"] == 6


# --- flashfeed import stores the key; its fallbacks follow -------------------------------------

NAMED_ITEMS = """\
item_id,brand,division,department,class,subclass,list_price
s1,Gracia,Women's Apparel,Clothing,Dresses,Day Dresses,99.5
s2,Velora,Home & Decor,Kitchen,Dining,Glassware,
s3,Velora,Home & Decor,Kitchen,Dining,Glassware,12
s9,Gracia,womens apparel,Clothing,Dresses,Midi Dresses,40
s7,Lumen,&&,Decor,Lighting,Table Lamps,40
"""


def test_an_import_stores_division_keys_and_its_fallbacks_use_them(tmp_path, spark, capsys):
    import pyarrow.parquet as pq

    from flashfeed.ingest import importer
    from spark_jobs.transforms.collections import fallback_affinity
    from tests.unit.test_import import EVENTS, LENIENT, MODEL_DAY, _write

    lake = tmp_path / "lake"
    events, items = _write(tmp_path, "events.csv", EVENTS), _write(tmp_path, "items.csv", NAMED_ITEMS)
    report = importer.import_csv(events, items, str(lake), settings=LENIENT)
    assert report["divisions"] == ["home_decor", "womens_apparel"]
    assert report["division_names"] == {"home_decor": ["Home & Decor"],
                                        "womens_apparel": ["Women's Apparel", "womens apparel"]}
    assert report["merged_divisions"] == {"womens_apparel": ["Women's Apparel", "womens apparel"]}
    assert report["files"]["items"]["bad_by_reason"] == {"bad division": 1}      # "&&" has no key
    catalog = pq.read_table(lake / "raw" / "catalog" / f"dt={MODEL_DAY}").to_pylist()
    assert {row["style_id"]: row["division"] for row in catalog} == {
        "s1": "womens_apparel", "s2": "home_decor", "s3": "home_decor", "s9": "womens_apparel"}

    # The summary shows where each key came from and says which names were merged.
    assert importer.main(["--events", str(events), "--items", str(items), "--lake", str(lake)]) == 1  # strict: 1/5 bad
    importer.main(["--events", str(events), "--items", str(_write(tmp_path, "ok.csv", NAMED_ITEMS.replace(
        "s7,Lumen,&&,Decor,Lighting,Table Lamps,40\n", ""))), "--lake", str(lake)])
    out = capsys.readouterr().out
    assert ("divisions 2 (home_decor <- \"Home & Decor\", womens_apparel <- \"Women's Apparel\", "
            "\"womens apparel\")") in out
    assert ("note: the division names \"Women's Apparel\", \"womens apparel\" have the same key womens_apparel: "
            "they were merged into one division.") in out

    # The fallbacks built from that catalogue (a launch's products carry its division).
    products = spark.createDataFrame([(k, row["division"], f"k{k}", f"c{k}", float(k))
                                      for k, row in enumerate(catalog, start=1)],
                                     "subclass_brand_id int, division string, subclass_key string, class_key string, "
                                     "score double")
    fallbacks = {row.member_id for row in fallback_affinity(products).collect()}
    assert fallbacks == {"__fallback__#womens_apparel", "__fallback__#home_decor", "__fallback__#all"}


def test_the_demo_worlds_and_the_uci_converters_divisions_are_keys():
    from flashfeed.demo.generator import DIVISION_PRODUCT_SHARE, MEMBER_PRIMARY_DIVISION_SHARE, TAXONOMY
    from flashfeed.ingest import uci

    names = {*TAXONOMY, *DIVISION_PRODUCT_SHARE, *MEMBER_PRIMARY_DIVISION_SHARE, uci.DEFAULT_DIVISION,
             *(division for division, _ in uci.DIVISION_RULES)}
    assert all(is_division_key(name) for name in names), sorted(n for n in names if not is_division_key(n))
