"""Evidence for `als.top_k` (not a test): how many affinities per member the collections need.

    .venv/bin/python bench/top_k_evidence.py --lake DIR --dt 2026-11-22 --name demo-10000 [--k 25 50 100 ...]

The daily model keeps each member's `top_k` best subclass-brands among everything saleable in
any launch window of the day. Each launch then keeps only those with products on sale in its
own window, applies the boost, the variety limit and the per-member cap, and builds the
collections. If top_k is too small, a member's card or full list comes out shorter than it
would with every candidate kept.

On a lake with raw data for day D, the script:
1. runs `features.py` for D if its features are missing;
2. runs `train_group.py` for every group with `als.top_k` raised above the number of
   candidates (a copy of the config), so the affinities hold every candidate;
3. runs `score_products.py` for every launch of D;
4. for each K and each launch: truncates the affinities to rank <= K and builds the products
   collections with the pipeline's own transforms (boost, variety limit, cap, card and full
   limits), and counts the members whose card has as many groups and whose full list as many
   products as with every candidate kept.

It prints the table and the smallest K for which at least `--target` (99 %) of the members keep
a full card and a full products list after every launch's window filter, and writes
`bench/results/top-k-evidence-<name>.json`. Steps 1-3 overwrite the day's partitions of that lake.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyspark.sql import Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from flashfeed import calendar, lake  # noqa: E402
from flashfeed.config import config_path, load_config  # noqa: E402
from flashfeed.env import project_env  # noqa: E402
from spark_jobs.common import read_sql, spark_session  # noqa: E402
from spark_jobs.transforms import affinity as affinity_t  # noqa: E402
from spark_jobs.transforms import collections as collections_t  # noqa: E402

RESULTS = REPO / "bench" / "results"
ALL_CANDIDATES = 1_000_000


def spark_submit(job: str, args: list[str], env: dict) -> None:
    cmd = ["spark-submit", "--master", "local[*]", "--conf", f"spark.driver.memory={load_config()['spark']['driver_memory']}",
           str(REPO / "spark_jobs" / job), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def prepare(root: str, day: str, env: dict) -> None:
    """Features, every-candidate affinities and the products of every launch of the day."""
    if not Path(lake.success(lake.features(day, root))).exists():
        spark_submit("features.py", ["--dt", day], env)
    text = config_path().read_text()
    default_k = load_config()["als"]["top_k"]
    assert f"top_k: {default_k}" in text
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "flashfeed.yaml"
        config.write_text(text.replace(f"top_k: {default_k}", f"top_k: {ALL_CANDIDATES}", 1))
        groups = json.loads(Path(lake.features(day, root), "groups.json").read_text())["groups"]
        for group in groups:
            spark_submit("train_group.py", ["--dt", day, "--group", group, "--config", str(config)], env)
    for hhmm in calendar.launch_hhmms():
        spark_submit("score_products.py", ["--dt", day, "--launch", hhmm], env)


def collection_sizes(spark, root: str, day: str, hhmm: str, k: int | None, cfg: dict):
    """(member_id, card_groups, full_products) of the products collections of one launch, built
    from each member's affinities of rank <= k (None: all)."""
    groups = json.loads(Path(lake.features(day, root), "groups.json").read_text())["groups"]
    affinity = spark.read.parquet(*[lake.affinity(day, g, root) for g in groups])
    if k is not None:
        affinity = affinity.where(F.col("affinity_rank") <= k)
    products = spark.read.parquet(lake.products(day, hhmm, root))
    interest = spark.read.parquet(f"{lake.features(day, root)}/recent_interest")
    names = products.select("subclass_brand_id", "brand", "subclass", "subclass_key", "class_key").distinct()
    member_affinity = affinity.join(F.broadcast(names.select("subclass_brand_id", "subclass_key", "class_key")),
                                    "subclass_brand_id")
    boosted = affinity_t.apply_boost(member_affinity, interest, float(cfg["boost"]))
    limited = affinity_t.variety_limit(spark, boosted, read_sql("variety_limit.sql"),
                                       int(cfg["max_subclass_brands_per_class"]))
    order = Window.partitionBy("member_id").orderBy(F.desc("affinity"), F.asc("subclass_brand_id"))
    ranked = limited.withColumn("_n", F.row_number().over(order)).where(
        F.col("_n") <= int(cfg["subclass_brands_per_member"])).drop("_n")
    units = collections_t.feed_units(ranked, F.broadcast(collections_t.styles_by_subclass_brand(products)), names,
                                     "products")
    card = collections_t.limit_groups(units, "card", cfg).groupBy("member_id").agg(F.count("*").alias("card_groups"))
    full = collections_t.limit_groups(units, "full", cfg).groupBy("member_id").agg(
        F.sum(F.size("styles")).alias("full_products"))
    return affinity.select("member_id").distinct().join(card, "member_id", "left").join(full, "member_id", "left").fillna(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--dt", required=True)
    parser.add_argument("--name", required=True, help="names the result file, e.g. demo-10000")
    parser.add_argument("--k", type=int, nargs="+", default=[25, 50, 75, 100, 150, 200, 300, 500])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--skip-prepare", action="store_true", help="the lake already holds steps 1-3")
    args = parser.parse_args(argv)
    root = str(Path(args.lake).resolve())
    env = project_env({**os.environ, "FLASHFEED_LAKE": root})
    os.environ.update(env)
    if not args.skip_prepare:
        prepare(root, args.dt, env)
    config = load_config()
    cfg = config["collections"]
    spark = spark_session("flashfeed-top-k-evidence", config)
    candidates = spark.read.parquet(f"{lake.features(args.dt, root)}/candidates").count()
    table = {}
    for hhmm in calendar.launch_hhmms():
        complete = collection_sizes(spark, root, args.dt, hhmm, None, cfg).persist()
        members = complete.count()
        full_card = complete.where(F.col("card_groups") >= int(cfg["card_groups"])).count()
        full_list = complete.where(F.col("full_products") >= int(cfg["products_per_member"])).count()
        print(f"launch {hhmm}: {members} members; with every candidate kept, {full_card / members:.1%} have a "
              f"card of {cfg['card_groups']} groups and {full_list / members:.1%} a list of "
              f"{cfg['products_per_member']} products", flush=True)
        table[hhmm] = {"members": members, "absolute_full_card": full_card / members,
                       "absolute_full_list": full_list / members, "by_k": {}}
        for k in args.k:
            sizes = collection_sizes(spark, root, args.dt, hhmm, k, cfg).alias("k").join(
                complete.alias("all"), "member_id")
            kept = sizes.where((F.col("k.card_groups") == F.col("all.card_groups")) &
                               (F.col("k.full_products") == F.col("all.full_products"))).count()
            table[hhmm]["by_k"][k] = kept / members
            print(f"  K {k}: {kept / members:.2%} of members keep a full card and a full products list", flush=True)
        complete.unpersist()
    spark.stop()
    enough = [k for k in args.k if all(t["by_k"][k] >= args.target for t in table.values())]
    chosen = min(enough) if enough else None
    print(f"\n{args.name}: {candidates} candidates; smallest K with >= {args.target:.0%} of members keeping a "
          f"full card and products list at every launch: {chosen}")
    print("\n| K | " + " | ".join(f"launch {h}" for h in table) + " |\n|---|" + "---|" * len(table))
    for k in args.k:
        print(f"| {k} | " + " | ".join(f"{t['by_k'][k]:.2%}" for t in table.values()) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"top-k-evidence-{args.name}.json").write_text(json.dumps(
        {"name": args.name, "dt": args.dt, "candidates": candidates, "target": args.target, "chosen_k": chosen,
         "launches": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
