"""Train one member group's implicit ALS model and predict its members' top affinities,
unless the quality gate says the model is worse than popularity.

Reads   features/dt=D/{ratings, gate}/group=G and features/dt=D/candidates (the day's saleable
        subclass-brands); to fall back, models/dt=D'/group=G/factors of the last good day D'
Writes  models/dt=D/group=G/{factors/{members, items}, metrics.json},
        affinity/dt=D/group=G/ (top-K per member among the day's candidates)
Re-run  `spark-submit spark_jobs/train_group.py --dt D --group G` replaces that group's partitions.

One model fit per group. Implicit ALS is trained on the gate's training part (each member's
events before her last `evaluation.gate_holdout_days`), and the quality gate judges exactly
that model: on the held-out part it must reach popularity's NDCG@k minus
`evaluation.gate_ndcg_margin`. The served model continues the judged one on every rating:
each member's factors are solved from all her ratings, then `als.serve_iterations` more ALS
iterations run over all of them in numpy (transforms/als.py, Spark's own normal equations),
so the last days count without a second fit (BENCHMARKS.md compares both designs).
When the gate fails, or training fails, the group is served from its last good model (the
newest earlier day whose metrics.json says `served_from: model`), or from popularity when there
is none. metrics.json records the gate's figures, `served_from` and the reason.

The group's data is small next to the events (a few hundred thousand ratings at 100,000
members): it is read on the driver with pyarrow, and the gate's evaluation, the warm start and
the scoring of every member against the candidates (blocks of members times the candidate
matrix, transforms/top_k.py) run there in numpy. So does the fit, with Spark's own algorithm
(transforms/als.py), up to `als.driver_fit_max_ratings`: below that, Spark's distributed fit
costs more in JVM warm-up than the whole fit costs on the driver (BENCHMARKS.md). A group with
more ratings is fit by Spark's ALS on the executors.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import SparkSession

from flashfeed import lake
from flashfeed.config import group_settings
from spark_jobs.common import (
    JobError,
    LakeFS,
    check_columns,
    features_next_step,
    first_line,
    get_logger,
    log_driver_ready,
    parse_job_args,
    run_job,
    spark_session,
    staged_partition,
    timed,
)
from spark_jobs.transforms import als, top_k

log = get_logger("train_group")
SERVED_FROM_MODEL = "model"
SERVED_FROM_POPULARITY = "popularity"
FACTORS = "factors"   # models/dt=D/group=G/factors/{members, items}: what was served
RATING_COLUMNS = ["member_sk", "subclass_brand_id", "rating"]   # what ALS reads
AFFINITY_SCHEMA = pa.schema([("member_id", pa.string()), ("subclass_brand_id", pa.int32()), ("affinity", pa.float64()),
                             ("rating", pa.float64()), ("affinity_rank", pa.int32())])
MEMBER_FACTORS_SCHEMA = pa.schema([("member_id", pa.string()), ("features", pa.list_(pa.float64()))])
ITEM_FACTORS_SCHEMA = pa.schema([("subclass_brand_id", pa.int32()), ("features", pa.list_(pa.float64()))])


@dataclass
class Served:
    """What the members are scored with: factors (members x rank by member_id, candidates x rank)
    or one popularity score per candidate (`members` None)."""
    candidate_ids: np.ndarray               # ascending
    values: np.ndarray                      # candidates x rank, or one score per candidate
    products: np.ndarray                    # products a collection can show, per candidate
    members: pd.DataFrame | None = None     # member_id, features
    items: pd.DataFrame | None = None       # subclass_brand_id, features (every item of the model)


def judge(gate: dict) -> dict:
    """Pass when the model's NDCG@k >= popularity's - margin; says why not otherwise."""
    model, baseline, margin, k = gate["model"]["ndcg@k"], gate["popularity"]["ndcg@k"], gate["margin"], gate["k"]
    passed = model >= baseline - margin
    reason = (f"NDCG@{k} {model:.4f} >= popularity {baseline:.4f} - margin {margin}" if passed else
              f"NDCG@{k} {model:.4f} is below popularity {baseline:.4f} - margin {margin}")
    return {**gate, "passed": passed, "reason": reason}


def factor_matrix(factors: pd.DataFrame, key: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(present, matrix): which of `ids` have factors in `factors` (key, features), and their
    factors in `ids` order (zeros where absent)."""
    position = pd.Index(factors[key]).get_indexer(ids)
    present = position >= 0
    stacked = np.stack(factors["features"].to_numpy()) if len(factors) else np.zeros((0, 1))
    matrix = np.zeros((len(ids), stacked.shape[1]))
    matrix[present] = stacked[position[present]]
    return present, matrix


