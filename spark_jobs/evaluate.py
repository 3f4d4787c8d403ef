"""Offline evaluation: every candidate of the daily quality gate, and what the gate would serve.

Reads   raw/events before D (default: all imported history; --lookback-days N: the N days
        before D), raw/catalog/dt=D (D: --dt, default the newest catalog partition of the lake)
Writes  --out metrics.json (overall and per group), and a table on stdout

    flashfeed evaluate --lake URI --out metrics.json [--split time --holdout-days N]
    flashfeed evaluate --lake URI --out metrics.json --split stratified --ratio 0.75 --seed S
    flashfeed evaluate --lake URI --out metrics.json --protocol msr

Each member's events are split three ways. time: her last --holdout-days are the test part,
the --holdout-days before them the validation part, the rest the fit part. stratified: --ratio
of her subclass-brands train, the rest are the test part, and the training part is split the
same way into fit and validation. `--protocol msr` is the Microsoft Recommenders protocol:
stratified 75/25 per member, every subclass-brand ranked, seen ones excluded.

Member groups are formed from the training part with the pipeline's rules. Per group, the
candidates of the daily gate (spark_jobs/transforms/candidates.py) are fit on the fit part; the
blend's weight and the gate's choice are made on the validation part; then every model is fit
again on the whole training part and reported on the test part, on the same members, with
`served` (each group's choice) and `served_boosted` (the choice with the collections' boost).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flashfeed.core import lake
from flashfeed.core.config import group_settings, lake_root, load_config
from flashfeed.quality.metrics import METRICS
from spark_jobs.common import LakeFS, get_logger, read_raw, spark_session
from spark_jobs.transforms import als, candidates, cleaning, evaluation, groups, ratings
from spark_jobs.transforms import catalog as catalog_t

log = get_logger("evaluate")
SERVED, SERVED_BOOSTED = "served", "served_boosted"
REPORTED = (candidates.POPULARITY, *candidates.MODELS, SERVED, SERVED_BOOSTED)
GLOBAL = "global"   # the global ALS's settings: als.group_overrides.global


@dataclass
class Prepared:
    """One three-way split of a lake, on the driver."""
    # member_sk, group, subclass_brand_id, part (train/validation/test), rating, recent_rating
    ratings: pd.DataFrame
    live: pd.DataFrame          # subclass_brand_id, part: what may be ranked in each part
    boost_items: pd.Series      # per member_sk: the subclass-brands of her recently browsed-not-bought subclasses
    exclude_seen: bool
    split: dict                 # what metrics.json reports about the split


def imported_days(fs: LakeFS, root: str, dt: date) -> list[date]:
    """Every day before D with a complete raw/events partition, newest first."""
    days = [date.fromisoformat(name[len("dt="):]) for name in fs.list_dirs(f"{root}/raw/events")
            if name.startswith("dt=")]
    return sorted((d for d in days if d < dt and fs.exists(lake.success(lake.raw("events", d, root)))), reverse=True)


def newest_catalog_date(root: str) -> date:
    """The newest raw/catalog/dt=… partition with _SUCCESS: the default evaluation date."""
    fs, base = lake.filesystem(f"{root}/raw/catalog")
    days = sorted(entry.rstrip("/").rsplit("dt=", 1)[-1] for entry in fs.ls(base, detail=False) if "dt=" in entry)
    for day in reversed(days):
        if fs.exists(f"{base}/dt={day}/{lake.SUCCESS}"):
            return date.fromisoformat(day)
    raise FileNotFoundError(f"no complete raw/catalog partition under {root}; import or generate data first")


def mark_parts(clean: DataFrame, catalog: DataFrame, split: str, holdout_days: int, ratio: float,
               seed: int) -> DataFrame:
    """Clean events with `part`: train (the fit part), validation or test (module docstring)."""
    if split == "time":
        return evaluation.mark_gate_parts(clean, holdout_days, holdout_days)
    if split != "stratified":
        raise ValueError(f"unknown split {split!r}: use time or stratified")
    # Split per subclass-brand; the pipeline's transforms add the keys themselves.
    keyed = evaluation.with_keys(clean, catalog)
    training, test = evaluation.stratified_split(keyed, ratio, seed)
    fit, validation = evaluation.stratified_split(training, ratio, seed + 1)
    return (fit.withColumn("part", F.lit("train")).unionByName(validation.withColumn("part", F.lit("validation")))
            .unionByName(test.withColumn("part", F.lit("test"))).select(*clean.columns, "part"))


def prepare(spark: SparkSession, config: dict, root: str, dt: date, args: argparse.Namespace) -> Prepared:
    """Clean the events before D, split them three ways, rate them and form member groups."""
    from spark_jobs.features import read_daily

    feats = config["features"]
    fs = LakeFS(spark)
    cutoff = datetime.combine(dt, datetime.min.time(), timezone.utc)
    days = ([dt - timedelta(days=i) for i in range(1, args.lookback_days + 1)] if args.lookback_days
            else imported_days(fs, root, dt))
    if not days:
        raise SystemExit(f"no complete raw/events partition before {dt} under {root}: import events first")
    catalog = catalog_t.with_subclass_brand(read_raw(spark, fs, "catalog", dt, root)).cache()
    clean, _ = cleaning.clean_events(read_daily(spark, fs, "events", days, root), catalog,
                                     config["cleaning"]["event_types"], cutoff)
    marked = mark_parts(clean, catalog, args.split, args.holdout_days, args.ratio, args.seed).persist()
    training = marked.where(F.col("part") != "test")
    # Cached: member groups and the driver's copy both read the ratings (one pass over the events).
    rated = ratings.implicit_ratings(marked, catalog, feats["event_weights"], by=("part",),
                                     recency=(cutoff, feats["history_half_life_days"])).persist()
    trained = rated.where(F.col("part") != "test").groupBy("member_id", "subclass_brand_id").agg(
        F.sum("rating").alias("rating"))
    members, grouping, _ = groups.member_groups(trained, training, catalog_t.subclass_brands(catalog), feats)
    by_part = rated.join(members.select("member_id", "member_sk", "group"), "member_id").drop("member_id").toPandas()
    if args.all_items:
        items = np.unique(by_part["subclass_brand_id"])
        live = pd.DataFrame({"subclass_brand_id": np.tile(items, 3), "part": np.repeat(["train", "validation", "test"],
                                                                                       len(items))})
    else:
        # Only what someone rated in a part was on sale then, as the pipeline ranks only what is on sale.
        live = by_part[["subclass_brand_id", "part"]].drop_duplicates()
    newest_training = training.agg(F.max("occurred_at")).first()[0]
    interest = groups.recent_interest(training, catalog, newest_training - timedelta(days=feats["recent_days"]),
                                      config["collections"]["boost_top_subclasses"])
    boost_pairs = (interest.join(members.select("member_id", "member_sk"), "member_id")
                   .join(catalog.select("subclass_key", "subclass_brand_id").distinct(), "subclass_key")
                   .select("member_sk", "subclass_brand_id").distinct().toPandas())
    boost_items = boost_pairs.sort_values("subclass_brand_id").groupby("member_sk")["subclass_brand_id"].apply(
        lambda s: s.to_numpy(dtype=np.int64))
    counts = by_part.groupby("part").size().to_dict()
    described = {"type": args.split, "dt": dt.isoformat(), "history_days": len(days),
                 "oldest_day": min(days).isoformat(), "exclude_seen": args.exclude_seen,
                 "candidates": "all" if args.all_items else "live in the part",
                 "ratings_by_part": {part: int(n) for part, n in counts.items()},
                 "members_with_training": int(by_part.loc[by_part["part"] != "test", "member_sk"].nunique()),
                 "groups": grouping["sizes"]}
    described.update({"holdout_days": args.holdout_days} if args.split == "time" else
                     {"ratio": args.ratio, "seed": args.seed})
    log.info("split %s of %d days (%s .. %s): ratings by part %s; %d members with training in %d groups", args.split,
             len(days), min(days), max(days), described["ratings_by_part"], described["members_with_training"],
             len(grouping["sizes"]))
    marked.unpersist()
    rated.unpersist()
    return Prepared(by_part, live, boost_items, args.exclude_seen, described)


def fit_items(spark: SparkSession, frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Item factors of one ALS fit of ratings (member_sk, subclass_brand_id, rating)."""
    blocks, _ = als.blocks_for(frame["member_sk"].nunique(), params)
    return als.fitted_factors(lambda: spark, frame, params, blocks)[1]


