"""Tuning: a grid of ALS rank, regParam and alpha per member group, on an offline split.

Reads   what `flashfeed evaluate` reads (raw/events before D, raw/catalog/dt=D)
Writes  --out results.csv (one row per group and grid point, plus each group's popularity
        baseline) and the same table as Markdown on stdout, best NDCG@k per group marked

    flashfeed tune --lake URI [--groups 13 21] [--rank 10 50] [--reg-param 0.01 0.1] [--alpha 0.05 1]

Copy a group's best row into `als.group_overrides` of include/flashfeed.yaml (or the
defaults when one setting wins everywhere): the evidence stays in the committed table.
"""
from __future__ import annotations

import csv
import itertools
import logging
import sys
import time

from pyspark.sql import functions as F

from flashfeed.config import group_settings, load_config
from flashfeed.metrics import METRICS
from spark_jobs.common import get_logger
from spark_jobs.evaluate import group_scores, open_lake, parser, prepare
from spark_jobs.transforms import evaluation

log = get_logger("tune")
GRID = ("rank", "reg_param", "alpha")


def main(argv: list[str] | None = None) -> int:
    grid = load_config()["evaluation"]["tune_grid"]
    p = parser("flashfeed tune", __doc__.splitlines()[0])
    p.add_argument("--groups", nargs="+", default=None, help="member groups to tune (default: all)")
    p.add_argument("--rank", nargs="+", type=int, default=grid["rank"])
    p.add_argument("--reg-param", nargs="+", type=float, default=grid["reg_param"])
    p.add_argument("--alpha", nargs="+", type=float, default=grid["alpha"])
    p.add_argument("--out", default="tune_results.csv", help="results table (CSV)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spark, config, root, dt = open_lake(args, "flashfeed-tune")
    prepared = prepare(spark, config, root, dt, args.split, holdout_days=args.holdout_days, ratio=args.ratio,
                       seed=args.seed, exclude_seen=not args.include_seen, live_only=not args.all_items)
    existing = sorted(r["group"] for r in prepared.train_ratings.select("group").distinct().collect())
    groups = args.groups or existing
    unknown = sorted(set(groups) - set(existing))
    if unknown:
        raise SystemExit(f"groups {unknown} do not exist in this split; groups: {existing}")
    points = list(itertools.product(args.rank, args.reg_param, args.alpha))
    log.info("tuning %d groups x %d grid points on %s (%s split)", len(groups), len(points), dt, args.split)

    rows = []
    for group in groups:
        members = prepared.train_ratings.where(F.col("group") == group).select("member_id").distinct()
        relevant = prepared.relevant.join(members, "member_id", "left_semi").persist()
        baseline = evaluation.top_k_unseen(evaluation.popularity_scores(
            prepared.train_ratings, relevant.select("member_id").distinct(), args.k, prepared.candidates),
            prepared.seen, args.k)
        rows.append({"group": group, "model": "popularity", "rank": "", "reg_param": "", "alpha": "",
                     **evaluation.evaluate(baseline, relevant, args.k), "seconds": ""})
        for rank, reg_param, alpha in points:
            params = {**group_settings(config, "als", group), "rank": rank, "reg_param": reg_param, "alpha": alpha}
            started = time.monotonic()
            scores = evaluation.only(group_scores(prepared, config, group, params), prepared.candidates)
            top = evaluation.top_k_unseen(scores, prepared.seen, args.k)
            metrics = evaluation.evaluate(top, relevant, args.k)
            rows.append({"group": group, "model": "als", "rank": rank, "reg_param": reg_param, "alpha": alpha,
                         **metrics, "seconds": round(time.monotonic() - started, 1)})
            log.info("group %s rank=%s regParam=%s alpha=%s: ndcg@k %.4f recall@k %.4f (%d members)",
                     group, rank, reg_param, alpha, metrics["ndcg@k"], metrics["recall@k"], metrics["members"])
        relevant.unpersist()

    columns = ["group", "model", *GRID, *METRICS, "members", "seconds"]
    with open(args.out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: (f"{row[c]:.4f}" if c in METRICS else row[c]) for c in columns})
    print(markdown(rows, args.k))
    print(f"\nresults written to {args.out} ({args.split} split of {dt}, k={args.k})")
    spark.stop()
    return 0


def markdown(rows: list[dict], k: int) -> str:
    """The results as a Markdown table; each group's best ALS NDCG@k is in bold."""
    best = {}
    for row in rows:
        if row["model"] == "als" and row["ndcg@k"] > best.get(row["group"], -1.0):
            best[row["group"]] = row["ndcg@k"]
    lines = [f"| group | model | rank | regParam | alpha | NDCG@{k} | recall@{k} | precision@{k} | MAP@{k} | MRR | members |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ndcg = f"{row['ndcg@k']:.4f}"
        if row["model"] == "als" and row["ndcg@k"] == best[row["group"]]:
            ndcg = f"**{ndcg}**"
        lines.append(f"| {row['group']} | {row['model']} | {row['rank']} | {row['reg_param']} | {row['alpha']} | {ndcg} "
                     f"| {row['recall@k']:.4f} | {row['precision@k']:.4f} | {row['map@k']:.4f} | {row['mrr']:.4f} "
                     f"| {row['members']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
