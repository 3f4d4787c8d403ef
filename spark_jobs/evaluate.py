"""Offline evaluation: popularity vs one global ALS vs per-group ALS, with and without the boost.

Reads   raw/events of the look-back days before D, raw/catalog/dt=D (D: --dt, default the
        newest catalog partition of the lake)
Writes  --out metrics.json, and a table on stdout

    flashfeed evaluate --lake URI --out metrics.json [--split time --holdout-days N]
    flashfeed evaluate --lake URI --out metrics.json --split stratified --ratio 0.75 --seed S

The split, the relevant items and the metrics are defined in spark_jobs/transforms/evaluation.py
and flashfeed/metrics.py. Member groups are formed from the training part with the pipeline's
own rules; each group's ALS uses its per-group config (`als.group_overrides`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flashfeed import lake
from flashfeed.config import group_settings, lake_root, load_config
from flashfeed.metrics import METRICS
from spark_jobs.common import LakeFS, get_logger, read_raw, spark_session
from spark_jobs.transforms import als
from spark_jobs.transforms import catalog as catalog_t
from spark_jobs.transforms import cleaning, evaluation, groups, ratings

log = get_logger("evaluate")
MODELS = ("popularity", "global_als", "group_als", "group_als_boosted")


@dataclass
class Prepared:
    """One split of a lake, ready for any model."""
    train_ratings: DataFrame    # member_id, member_sk, group, subclass_brand_id, rating
    relevant: DataFrame         # member_id, subclass_brand_id (evaluated members only)
    seen: DataFrame | None      # excluded from rankings (None: nothing excluded)
    interest: DataFrame         # member_id, subclass_key: recent browsed-not-bought (the boost's input)
    item_subclass: DataFrame    # subclass_brand_id, subclass_key
    candidates: DataFrame | None  # subclass_brand_id that may be ranked (None: every item)
    split: dict                 # what metrics.json reports about the split


def newest_catalog_date(root: str) -> date:
    """The newest raw/catalog/dt=… partition with _SUCCESS: the default evaluation date."""
    fs, base = lake.filesystem(f"{root}/raw/catalog")
    days = sorted(entry.rstrip("/").rsplit("dt=", 1)[-1] for entry in fs.ls(base, detail=False) if "dt=" in entry)
    for day in reversed(days):
        if fs.exists(f"{base}/dt={day}/{lake.SUCCESS}"):
            return date.fromisoformat(day)
    raise FileNotFoundError(f"no complete raw/catalog partition under {root}; import or generate data first")


def prepare(spark: SparkSession, config: dict, root: str, dt: date, split: str, *, holdout_days: int,
            ratio: float, seed: int, exclude_seen: bool = True, live_only: bool = True) -> Prepared:
    """Clean the events before D, split them, and build training ratings with member groups.

    `live_only`: rank only subclass-brands that someone interacted with in the test part,
    i.e. that were on sale then, as the pipeline ranks only subclass-brands on sale in the
    launch window. That tells the models what was available, never what a member chose."""
    from spark_jobs.features import read_daily

    feats = config["features"]
    fs = LakeFS(spark)
    cutoff = datetime.combine(dt, datetime.min.time(), timezone.utc)
    days = [dt - timedelta(days=i) for i in range(1, int(feats["lookback_days"]) + 1)]
    catalog = catalog_t.with_subclass_brand(read_raw(spark, fs, "catalog", dt, root)).cache()
    clean, _ = cleaning.clean_events(read_daily(spark, fs, "events", days, root), catalog,
                                     config["cleaning"]["event_types"], cutoff)
    clean = clean.persist()

    if split == "time":
        train, test = evaluation.time_split(clean, holdout_days)
        described = {"type": "time", "holdout_days": holdout_days}
    elif split == "stratified":
        # Split per subclass-brand; the pipeline's transforms below add the keys themselves.
        train, test = (part.select(*clean.columns) for part in
                       evaluation.stratified_split(evaluation.with_keys(clean, catalog), ratio, seed))
        described = {"type": "stratified", "ratio": ratio, "seed": seed}
    else:
        raise ValueError(f"unknown split {split!r}: use time or stratified")
    train = train.persist()
    weights = feats["event_weights"]
    rated = ratings.implicit_ratings(train, catalog, weights)
    members, grouping, _ = groups.member_groups(rated, train, catalog_t.subclass_brands(catalog), feats)
    # Checkpointed: every model and grid point builds on these, and their plans would grow huge.
    train_ratings = rated.join(members.select("member_id", "member_sk", "group"), "member_id").localCheckpoint()
    test_ratings = ratings.implicit_ratings(test, catalog, weights)
    relevant = evaluation.relevant_items(train_ratings, test_ratings, exclude_seen).localCheckpoint()
    candidates = test_ratings.select("subclass_brand_id").distinct().localCheckpoint() if live_only else None
    newest_train = train.agg(F.max("occurred_at")).first()[0]
    interest = groups.recent_interest(train, catalog, newest_train - timedelta(days=int(feats["recent_days"])),
                                      int(config["collections"]["boost_top_subclasses"])).localCheckpoint()
    described.update({
        "dt": dt.isoformat(), "exclude_seen": exclude_seen,
        "candidates": "live in the test part" if live_only else "all",
        "train_events": train.count(), "test_events": test.count(),
        "members_with_training": train_ratings.select("member_id").distinct().count(),
        "members_evaluated": relevant.select("member_id").distinct().count(),
        "relevant_pairs": relevant.count(), "groups": grouping["sizes"],
    })
    log.info("split %s: %d training events, %d test events; %d members evaluated (%d relevant pairs)",
             split, described["train_events"], described["test_events"], described["members_evaluated"],
             described["relevant_pairs"])
    return Prepared(train_ratings=train_ratings, relevant=relevant,
                    seen=train_ratings.select("member_id", "subclass_brand_id") if exclude_seen else None,
                    interest=interest, item_subclass=catalog.select("subclass_brand_id", "subclass_key").distinct(),
                    candidates=candidates, split=described)


def group_scores(prepared: Prepared, config: dict, group: str, params: dict | None = None) -> DataFrame:
    """Scores of one group's ALS for that group's evaluated members."""
    group_ratings = prepared.train_ratings.where(F.col("group") == group)
    model = als.fit(group_ratings, params or group_settings(config, "als", group))
    evaluated = prepared.relevant.select("member_id").distinct().join(
        group_ratings.select("member_id").distinct(), "member_id", "left_semi")
    return als.member_scores(model, group_ratings, evaluated)


def run_models(spark: SparkSession, prepared: Prepared, config: dict, k: int,
               models: tuple[str, ...] = MODELS) -> dict[str, dict]:
    """Metrics at k of each model, on the same evaluated members."""
    evaluated = prepared.relevant.select("member_id").distinct()
    results: dict[str, dict] = {}
    rankings: dict[str, DataFrame] = {}
    if "popularity" in models:
        rankings["popularity"] = evaluation.popularity_scores(prepared.train_ratings, evaluated, k,
                                                              prepared.candidates)
    if "global_als" in models:
        started = time.monotonic()
        model = als.fit(prepared.train_ratings, group_settings(config, "als", "global"))
        rankings["global_als"] = als.member_scores(model, prepared.train_ratings, evaluated)
        log.info("global ALS trained in %.1f s", time.monotonic() - started)
    if {"group_als", "group_als_boosted"} & set(models):
        group_keys = sorted(r["group"] for r in prepared.train_ratings.select("group").distinct().collect())
        per_group = []
        for group in group_keys:
            started = time.monotonic()
            per_group.append(group_scores(prepared, config, group).localCheckpoint())
            log.info("group %s ALS trained and scored in %.1f s", group, time.monotonic() - started)
        scores = per_group[0]
        for more in per_group[1:]:
            scores = scores.unionByName(more)
        if "group_als" in models:
            rankings["group_als"] = scores
        if "group_als_boosted" in models:
            with_subclass = scores.join(F.broadcast(prepared.item_subclass), "subclass_brand_id")
            rankings["group_als_boosted"] = evaluation.boosted(
                with_subclass, prepared.interest, float(config["collections"]["boost"])).drop("subclass_key")
    for name in models:
        top = evaluation.top_k_unseen(evaluation.only(rankings[name], prepared.candidates), prepared.seen, k)
        results[name] = evaluation.evaluate(top, prepared.relevant, k)
        log.info("%s: %s", name, ", ".join(f"{m} {results[name][m]:.4f}" for m in METRICS))
    return results


def table(results: dict[str, dict], k: int) -> str:
    """The stdout table: one row per model."""
    header = f"{'model':<20}" + "".join(f"{m.replace('@k', f'@{k}'):>14}" for m in METRICS) + f"{'members':>10}"
    rows = [header, "-" * len(header)]
    for name, metrics in results.items():
        rows.append(f"{name:<20}" + "".join(f"{metrics[m]:>14.4f}" for m in METRICS) + f"{metrics['members']:>10}")
    return "\n".join(rows)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Arguments shared by `flashfeed evaluate` and `flashfeed tune`."""
    settings = load_config()["evaluation"]
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--lake", default=None, help="lake root URI (default: FLASHFEED_LAKE)")
    p.add_argument("--dt", default=None, help="model date D (default: the newest raw/catalog partition)")
    p.add_argument("--split", choices=("time", "stratified"), default="time",
                   help="time: hold out each member's last --holdout-days; stratified: per-member random split")
    p.add_argument("--holdout-days", type=int, default=int(settings["holdout_days"]))
    p.add_argument("--ratio", type=float, default=float(settings["stratified_ratio"]),
                   help="stratified: share of each member's subclass-brands kept for training")
    p.add_argument("--seed", type=int, default=int(settings["seed"]))
    p.add_argument("--k", type=int, default=int(settings["k"]), help="metrics at k")
    p.add_argument("--include-seen", action="store_true",
                   help="rank (and count as relevant) subclass-brands the member has in training")
    p.add_argument("--all-items", action="store_true",
                   help="rank every subclass-brand, not only those live (interacted with by anyone) in the test part")
    return p


