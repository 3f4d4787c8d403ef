"""Top-K benchmark (not a test): vectorised top-K among candidates vs the former cross join + window.

    .venv/bin/python bench/top_k_bench.py [--members 100000] [--candidates 400] [--rank 5] [--k 100 400]

Both paths score the same seeded random ALS-like factors (`--members` member vectors,
`--candidates` candidate vectors of `--rank` dimensions, stored as floats like Spark's ALS):
- former: in a local Spark session (local[*], the driver memory of include/flashfeed.yaml),
  every member crossed with every candidate, the dot product as a Spark expression, then
  `row_number()` over (member ORDER BY affinity DESC, subclass_brand_id) <= k, computed into
  Spark's `noop` sink (everything is computed, nothing is stored);
- vectorised: `spark_jobs/transforms/top_k.py` as train_group runs it on the driver: blocks of
  `als.score_block_members` members times the candidate matrix, partial sort, every row built.
Each path runs `--repeats` times; the script prints the medians and their ratio. It then checks
equal output with a full outer join: the members whose top-k set differs (0 expected), and the
rows whose rank differs. The former path multiplies the float factors in single precision
(Spark's float arithmetic), the vectorised one in double, so near-ties a few ulps apart may
swap places.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.sql import DataFrame, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from flashfeed.core.config import load_config  # noqa: E402
from spark_jobs.common import spark_session  # noqa: E402
from spark_jobs.transforms import top_k  # noqa: E402


def former_top_k(members: DataFrame, items: DataFrame, k: int) -> DataFrame:
    """The path top_k.py replaced (affinity.top_k_affinities before 2026-11): cross join, then a window."""
    dot = F.aggregate(F.zip_with(F.col("u.features"), F.col("i.features"), lambda x, y: x * y), F.lit(0.0),
                      lambda acc, v: acc + v)
    scored = members.alias("u").crossJoin(F.broadcast(items.alias("i"))).select(
        F.col("u.member_sk"), F.col("i.subclass_brand_id"), dot.alias("affinity"))
    order = Window.partitionBy("member_sk").orderBy(F.desc("affinity"), F.asc("subclass_brand_id"))
    return scored.withColumn("affinity_rank", F.row_number().over(order)).where(F.col("affinity_rank") <= k)


def factors(rows: int, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 factors): ALS stores its factors as floats."""
    rng = np.random.default_rng(seed)
    return rng.permutation(10 * rows)[:rows] + 1, rng.normal(scale=0.3, size=(rows, rank)).astype(np.float32)


def timed(run, repeats: int) -> tuple[list[float], object]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.monotonic()
        result = run()
        seconds.append(time.monotonic() - started)
    return seconds, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=400)
    parser.add_argument("--rank", type=int, default=5)
    parser.add_argument("--k", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    config = load_config()
    spark = spark_session("flashfeed-top-k-bench", config)
    block = config["als"]["score_block_members"]
    member_ids, member_matrix = factors(args.members, args.rank, args.seed)
    item_ids, item_matrix = factors(args.candidates, args.rank, args.seed + 1)
    order = np.argsort(item_ids)
    item_ids, item_matrix = item_ids[order], item_matrix[order]
    members = spark.createDataFrame(pd.DataFrame({"member_sk": member_ids.astype(np.int32),
                                                  "features": list(member_matrix)}),
                                    "member_sk int, features array<float>").repartition(
        spark.sparkContext.defaultParallelism * 2).persist()
    items = spark.createDataFrame(pd.DataFrame({"subclass_brand_id": item_ids.astype(np.int32),
                                                "features": list(item_matrix)}),
                                  "subclass_brand_id int, features array<float>").persist()
    members.count(), items.count()
    local = pd.DataFrame({"member_id": member_ids.astype(str), "rated_items": [[]] * len(member_ids),
                          "rated_values": [[]] * len(member_ids), "features": list(member_matrix)})
    print(f"{args.members:,} members x {args.candidates:,} candidates, rank {args.rank}, "
          f"blocks of {block} members, {args.repeats} repeats", flush=True)
    print("| k | former cross join + window (Spark), s | vectorised (numpy blocks), s | ratio | rows | "
          "members whose top-k set differs | rows ranked differently |")
    print("|---|---|---|---|---|---|---|")
    for k in args.k:
        former = former_top_k(members, items, k)
        former_s, _ = timed(lambda former=former: former.write.format("noop").mode("overwrite").save(), args.repeats)
        vectorised_s, blocks = timed(lambda k=k: list(top_k.top_k_rows(local, item_ids, item_matrix, k, block)),
                                     args.repeats)
        new = pd.concat(blocks)[["member_id", "subclass_brand_id", "affinity_rank"]]
        new["member_sk"] = new["member_id"].astype(np.int64)
        old = former.select("member_sk", "subclass_brand_id", "affinity_rank").toPandas()
        joined = old.merge(new[["member_sk", "subclass_brand_id", "affinity_rank"]],
                           on=["member_sk", "subclass_brand_id"], how="outer", suffixes=("_former", "_new"),
                           indicator=True)
        set_differs = joined.loc[joined["_merge"] != "both", "member_sk"].nunique()
        rank_differs = int((joined["affinity_rank_former"] != joined["affinity_rank_new"]).sum())
        ratio = statistics.median(former_s) / statistics.median(vectorised_s)
        print(f"| {k} | {statistics.median(former_s):.1f} ({', '.join(f'{s:.1f}' for s in former_s)}) | "
              f"{statistics.median(vectorised_s):.1f} ({', '.join(f'{s:.1f}' for s in vectorised_s)}) | "
              f"**{ratio:.0f}x** | {len(new):,} | {set_differs} | {rank_differs} |", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