def with_boost_items(stage: candidates.Stage, boost_items: pd.Series) -> candidates.Stage:
    stage.members["boost_items"] = [boost_items.get(m, np.zeros(0, dtype=np.int64))
                                    for m in stage.members["member_sk"]]
    return stage


def evaluate_groups(spark: SparkSession, prepared: Prepared, config: dict, settings: candidates.Settings,
                    boost: float) -> dict[str, dict]:
    """Per group: every candidate on both parts, the choice made on validation, and on the test
    part `served` and `served_boosted`."""
    fit = prepared.ratings[prepared.ratings["part"] == "train"]
    training = candidates.summed(prepared.ratings[prepared.ratings["part"] != "test"])
    global_params = group_settings(config, "als", GLOBAL)
    started = time.monotonic()
    global_fit, global_training = fit_items(spark, fit, global_params), fit_items(spark, training, global_params)
    log.info("global ALS fit on the fit part (%d ratings) and on the training part (%d) in %.1f s", len(fit),
             len(training), time.monotonic() - started)
    results = {}
    for group, rows in sorted(prepared.ratings.groupby("group")):
        started = time.monotonic()
        params = group_settings(config, "als", group)
        parts = candidates.GateParts(rows, prepared.live)
        validation, test = parts.stages(prepared.exclude_seen)
        if test.members.empty:
            log.info("group %s: no member with a test part, skipped", group)
            continue
        with_boost_items(test, prepared.boost_items)
        on_fit = {candidates.GROUP_ALS: (fit_items(spark, parts.part("train"), params), params),
                  candidates.GLOBAL_ALS: (global_fit, global_params)}
        on_training = {candidates.GROUP_ALS: (fit_items(spark, candidates.summed(parts.part("train", "validation")),
                                                        params), params),
                       candidates.GLOBAL_ALS: (global_training, global_params)}
        result, test_scorers = candidates.gate(validation, test, on_fit, settings, on_training, choose_on="validation")
        served = result["chosen"] if result["passed"] else candidates.POPULARITY
        result["test"][SERVED] = result["test"][served]
        result["test"][SERVED_BOOSTED] = candidates.judged(
            test, candidates.boosted_scorer(test_scorers[served], boost, test.item_ids), settings.k, settings.block,
            settings.exclude_seen)
        result["served"] = served
        results[group] = result
        log.info("group %s (%d test members) in %.1f s: serves %s; NDCG@%d validation/test: %s", group,
                 len(test.members), time.monotonic() - started, served, settings.k, candidates.summary_line(result))
    return results


