"""Evidence for `als.top_k` (not a test): how many affinities per member the collections need.

    .venv/bin/python bench/top_k_evidence.py --lake DIR --dt 2026-11-22 --name demo-10000 [--k 25 50 100 ...]

The daily model keeps each member's `top_k` best subclass-brands among everything saleable in
any launch window of the day. Each launch then keeps only those with products on sale in its
own window, applies the boost, the variety limit and the per-member cap, and builds the
collections. If top_k is too small, a member's card or full list comes out shorter than it
would with every candidate kept.

On a lake with raw data for day D, the script:
1. runs `features.py` for D if its features are missing;
2. runs `train_group.py` for every group with `als.top_k` and `als.top_k_products` raised above
   the number of candidates (a copy of the config), so the affinities hold every candidate
   (`--all-from-model`: and with the gate's margin at 1.0, so that every group serves its model);
3. runs `score_products.py` for every launch of D;
4. for each K and each launch: truncates the affinities to rank <= K and builds the collections
   with the pipeline's own transforms (boost, variety limit, cap, card and full limits), and
   counts the members whose six collections are all as full as with every candidate kept (the
   same number of card groups, the same number of products in the full lists).

Two ways of keeping fewer affinities are measured: a fixed K per member (`--k`), and the best
ones until their products on sale add up to P (`--products`, at most `als.top_k`; what the daily
model does with `als.top_k_products`). It prints, for each, the affinity rows kept per member
and the share of members whose collections stay full, and the smallest K and P for which at
least `--target` (99 %) of the members keep full cards and lists after every launch's window
filter, and writes
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

from flashfeed.core import calendar, lake  # noqa: E402
from flashfeed.core.config import config_path, load_config  # noqa: E402
from flashfeed.local.env import project_env  # noqa: E402
from spark_jobs.common import read_sql, spark_session  # noqa: E402
from spark_jobs.transforms import affinity as affinity_t  # noqa: E402
from spark_jobs.transforms import collections as collections_t  # noqa: E402

RESULTS = REPO / "bench" / "results"
ALL_CANDIDATES = 1_000_000


def spark_submit(job: str, args: list[str], env: dict) -> None:
    driver_memory = load_config()["spark"]["driver_memory"]
    cmd = ["spark-submit", "--master", "local[*]", "--conf", f"spark.driver.memory={driver_memory}",
           str(REPO / "spark_jobs" / job), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def prepare(root: str, day: str, env: dict, all_from_model: bool) -> None:
    """Features, every-candidate affinities and the products of every launch of the day."""
    if not Path(lake.success(lake.features(day, root))).exists():
        spark_submit("features.py", ["--dt", day], env)
    text = config_path().read_text()
    defaults = load_config()
    als_cfg = defaults["als"]
    if all_from_model:   # every group served from its model: personal rankings, the demanding case
        margin = defaults["evaluation"]["gate_ndcg_margin"]
        assert f"gate_ndcg_margin: {margin}" in text
        text = text.replace(f"gate_ndcg_margin: {margin}", "gate_ndcg_margin: 1.0", 1)
    for key in ("top_k", "top_k_products"):
        assert f"{key}: {als_cfg[key]}" in text
        text = text.replace(f"{key}: {als_cfg[key]}", f"{key}: {ALL_CANDIDATES}", 1)
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "flashfeed.yaml"
        config.write_text(text)
        groups = json.loads(Path(lake.features(day, root), "groups.json").read_text())["groups"]
        for group in groups:
            spark_submit("train_group.py", ["--dt", day, "--group", group, "--config", str(config)], env)
    for hhmm in calendar.launch_hhmms():
        spark_submit("score_products.py", ["--dt", day, "--launch", hhmm], env)


def truncated(spark, affinity, root: str, day: str, rule: tuple[str, int] | None, top_k: int):
    """A member's affinities as the daily model keeps them: rank <= K (`("k", K)`), or the best
    (at most `top_k`) until their products on sale add up to P (`("products", P)`); None: all."""
    if rule is None:
        return affinity
    kind, value = rule
    if kind == "k":
        return affinity.where(F.col("affinity_rank") <= value)
    products = spark.read.parquet(f"{lake.features(day, root)}/candidates")
    before = F.sum("products").over(Window.partitionBy("member_id").orderBy("affinity_rank")) - F.col("products")
    return (affinity.where(F.col("affinity_rank") <= top_k).join(F.broadcast(products), "subclass_brand_id")
            .withColumn("_before", before).where(F.col("_before") < value).drop("products", "_before"))


def collection_sizes(spark, root: str, day: str, hhmm: str, rule: tuple[str, int] | None, cfg: dict, top_k: int):
    """(member_id, <feed>_card_groups, <feed>_full_products for each feed) of one launch, built
    from each member's affinities kept by `rule` (`truncated`) with the pipeline's own transforms."""
    groups = json.loads(Path(lake.features(day, root), "groups.json").read_text())["groups"]
    affinity = truncated(spark, spark.read.parquet(*[lake.affinity(day, g, root) for g in groups]), root, day, rule,
                         top_k)
    products = spark.read.parquet(lake.products(day, hhmm, root))
    interest = spark.read.parquet(f"{lake.features(day, root)}/recent_interest")
    names = products.select("subclass_brand_id", "brand", "subclass", "subclass_key", "class_key").distinct()
    member_affinity = affinity.join(F.broadcast(names.select("subclass_brand_id", "subclass_key", "class_key")),
                                    "subclass_brand_id")
    boosted = affinity_t.apply_boost(member_affinity, interest, cfg["boost"])
    limited = affinity_t.variety_limit(spark, boosted, read_sql("variety_limit.sql"),
                                       cfg["max_subclass_brands_per_class"])
    order = Window.partitionBy("member_id").orderBy(F.desc("affinity"), F.asc("subclass_brand_id"))
    ranked = limited.withColumn("_n", F.row_number().over(order)).where(
        F.col("_n") <= cfg["subclass_brands_per_member"]).drop("_n").persist()
    sb_styles = F.broadcast(collections_t.styles_by_subclass_brand(products))
    sizes = affinity.select("member_id").distinct()
    for feed in lake.FEEDS:
        units = collections_t.feed_units(ranked, sb_styles, names, feed)
        card = collections_t.limit_groups(units, "card", cfg).groupBy("member_id").agg(
            F.count("*").alias(f"{feed}_card_groups"))
        full = collections_t.limit_groups(units, "full", cfg).groupBy("member_id").agg(
            F.sum("take").alias(f"{feed}_full_products"))
        sizes = sizes.join(card, "member_id", "left").join(full, "member_id", "left")
    return sizes.fillna(0)


SIZE_COLUMNS = [f"{feed}_{what}" for feed in lake.FEEDS for what in ("card_groups", "full_products")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--dt", required=True)
    parser.add_argument("--name", required=True, help="names the result file, e.g. demo-10000")
    parser.add_argument("--k", type=int, nargs="*", default=[10, 20, 30, 40, 50, 75, 100, 150, 200, 250],
                        help="fixed numbers of affinities per member")
    parser.add_argument("--products", type=int, nargs="*", default=[300, 450, 600, 900],
                        help="affinities per member until their products on sale add up to this many "
                             "(at most als.top_k)")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--skip-prepare", action="store_true", help="the lake already holds steps 1-3")
    parser.add_argument("--all-from-model", action="store_true",
                        help="in step 2, let every group pass the gate (margin 1.0): every member gets her own "
                             "model ranking instead of the group's popularity")
    args = parser.parse_args(argv)
    root = str(Path(args.lake).resolve())
    env = project_env({**os.environ, "FLASHFEED_LAKE": root})
    os.environ.update(env)
    if not args.skip_prepare:
        prepare(root, args.dt, env, args.all_from_model)
    config = load_config()
    cfg = config["collections"]
    spark = spark_session("flashfeed-top-k-evidence", config)
    candidates = spark.read.parquet(f"{lake.features(args.dt, root)}/candidates").count()
    table = {}
    rules = [("k", k) for k in args.k] + [("products", n) for n in args.products]
    top_k = config["als"]["top_k"]
    for hhmm in calendar.launch_hhmms():
        complete = collection_sizes(spark, root, args.dt, hhmm, None, cfg, top_k).persist()
        members = complete.count()
        full_card = complete.where(F.col("products_card_groups") >= cfg["card_groups"]).count()
        full_list = complete.where(F.col("products_full_products") >= cfg["products_per_member"]).count()
        print(f"launch {hhmm}: {members} members; with every candidate kept, {full_card / members:.1%} have a "
              f"products card of {cfg['card_groups']} groups and {full_list / members:.1%} a products list of "
              f"{cfg['products_per_member']} products", flush=True)
        table[hhmm] = {"members": members, "absolute_full_card": full_card / members,
                       "absolute_full_list": full_list / members, "by_rule": {}}
        for rule in rules:
            sizes = collection_sizes(spark, root, args.dt, hhmm, rule, cfg, top_k).alias("k").join(
                complete.alias("all"), "member_id")
            same = F.lit(True)
            for column in SIZE_COLUMNS:
                same = same & (F.col(f"k.{column}") == F.col(f"all.{column}"))
            kept = sizes.where(same).count()
            table[hhmm]["by_rule"][f"{rule[0]}={rule[1]}"] = kept / members
            print(f"  {rule[0]} {rule[1]}: {kept / members:.2%} of members keep all six collections as full as with "
                  "every candidate", flush=True)
        complete.unpersist()
    rows = {}
    groups = json.loads(Path(lake.features(args.dt, root), "groups.json").read_text())["groups"]
    affinity = spark.read.parquet(*[lake.affinity(args.dt, g, root) for g in groups]).persist()
    for rule in rules:   # what each rule keeps: affinity rows per member (the work of every launch)
        rows[f"{rule[0]}={rule[1]}"] = truncated(spark, affinity, root, args.dt, rule, top_k).count() / max(
            affinity.select("member_id").distinct().count(), 1)
    spark.stop()
    names = [f"{kind}={value}" for kind, value in rules]
    enough = [n for n in names if all(t["by_rule"][n] >= args.target for t in table.values())]
    smallest_k = min((int(n[2:]) for n in enough if n.startswith("k=")), default=None)
    smallest_products = min((int(n[9:]) for n in enough if n.startswith("products=")), default=None)
    print(f"\n{args.name}: {candidates} candidates; smallest K with >= {args.target:.0%} of members keeping full "
          f"cards and lists at every launch: {smallest_k}; smallest product coverage: {smallest_products}")
    print("\n| kept per member | affinity rows per member | " + " | ".join(f"launch {h}" for h in table) +
          " |\n|---|---|" + "---|" * len(table))
    for n in names:
        print(f"| {n} | {rows[n]:.1f} | " + " | ".join(f"{t['by_rule'][n]:.2%}" for t in table.values()) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"top-k-evidence-{args.name}.json").write_text(json.dumps(
        {"name": args.name, "dt": args.dt, "candidates": candidates, "target": args.target, "top_k": top_k,
         "smallest_k": smallest_k, "smallest_products": smallest_products, "rows_per_member": rows,
         "launches": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
