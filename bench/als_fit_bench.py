"""ALS fit benchmark (not a test): Spark's ALS against the same algorithm in numpy on the driver.

    .venv/bin/python bench/als_fit_bench.py --lake DIR --dt 2026-11-22 --name demo-10000 [--seeds 42 43 44]

For every group of the day, fits the group's ALS (its own settings) on the gate's training part
once per seed with Spark (`local[*]`, one session for all fits after one warm-up fit, whose
time is the JVM's warm-up every train_group task pays for a Spark fit, reported apart) and with
`als.fit_on_driver`, then judges each model as the daily quality gate judges group_als (NDCG@k
on the gate's test part, transforms/candidates.py). Prints per group the ratings, the NDCG@k of
each engine (mean over seeds and the seed-to-seed range) and the fit times; writes
`bench/results/als-fit-<name>.json`. Needs `features/dt=D` in the lake.

    .venv/bin/python bench/als_fit_bench.py --synthetic 1000000 3000000 10000000

times `als.fit_on_driver` alone (default `als` settings) on random ratings of those sizes, 25
per member over 5,000 subclass-brands (Zipf-like popularity), with the process's peak RSS: the
evidence for `als.driver_fit_max_ratings`.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from flashfeed.core import lake  # noqa: E402
from flashfeed.core.config import group_settings, load_config  # noqa: E402
from flashfeed.local.env import project_env  # noqa: E402
from spark_jobs.common import spark_session  # noqa: E402
from spark_jobs.train_group import read_gate  # noqa: E402
from spark_jobs.transforms import als, candidates  # noqa: E402
from spark_jobs.transforms.als import fitted_factors  # noqa: E402

SPARK_ONLY = {"driver_fit_max_ratings": -1}   # every fit goes to Spark's ALS
DRIVER_ONLY = {"driver_fit_max_ratings": 1 << 62}


def synthetic(sizes: list[int], params: dict, per_member: int = 25, items: int = 5000) -> None:
    rng = np.random.default_rng(1)
    print("| ratings | members | rank | fit on the driver, s | peak RSS of this process, GB |\n|---|---|---|---|---|")
    for size in sizes:
        members = size // per_member
        pairs = np.unique(np.repeat(np.arange(members, dtype=np.int64), per_member) * items
                          + rng.zipf(1.3, members * per_member) % items)
        member_index, item_index = pairs // items, pairs % items
        rating = rng.choice([3.0, 10.0, 30.0, 40.0, 43.0], len(pairs))
        started = time.monotonic()
        als.fit_on_driver(member_index, item_index, rating, members, items, params)
        seconds = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"| {len(pairs):,} | {members:,} | {params['rank']} | {seconds:.1f} | {peak:.2f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake")
    parser.add_argument("--dt")
    parser.add_argument("--name")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--synthetic", type=int, nargs="+", metavar="RATINGS",
                        help="time the driver fit alone on random ratings of these sizes")
    args = parser.parse_args(argv)
    if args.synthetic:
        synthetic(args.synthetic, load_config()["als"])
        return 0
    if not (args.lake and args.dt and args.name):
        parser.error("--lake, --dt and --name are required (or --synthetic)")
    root = str(Path(args.lake).resolve())
    os.environ.update(project_env({**os.environ, "FLASHFEED_LAKE": root}))
    config = load_config()
    settings = candidates.settings_from(config)
    k = settings.k
    features = lake.features(args.dt, root)
    groups = json.loads(Path(features, "groups.json").read_text())["groups"]

    spark = spark_session("flashfeed-als-fit-bench", config)
    spark.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="flashfeed-als-fit-"))
    rows, first_spark_fit = [], None
    for group in groups:
        params = group_settings(config, "als", group)
        ratings = lake.read_table(f"{features}/ratings/group={group}")
        gate = read_gate(features, group)
        if gate is None:
            continue
        train, (_, test) = gate.part("train"), gate.stages(settings.exclude_seen)
        blocks, _ = als.blocks_for(int(train["member_sk"].nunique()), params)
        result = {"group": group, "gate_train_ratings": len(train), "members": int(ratings["member_id"].nunique()),
                  "rank": params["rank"]}
        if first_spark_fit is None:   # the JVM's warm-up, reported apart from the table
            started = time.monotonic()
            fitted_factors(lambda: spark, train, {**params, **SPARK_ONLY}, blocks)
            first_spark_fit = time.monotonic() - started
        for engine, override in (("spark", SPARK_ONLY), ("driver", DRIVER_ONLY)):
            ndcg, seconds = [], []
            for seed in args.seeds:
                started = time.monotonic()
                _, items = fitted_factors(lambda: spark, train, {**params, **override, "seed": seed}, blocks)
                seconds.append(time.monotonic() - started)
                scorer, _ = candidates.with_member_vectors(test, engine, items, params)
                ndcg.append(candidates.judged(test, scorer, k, settings.block, settings.exclude_seen)["ndcg@k"])
                result["popularity_ndcg"] = candidates.judged(test, candidates.shared_scorer(test.popularity), k,
                                                              settings.block, settings.exclude_seen)["ndcg@k"]
            result[engine] = {"ndcg_mean": statistics.mean(ndcg), "ndcg_min": min(ndcg), "ndcg_max": max(ndcg),
                              "fit_s_median": statistics.median(seconds), "seeds": len(ndcg)}
        rows.append(result)
        print(f"group {group}: {result['gate_train_ratings']:,} ratings; NDCG@{k} spark "
              f"{result['spark']['ndcg_mean']:.4f}, driver {result['driver']['ndcg_mean']:.4f}, popularity "
              f"{result['popularity_ndcg']:.4f}; fit spark {result['spark']['fit_s_median']:.2f} s, driver "
              f"{result['driver']['fit_s_median']:.3f} s", flush=True)
    spark.stop()

    weight = sum(r["gate_train_ratings"] for r in rows)
    summary = {"first_spark_fit_s": first_spark_fit, "groups": len(rows), "seeds": args.seeds}
    for engine in ("spark", "driver"):
        summary[f"{engine}_ndcg_ratings_weighted"] = sum(r[engine]["ndcg_mean"] * r["gate_train_ratings"]
                                                         for r in rows) / weight
        summary[f"{engine}_fit_s_total"] = sum(r[engine]["fit_s_median"] for r in rows)
        summary[f"{engine}_groups_passing_gate"] = sum(r[engine]["ndcg_mean"] >= r["popularity_ndcg"] - settings.margin
                                                       for r in rows)
    out = REPO / "bench" / "results" / f"als-fit-{args.name}.json"
    out.write_text(json.dumps({"lake": root, "dt": args.dt, "k": k, "summary": summary, "groups": rows}, indent=2))

    print(f"\n| group | gate training ratings | rank | NDCG@{k} Spark (min-max) | NDCG@{k} driver (min-max) | "
          "popularity | fit Spark, s | fit driver, s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, d = r["spark"], r["driver"]
        print(f"| {r['group']} | {r['gate_train_ratings']:,} | {r['rank']} | {s['ndcg_mean']:.4f} ({s['ndcg_min']:.4f}-"
              f"{s['ndcg_max']:.4f}) | {d['ndcg_mean']:.4f} ({d['ndcg_min']:.4f}-{d['ndcg_max']:.4f}) | "
              f"{r['popularity_ndcg']:.4f} | {s['fit_s_median']:.2f} | {d['fit_s_median']:.3f} |")
    print(f"\nfirst Spark fit of the JVM (warm-up, not in the table): {first_spark_fit:.1f} s")
    print(f"ratings-weighted NDCG@{k}: Spark {summary['spark_ndcg_ratings_weighted']:.4f}, driver "
          f"{summary['driver_ndcg_ratings_weighted']:.4f}; groups passing the gate: Spark "
          f"{summary['spark_groups_passing_gate']}, driver {summary['driver_groups_passing_gate']} of {len(rows)}; "
          f"fits in all: Spark {summary['spark_fit_s_total']:.1f} s (warm), "
          f"driver {summary['driver_fit_s_total']:.1f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