def overall(per_group: dict[str, dict], part: str) -> dict[str, dict]:
    """Member-weighted means over the groups of each reported model's metrics on `part`."""
    totals: dict[str, dict] = {}
    for result in per_group.values():
        for name, metrics in result[part].items():
            entry = totals.setdefault(name, dict.fromkeys((*METRICS, "members"), 0.0))
            for metric in METRICS:
                entry[metric] += metrics[metric] * metrics["members"]
            entry["members"] += metrics["members"]
    return {name: {**{m: (t[m] / t["members"] if t["members"] else 0.0) for m in METRICS},
                   "members": int(t["members"])} for name, t in totals.items()}


def table(results: dict[str, dict], k: int) -> str:
    """The stdout table: one row per model, in REPORTED order."""
    header = f"{'model':<20}" + "".join(f"{m.replace('@k', f'@{k}'):>14}" for m in METRICS) + f"{'members':>10}"
    rows = [header, "-" * len(header)]
    for name in [n for n in REPORTED if n in results]:
        metrics = results[name]
        rows.append(f"{name:<20}" + "".join(f"{metrics[m]:>14.4f}" for m in METRICS) + f"{metrics['members']:>10}")
    return "\n".join(rows)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Arguments shared by `flashfeed evaluate` and `flashfeed tune`."""
    settings = load_config()["evaluation"]
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--lake", default=None, help="lake root URI (default: FLASHFEED_LAKE)")
    p.add_argument("--dt", default=None, help="model date D (default: the newest raw/catalog partition)")
    p.add_argument("--lookback-days", type=int, default=None,
                   help="evaluate the events of the N days before D (default: all imported history)")
    p.add_argument("--protocol", choices=("msr",), default=None,
                   help="msr: the Microsoft Recommenders protocol (stratified 75/25 per member, every item ranked, "
                        "seen items excluded); sets --split, --ratio and --all-items")
    p.add_argument("--split", choices=("time", "stratified"), default="time",
                   help="time: hold out each member's last --holdout-days; stratified: per-member random split")
    p.add_argument("--holdout-days", type=int, default=settings["holdout_days"])
    p.add_argument("--ratio", type=float, default=settings["stratified_ratio"],
                   help="stratified: share of each member's subclass-brands kept for training")
    p.add_argument("--seed", type=int, default=settings["seed"])
    p.add_argument("--k", type=int, default=settings["k"], help="metrics at k")
    seen = p.add_mutually_exclusive_group()
    seen.add_argument("--include-seen", dest="exclude_seen", action="store_false",
                      help="rank (and count as relevant) subclass-brands the member has in training, as the served "
                           "feeds do (default with --split time: evaluation.exclude_seen of the config)")
    seen.add_argument("--exclude-seen", dest="exclude_seen", action="store_true",
                      help="leave them out of rankings and relevant sets (default with --split stratified, whose "
                           "test part never holds a member's training subclass-brands)")
    p.set_defaults(exclude_seen=None)
    p.add_argument("--all-items", action="store_true",
                   help="rank every subclass-brand, not only those live (interacted with by anyone) in the part")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.protocol == "msr":
        args.split, args.ratio, args.all_items, args.exclude_seen = "stratified", 0.75, True, True
    if args.exclude_seen is None:
        args.exclude_seen = True if args.split == "stratified" else load_config()["evaluation"]["exclude_seen"]
    if not 0 < args.ratio < 1:
        raise SystemExit(f"--ratio must be between 0 and 1, got {args.ratio}")
    if args.k < 1 or args.holdout_days < 1 or (args.lookback_days is not None and args.lookback_days < 1):
        raise SystemExit("--k, --holdout-days and --lookback-days must be at least 1")
    return args


def open_lake(args: argparse.Namespace, app: str) -> tuple[SparkSession, dict, str, date]:
    config = load_config()
    root = (args.lake or lake_root()).rstrip("/")
    if "://" not in root:
        root = str(Path(root).resolve())     # Spark and fsspec agree on an absolute local path
    dt = date.fromisoformat(args.dt) if args.dt else newest_catalog_date(root)
    return spark_session(app, config), config, root, dt


def transform(spark: SparkSession, prepared: Prepared, config: dict, args: argparse.Namespace, root: str) -> dict:
    """The report: every group's candidates and choice, member-weighted means over the groups."""
    settings = candidates.settings_from(config, k=args.k, exclude_seen=prepared.exclude_seen)
    per_group = evaluate_groups(spark, prepared, config, settings, config["collections"]["boost"])
    return {"k": args.k, "protocol": args.protocol, "split": prepared.split, "lake": root,
            "models": overall(per_group, "test"), "validation": overall(per_group, "validation"),
            "served_by_group": {g: r["served"] for g, r in per_group.items()}, "groups": per_group}


def load(report: dict, out: str) -> None:
    """metrics.json, then the table on stdout."""
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(table(report["models"], report["k"]))
    print(f"\nserved per group (chosen on the validation part): "
          f"{', '.join(f'{g} {r}' for g, r in report['served_by_group'].items())}")
    print(f"metrics written to {out}")


def main(argv: list[str] | None = None) -> int:
    p = parser("flashfeed evaluate", __doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="metrics.json to write")
    args = parse(p, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spark, config, root, dt = open_lake(args, "flashfeed-evaluate")
    log.info("evaluating %s on %s (%s), k=%d", root, dt, args.protocol or f"{args.split} split", args.k)
    prepared = prepare(spark, config, root, dt, args)
    load(transform(spark, prepared, config, args, root), args.out)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