def open_lake(args: argparse.Namespace, app: str) -> tuple[SparkSession, dict, str, date]:
    config = load_config()
    root = (args.lake or lake_root()).rstrip("/")
    if "://" not in root:
        root = str(Path(root).resolve())     # Spark and fsspec agree on an absolute local path
    dt = date.fromisoformat(args.dt) if args.dt else newest_catalog_date(root)
    if not 0 < args.ratio < 1:
        raise SystemExit(f"--ratio must be between 0 and 1, got {args.ratio}")
    if args.k < 1 or args.holdout_days < 1:
        raise SystemExit("--k and --holdout-days must be at least 1")
    return spark_session(app, config), config, root, dt


def main(argv: list[str] | None = None) -> int:
    p = parser("flashfeed evaluate", __doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spark, config, root, dt = open_lake(args, "flashfeed-evaluate")
    log.info("evaluating %s on %s, models %s, k=%d", root, dt, ", ".join(args.models), args.k)
    prepared = prepare(spark, config, root, dt, args.split, holdout_days=args.holdout_days, ratio=args.ratio,
                       seed=args.seed, exclude_seen=not args.include_seen, live_only=not args.all_items)
    results = run_models(spark, prepared, config, args.k, tuple(args.models))
    report = {"k": args.k, "split": prepared.split, "lake": root, "models": results}
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(table(results, args.k))
    print(f"\nmetrics written to {args.out}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
