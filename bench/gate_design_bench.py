"""Quality-gate design benchmark (not a test): which model should the gate judge, and serve?

    .venv/bin/python bench/gate_design_bench.py --lake DIR --dt 2026-11-22 --name demo-10000

The daily model's quality gate needs a model that has not seen the held-out part. Until
2026-11 each group trained two: one on the gate's training part (judged), then one on every
rating (served). This script measures, on the same features, what each design would serve
and how good it is on what members did *after* the model day, and what the fits cost:

- `two_fits`: the gate's model, then a second fit on every rating, which is served (the former design);
- `gate_model`: the gate's model served as it is (members whose events all fall in the holdout
  get no factors, so they get popularity);
- `gate_model_fold_in`: the gate's model, with every member's factors re-solved from all her
  ratings against its item factors (one ALS user half-step, `als.fold_in`): one fit;
- `gate_model_continued`: the fold-in, then `--continue-iterations` more ALS iterations on every
  rating (an item half-step, which also gives items first rated in the holdout their factors,
  then a user half-step), in numpy: the gate's model warm-starts the served one; one fit;
- `popularity`: the group's most popular candidates, the floor.

Forward truth: each member's positive events in [D, D + `--forward-days`) on subclass-brands
saleable on D (the day's candidates), so the lake must hold raw events after D (generate the
world with an end date `--forward-days` after D). Ranking: the top 10 candidates by score, as
served (`all`), and with the subclass-brands the member rated before D left out of both the
ranking and the truth (`new`). Metrics: flashfeed/metrics.py. Also prints each design's gate
decision (NDCG@10 on the gate's holdout vs popularity). Needs `features/dt=D` (runs features.py
when missing). Writes `bench/results/gate-design-<name>.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from flashfeed import lake  # noqa: E402
from flashfeed.config import group_settings, load_config  # noqa: E402
from flashfeed.env import project_env  # noqa: E402
from flashfeed.metrics import mean_metrics  # noqa: E402
from spark_jobs.common import spark_session  # noqa: E402
from spark_jobs.transforms import als  # noqa: E402
from spark_jobs.transforms import catalog as catalog_t  # noqa: E402
from spark_jobs.transforms.top_k import top_k_block  # noqa: E402

RESULTS = REPO / "bench" / "results"
DESIGNS = ("two_fits", "gate_model", "gate_model_fold_in", "gate_model_continued", "popularity")
K = 10


def factors_frame(frame) -> dict[int, np.ndarray]:
    return {int(r.id): np.asarray(r.features, dtype=np.float64) for r in frame.collect()}


def ranked_lists(user_vectors: dict, item_ids: np.ndarray, item_matrix: np.ndarray, popular: np.ndarray,
                 members: list[int], seen: dict[int, set] | None) -> dict[int, list[int]]:
    """Top K candidate ids per member by factor scores; popularity for members without factors."""
    out = {}
    for member in members:
        scores = (item_matrix @ user_vectors[member]) if member in user_vectors else popular.astype(np.float64).copy()
        if seen is not None:
            scores[np.isin(item_ids, list(seen.get(member, ())))] = -np.inf
        columns, valid = top_k_block(scores[None, :], K)
        out[member] = [int(i) for i in item_ids[columns[0][valid[0]]]]
    return out


def metrics(lists: dict[int, list[int]], truth: dict[int, set]) -> dict:
    return mean_metrics(((lists.get(m, []), items) for m, items in truth.items() if items), K)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--dt", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--forward-days", type=int, default=7)
    parser.add_argument("--continue-iterations", type=int, default=1, help="ALS iterations of gate_model_continued")
    parser.add_argument("--seed", type=int, default=None, help="ALS seed instead of the config's (seed-to-seed spread)")
    parser.add_argument("--item-blocks", type=int, default=None, help="ALS item blocks instead of the config's (fit time)")
    args = parser.parse_args(argv)
    root = str(Path(args.lake).resolve())
    env = project_env({**os.environ, "FLASHFEED_LAKE": root})
    os.environ.update(env)
    config = load_config()
    if not Path(lake.success(lake.features(args.dt, root))).exists():
        subprocess.run(["spark-submit", "--master", "local[*]", "--conf",
                        f"spark.driver.memory={config['spark']['driver_memory']}",
                        str(REPO / "spark_jobs" / "features.py"), "--dt", args.dt], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    spark = spark_session("flashfeed-gate-design-bench", config)
    spark.sparkContext.setCheckpointDir(str(Path(root) / ".checkpoints"))
    features = lake.features(args.dt, root)
    day = date.fromisoformat(args.dt)
    weights = config["features"]["event_weights"]
    forward_days = [lake.raw("events", day + timedelta(days=i), root) for i in range(args.forward_days)]
    catalog = catalog_t.with_subclass_brand(spark.read.parquet(lake.raw("catalog", args.dt, root)))
    candidates = spark.read.parquet(f"{features}/candidates")
    positive = [t for t, w in weights.items() if float(w) > 0]
    forward = (spark.read.parquet(*forward_days).where(F.col("event_type").isin(positive))
               .where(F.col("occurred_at") >= F.lit(datetime.combine(day, datetime.min.time(), timezone.utc)))
               .join(catalog.select("style_id", "subclass_brand_id"), "style_id")
               .join(candidates, "subclass_brand_id").select("member_id", "subclass_brand_id").distinct())
    members_all = spark.read.parquet(f"{features}/members").select("member_id", "member_sk", "group")
    forward = forward.join(members_all, "member_id").toPandas()
    candidate_ids = np.sort(candidates.toPandas()["subclass_brand_id"].to_numpy(dtype=np.int64))
    groups = json.loads(Path(features, "groups.json").read_text())["groups"]
    report = {"name": args.name, "dt": args.dt, "forward_days": args.forward_days,
              "continue_iterations": args.continue_iterations, "seed": args.seed, "item_blocks": args.item_blocks,
              "groups": {}}
    for group in groups:
        params = group_settings(config, "als", group)
        if args.seed is not None:
            params["seed"] = args.seed
        if args.item_blocks is not None:
            params["item_blocks"] = args.item_blocks
        ratings = spark.read.parquet(f"{features}/ratings/group={group}").persist()
        gate_train = spark.read.parquet(f"{features}/gate/train_ratings/group={group}").persist()
        local = ratings.select("member_sk", "subclass_brand_id", "rating").toPandas()
        gate_relevant = spark.read.parquet(f"{features}/gate/relevant/group={group}").join(
            members_all.select("member_id", "member_sk"), "member_id").toPandas()
        gate_seen = gate_train.select("member_sk", "subclass_brand_id").toPandas().groupby("member_sk")[
            "subclass_brand_id"].apply(set).to_dict()
        seen_before = local.groupby("member_sk")["subclass_brand_id"].apply(set).to_dict()
        fwd = forward[forward["group"] == group]
        truth_all = fwd.groupby("member_sk")["subclass_brand_id"].apply(set).to_dict()
        truth_new = {m: items - seen_before.get(m, set()) for m, items in truth_all.items()}
        gate_truth = gate_relevant.groupby("member_sk")["subclass_brand_id"].apply(set).to_dict()

        timings, served, gate_items = {}, {}, None
        started = time.monotonic()
        gate_model = als.fit(gate_train, params)
        gate_users, gate_items = factors_frame(gate_model.userFactors), factors_frame(gate_model.itemFactors)
        timings["gate_fit"] = time.monotonic() - started
        started = time.monotonic()
        full = als.fit(ratings, params)
        served["two_fits"] = (factors_frame(full.userFactors), factors_frame(full.itemFactors))
        timings["second_fit"] = time.monotonic() - started
        served["gate_model"] = (gate_users, gate_items)
        started = time.monotonic()
        known = local[local["subclass_brand_id"].isin(list(gate_items))]
        item_order = np.array(sorted(gate_items))
        member_order = np.array(sorted(local["member_sk"].unique()))
        folded = als.fold_in(np.searchsorted(member_order, known["member_sk"].to_numpy()),
                             np.searchsorted(item_order, known["subclass_brand_id"].to_numpy()),
                             known["rating"].to_numpy(), np.stack([gate_items[i] for i in item_order]),
                             len(member_order), float(params["alpha"]), float(params["reg_param"]))
        served["gate_model_fold_in"] = ({int(m): v for m, v in zip(member_order, folded) if np.any(v)}, gate_items)
        timings["fold_in"] = time.monotonic() - started
        started = time.monotonic()
        all_items = np.array(sorted(local["subclass_brand_id"].unique()))
        rows = np.searchsorted(member_order, local["member_sk"].to_numpy())
        cols = np.searchsorted(all_items, local["subclass_brand_id"].to_numpy())
        alpha, reg = float(params["alpha"]), float(params["reg_param"])
        users_continued = folded
        for _ in range(args.continue_iterations):
            items_continued = als.fold_in(cols, rows, local["rating"].to_numpy(), users_continued, len(all_items),
                                          alpha, reg)
            users_continued = als.fold_in(rows, cols, local["rating"].to_numpy(), items_continued, len(member_order),
                                          alpha, reg)
        served["gate_model_continued"] = ({int(m): v for m, v in zip(member_order, users_continued)},
                                          {int(i): v for i, v in zip(all_items, items_continued)})
        timings["continue"] = time.monotonic() - started

        popularity = local.groupby("subclass_brand_id")["member_sk"].nunique()
        popular = popularity.reindex(candidate_ids).fillna(0).to_numpy()
        gate_popularity = gate_train.groupBy("subclass_brand_id").agg(F.countDistinct("member_id").alias("n")).toPandas()
        gate_popular = gate_popularity.set_index("subclass_brand_id")["n"].reindex(candidate_ids).fillna(0).to_numpy()
        result = {"members": len(member_order), "forward_members": len(truth_all),
                  "timings_s": {k: round(v, 2) for k, v in timings.items()}, "designs": {}}
        for design in DESIGNS:
            if design == "popularity":
                users, items = {}, {}
            else:
                users, items = served[design]
            present = np.array([i in items for i in candidate_ids])
            ids = candidate_ids[present] if items else candidate_ids
            matrix = np.stack([items[i] for i in ids]) if items else np.zeros((len(ids), 1))
            pop = popular[present] if items else popular
            result["designs"][design] = {
                "all": metrics(ranked_lists(users, ids, matrix, pop, list(truth_all), None), truth_all),
                "new": metrics(ranked_lists(users, ids, matrix, pop, list(truth_new), seen_before), truth_new),
            }
        # The gate's own judgement (what two_fits and both one-fit designs are gated on).
        gate_ids = np.array(sorted(gate_items))
        gate_lists = ranked_lists(gate_users, gate_ids, np.stack([gate_items[i] for i in gate_ids]),
                                  np.zeros(len(gate_ids)), list(gate_truth), gate_seen)
        pop_lists = ranked_lists({}, candidate_ids, np.zeros((len(candidate_ids), 1)), gate_popular,
                                 list(gate_truth), gate_seen)
        result["gate"] = {"model_ndcg": metrics(gate_lists, gate_truth)["ndcg@k"],
                          "popularity_ndcg": metrics(pop_lists, gate_truth)["ndcg@k"]}
        report["groups"][group] = result
        d = result["designs"]
        print(f"group {group}: {result['members']} members, {result['forward_members']} with forward events; "
              f"NDCG@10 all: " + ", ".join(f"{n} {d[n]['all']['ndcg@k']:.4f}" for n in DESIGNS) +
              f"; fits {timings['gate_fit']:.1f} + {timings['second_fit']:.1f} s, fold-in {timings['fold_in']:.2f} s",
              flush=True)
        ratings.unpersist()
        gate_train.unpersist()
    spark.stop()

    def weighted(design: str, part: str, metric: str = "ndcg@k") -> float:
        groups_ = report["groups"].values()
        total = sum(g["designs"][design][part]["members"] for g in groups_)
        return sum(g["designs"][design][part][metric] * g["designs"][design][part]["members"] for g in groups_) / total

    report["overall"] = {d: {part: {m: round(weighted(d, part, m), 4) for m in ("ndcg@k", "recall@k")}
                             for part in ("all", "new")} for d in DESIGNS}
    report["fit_seconds"] = {k: round(sum(g["timings_s"][k] for g in report["groups"].values()), 1)
                             for k in ("gate_fit", "second_fit", "fold_in", "continue")}
    print(f"\n{args.name}: forward NDCG@10 / recall@10 over every group's members (weighted by members)")
    print("| design | NDCG@10 all | recall@10 all | NDCG@10 new | recall@10 new |\n|---|---|---|---|---|")
    for d in DESIGNS:
        o = report["overall"][d]
        print(f"| {d} | {o['all']['ndcg@k']:.4f} | {o['all']['recall@k']:.4f} | {o['new']['ndcg@k']:.4f} | "
              f"{o['new']['recall@k']:.4f} |")
    print(f"fits in all: gate {report['fit_seconds']['gate_fit']} s, second {report['fit_seconds']['second_fit']} s, "
          f"fold-in {report['fit_seconds']['fold_in']} s, continued {report['fit_seconds']['continue']} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"gate-design-{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