def popularity_scores(ratings: pd.DataFrame, candidate_ids: np.ndarray) -> np.ndarray:
    """Per candidate, the share of the group's members who rated it (0 when nobody did)."""
    members = max(ratings["member_id"].nunique(), 1)
    rated_by = ratings.groupby("subclass_brand_id")["member_id"].nunique()
    return rated_by.reindex(candidate_ids).fillna(0).to_numpy(dtype=np.float64) / members


def gate_evaluation(users: pd.DataFrame, items: pd.DataFrame, train: pd.DataFrame, relevant: pd.DataFrame,
                    gate_candidates: np.ndarray, k: int, margin: float, block: int) -> dict:
    """NDCG@k etc. of the gate's model (factors `users` by member_sk, `items` by subclass_brand_id)
    and of popularity on the held-out part: each evaluated member's top k among the subclass-
    brands of the held-out part, leaving out what she has in the training part."""
    seen = train.groupby("member_sk")["subclass_brand_id"].apply(np.asarray)
    wanted = relevant.groupby("member_sk")["subclass_brand_id"].apply(np.asarray)
    members = wanted.index.to_numpy()
    seen_lists = [seen.get(m) for m in members]
    known, item_matrix = factor_matrix(items, "subclass_brand_id", gate_candidates)
    _, user_matrix = factor_matrix(users, "member_sk", members)
    popular = popularity_scores(train, gate_candidates)
    result = {"evaluated": True, "k": k, "margin": margin,
              "model": top_k.evaluate(user_matrix, gate_candidates[known], item_matrix[known], seen_lists,
                                      list(wanted), k, block),
              "popularity": top_k.evaluate(None, gate_candidates, popular, seen_lists, list(wanted), k, block)}
    return judge(result)


@dataclass
class IndexedRatings:
    """A group's ratings as numpy ALS takes them: members and items numbered 0.. in key order."""
    member_key: str              # member_id or member_sk
    member_keys: np.ndarray      # the keys, ascending (row i of the member factors)
    member_index: np.ndarray     # each rating's member row
    item_ids: np.ndarray         # subclass_brand_id, ascending (row j of the item factors)
    item_index: np.ndarray       # each rating's item row
    rating: np.ndarray

    @classmethod
    def of(cls, ratings: pd.DataFrame, member_key: str) -> IndexedRatings:
        member_keys, member_index = np.unique(ratings[member_key].to_numpy(), return_inverse=True)
        item_ids, item_index = np.unique(ratings["subclass_brand_id"].to_numpy(), return_inverse=True)
        return cls(member_key, member_keys, member_index, item_ids, item_index,
                   ratings["rating"].to_numpy(dtype=np.float64))

    def factor_frames(self, users: np.ndarray, items: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(member key, features) and (subclass_brand_id, features) frames of factor matrices."""
        return (pd.DataFrame({self.member_key: self.member_keys, "features": list(users)}),
                pd.DataFrame({"subclass_brand_id": self.item_ids, "features": list(items)}))


def continued_model(gate_items: pd.DataFrame, ratings: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(members: member_id, features; items: subclass_brand_id, features): the gate's model
    continued on every rating (als.warm_start); every member is solved again from all her
    ratings, so the judged model's own member factors are not needed."""
    indexed = IndexedRatings.of(ratings, "member_id")
    known, item_matrix = factor_matrix(gate_items, "subclass_brand_id", indexed.item_ids)
    users, items = als.warm_start(indexed.member_index, indexed.item_index, indexed.rating, item_matrix, known,
                                  len(indexed.member_keys), len(indexed.item_ids), float(params["alpha"]),
                                  float(params["reg_param"]), int(params["serve_iterations"]))
    return indexed.factor_frames(users, items)


def factors_served(members: pd.DataFrame, items: pd.DataFrame, candidates: pd.DataFrame) -> Served:
    """Factors restricted to the candidates (subclass_brand_id ascending, products) the model knows."""
    ids = candidates["subclass_brand_id"].to_numpy(dtype=np.int64)
    known, matrix = factor_matrix(items, "subclass_brand_id", ids)
    return Served(ids[known], matrix[known], candidates["products"].to_numpy()[known], members, items)


def last_good_model(fs: LakeFS, root: str, group: str, dt: date) -> str | None:
    """The newest day before `dt` whose model of `group` was served (and whose factors exist)."""
    days = [name[len("dt="):] for name in fs.list_dirs(f"{root}/models") if name.startswith("dt=")]
    for day in sorted((d for d in days if d < dt.isoformat()), reverse=True):
        folder = lake.models(day, group, root)
        if not (fs.exists(f"{folder}/metrics.json") and fs.exists(f"{folder}/{FACTORS}/members")):
            continue
        if fs.read_json(f"{folder}/metrics.json").get("served_from") == SERVED_FROM_MODEL:
            return day
    return None


def scoring_frame(ratings: pd.DataFrame, served: Served) -> pd.DataFrame:
    """One row per member of the group: member_id, her ratings as lists and, when the group is
    served from factors, her `features` (members unknown to those factors are left out: they
    get the fallback payload)."""
    frame = ratings.groupby("member_id").agg(rated_items=("subclass_brand_id", list),
                                             rated_values=("rating", list)).reset_index()
    if served.members is not None:
        frame = frame.merge(served.members[["member_id", "features"]], on="member_id")
    return frame


@dataclass
class GateInputs:
    """The gate's time split of one group, on the driver."""
    train: pd.DataFrame          # member_id, member_sk, subclass_brand_id, rating: the training part
    relevant: pd.DataFrame       # member_id, member_sk, subclass_brand_id: to be found
    candidates: np.ndarray       # subclass-brands of the held-out part, ascending


def read_gate(features: str, group: str, ratings: pd.DataFrame) -> GateInputs:
    train = lake.read_table(f"{features}/gate/train_ratings/group={group}",
                            ["member_id", "member_sk", "subclass_brand_id", "rating"])
    relevant = lake.read_table(f"{features}/gate/relevant/group={group}", ["member_id", "subclass_brand_id"]).merge(
        ratings[["member_id", "member_sk"]].drop_duplicates(), on="member_id")
    candidates = np.sort(lake.read_table(f"{features}/gate/candidates")["subclass_brand_id"].to_numpy(dtype=np.int64))
    return GateInputs(train, relevant, candidates)


def fits_on_driver(ratings: int, params: dict) -> bool:
    return ratings <= int(params["driver_fit_max_ratings"])


def fitted_factors(spark: Callable[[], SparkSession], fit_frame: pd.DataFrame, params: dict,
                   blocks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(member factors by member_sk, item factors by subclass_brand_id) of one ALS fit: in numpy
    on the driver when the ratings are at most `als.driver_fit_max_ratings` (the same algorithm;
    Spark's own fit of a group that size is mostly the JVM warming up), else Spark's ALS in the
    session `spark()` starts."""
    if fits_on_driver(len(fit_frame), params):
        indexed = IndexedRatings.of(fit_frame, "member_sk")
        return indexed.factor_frames(*als.fit_on_driver(indexed.member_index, indexed.item_index, indexed.rating,
                                                        len(indexed.member_keys), len(indexed.item_ids), params))
    # Fitted from the frame already on the driver: reading the Parquet again costs a cold
    # Spark scan (about a second a group).
    ratings = spark().createDataFrame(fit_frame[list(RATING_COLUMNS)])   # the session first: ALS() needs it
    model = als.estimator(params, blocks).fit(ratings)
    return (model.userFactors.withColumnRenamed("id", "member_sk").toPandas(),
            model.itemFactors.withColumnRenamed("id", "subclass_brand_id").toPandas())


def fit_and_judge(spark: Callable[[], SparkSession], ratings: pd.DataFrame, gate_inputs: GateInputs | None,
                  params: dict, blocks: int, k: int, margin: float,
                  block: int) -> tuple[tuple[pd.DataFrame, pd.DataFrame], dict]:
    """((member factors by member_id, item factors), gate): the one ALS fit, on the gate's
    training part (or on every rating when no member has held-out events), judged by the gate;
    when it passes, continued on every rating (the served model), else its own factors (kept
    for inspection)."""
    fit_frame = gate_inputs.train if gate_inputs is not None else ratings
    fitted = len(fit_frame)
    what = "the gate's training part" if gate_inputs is not None else "every rating (no held-out events: no gate)"
    where = "in numpy on the driver" if fits_on_driver(fitted, params) else f"with Spark, {blocks} user blocks"
    with timed(log, f"training ALS on {what}: {fitted} ratings, {params['max_iter']} iterations, rank "
                    f"{params['rank']}, {where}"):
        users, items = fitted_factors(spark, fit_frame, params, blocks)
    if gate_inputs is None:
        gate = {"evaluated": False, "passed": True, "k": k, "margin": margin,
                "reason": "no member of the group has held-out events in the gate window: not evaluated"}
        log.warning("quality gate skipped: %s", gate["reason"])
    else:
        started = time.monotonic()
        gate = gate_evaluation(users, items, gate_inputs.train, gate_inputs.relevant, gate_inputs.candidates, k,
                               margin, block)
        log.info("quality gate %s in %.1f s: %s (model: recall@%d %.4f on %d members; popularity: recall@%d %.4f)",
                 "PASSED" if gate["passed"] else "FAILED", time.monotonic() - started, gate["reason"], k,
                 gate["model"]["recall@k"], gate["model"]["members"], k, gate["popularity"]["recall@k"])
    if not gate["passed"]:
        ids = ratings[["member_sk", "member_id"]].drop_duplicates()
        return (users.merge(ids, on="member_sk")[["member_id", "features"]], items), gate
    with timed(log, f"continuing the model on all {len(ratings)} ratings ({params['serve_iterations']} ALS "
                    "iterations in numpy)"):
        return continued_model(items, ratings, params), gate


def main(argv: list[str] | None = None) -> None:
    started_job = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv, group=True)
    dt, group = date.fromisoformat(args.dt), args.group
    params = group_settings(config, "als", group)
    gate_cfg = config["evaluation"]
    k_gate, margin, block = int(gate_cfg["k"]), float(gate_cfg["gate_ndcg_margin"]), int(params["score_block_members"])
    app_name = f"flashfeed-als-{dt}-group-{group}"
    checkpoints = lake.models(dt, group, root) + ".__checkpoints"    # Spark's ALS truncates its lineage there

    @functools.cache
    def spark() -> SparkSession:
        """Started only for a fit too large for the driver (`als.driver_fit_max_ratings`)."""
        session = spark_session(app_name, config)
        session.sparkContext.setCheckpointDir(checkpoints)
        return session

    fs = LakeFS()
    log_driver_ready(app_name, "a Spark session starts only for a fit too large for the driver")

    # Extract
    features = lake.features(dt, root)
    ratings_path = f"{features}/ratings/group={group}"
    log.info("group %s on %s: reads %s and %s/candidates; als rank=%s maxIter=%s regParam=%s alpha=%s top_k=%s "
             "serve_iterations=%s; gate k=%s margin=%s", group, dt, ratings_path, features, params["rank"],
             params["max_iter"], params["reg_param"], params["alpha"], params["top_k"], params["serve_iterations"],
             k_gate, margin)
    fs.require(features, f"features for {dt}", features_next_step(dt))
    if not fs.exists(ratings_path):
        known = fs.read_json(f"{features}/groups.json")["groups"]
        raise JobError(
            f"group {group!r} has no ratings on {dt} ({ratings_path} does not exist); groups of that day: {known}",
            "the features were rebuilt with other groups after this run planned its tasks: clear discover_groups "
            "of this run (with its downstream tasks) so that the mapped tasks follow the day's groups.json",
        )
    # A group's data is small: read on the driver (pyarrow), no Spark job until the fit.
    local = check_columns(lake.read_table(ratings_path), ("member_id", "member_sk", "subclass_brand_id", "rating"),
                          "ratings", ratings_path, f"re-run build_features of flashfeed_daily_model for {dt}")
    # The day's saleable subclass-brands, computed once by build_features for every group.
    candidates = lake.read_table(f"{features}/candidates").sort_values("subclass_brand_id", ignore_index=True)
    candidate_ids = candidates["subclass_brand_id"].to_numpy(dtype=np.int64)
    has_gate = all(fs.exists(f"{features}/gate/{name}/group={group}") for name in ("train_ratings", "relevant"))
    members, items, n_ratings = local["member_id"].nunique(), local["subclass_brand_id"].nunique(), len(local)
    blocks, divisor = als.blocks_for(members, params)
    k, enough_products = min(int(params["top_k"]), len(candidate_ids)), int(params["top_k_products"])
    log.info("group %s on %s: %d members, %d subclass-brands, %d ratings; %d saleable candidates, at most %d kept "
             "per member; %d user blocks (divisor %d)", group, dt, members, items, n_ratings, len(candidate_ids), k,
             blocks, divisor)

    # Transform: one fit, judged by the gate, continued on every rating
    gate_inputs = read_gate(features, group, local) if has_gate else None
    try:
        trained, gate = fit_and_judge(spark, local, gate_inputs, params, blocks, k_gate, margin, block)
        fallback_reason = None if gate["passed"] else f"quality gate failed: {gate['reason']}"
    except Exception as error:  # noqa: BLE001 - any training failure falls back, with its cause logged
        trained, fallback_reason = None, f"training failed: {first_line(error)}"
        gate = {"evaluated": False, "passed": False, "reason": fallback_reason}
        log.error("ALS training of group %s FAILED (%s); the group falls back. Next step: fix the cause (e.g. "
                  "the group's als settings in include/flashfeed.yaml), then clear this map index", group,
                  fallback_reason)

    # Transform: affinities from today's model, the last good one, or popularity
    if fallback_reason is None:
        served_from = SERVED_FROM_MODEL
        served = factors_served(*trained, candidates)
    else:
        good_day = last_good_model(fs, root, group, dt)
        if good_day:
            served_from = f"last_good_model:{good_day}"
            folder = f"{lake.models(good_day, group, root)}/{FACTORS}"
            served = factors_served(lake.read_table(f"{folder}/members"), lake.read_table(f"{folder}/items"),
                                    candidates)
        else:
            served_from = SERVED_FROM_POPULARITY
            served = Served(candidate_ids, popularity_scores(local, candidate_ids), candidates["products"].to_numpy())
        log.warning("group %s is served from %s because %s", group, served_from, fallback_reason)
    scoring = scoring_frame(local, served)
    per_member = min(k, len(served.candidate_ids))

    # Load
    with timed(log, f"scoring and writing the affinities of {len(scoring)} members (their best of "
                    f"{len(served.candidate_ids)} candidates, at most {per_member}, until {enough_products} products; "
                    f"blocks of {block} members)"), \
            staged_partition(fs, lake.affinity(dt, group, root), log) as staging:
        rows = lake.write_table(staging, top_k.top_k_rows(scoring, served.candidate_ids, served.values, k, block,
                                                          served.products, enough_products), AFFINITY_SCHEMA)
    scored_members = len(scoring)
    log.info("affinities: %d rows for %d of %d members (%.1f per member; %d candidates), from %s", rows,
             scored_members, members, rows / max(scored_members, 1), len(candidate_ids), served_from)
    with staged_partition(fs, lake.models(dt, group, root), log) as staging:
        if trained is not None:   # also when the gate refused it, for inspection
            members_factors, items_factors = trained
            lake.write_table(f"{staging}/{FACTORS}/members", [members_factors], MEMBER_FACTORS_SCHEMA)
            lake.write_table(f"{staging}/{FACTORS}/items", [items_factors], ITEM_FACTORS_SCHEMA)
        fs.write_json(f"{staging}/metrics.json", {
            "dt": dt.isoformat(), "group": group, "members": members, "subclass_brands": items,
            "ratings": n_ratings, "candidates": len(candidate_ids), "top_k": k, "top_k_products": enough_products,
            "affinity_rows": rows,
            "members_scored": scored_members, "user_blocks": blocks, "user_blocks_divisor": divisor,
            "fit_on": "spark" if spark.cache_info().currsize else "driver",
            "gate": gate, "served_from": served_from, "fallback_reason": fallback_reason,
            "params": {key: params[key] for key in ("rank", "max_iter", "reg_param", "alpha", "item_blocks", "seed",
                                                    "serve_iterations", "driver_fit_max_ratings")},
        })
    fs.delete(checkpoints)
    log.info("group %s on %s done in %.1f s (served from %s): wrote %s and %s", group, dt,
             time.monotonic() - started_job, served_from, lake.affinity(dt, group, root), lake.models(dt, group, root))
    if spark.cache_info().currsize:
        spark().stop()


if __name__ == "__main__":
    run_job(main, log)
