"""Serve one member group the best of its candidate models, chosen by the quality gate, and
write its members' top affinities.

Reads   features/dt=D/{ratings, gate/ratings}/group=G, features/dt=D/{candidates (the day's saleable
        subclass-brands), gate/live}, models/dt=D/global (train_global); to fall back,
        models/dt=D'/group=G/factors of the last good day D'
Writes  models/dt=D/group=G/{factors/{members, items} (what was served), metrics.json},
        affinity/dt=D/group=G/ (top-K per member among the day's candidates)
Re-run  `spark-submit spark_jobs/train_group.py --dt D --group G` replaces that group's partitions.

The group's own implicit ALS is fit once, on the gate's training part. The gate
(transforms/candidates.py) scores every candidate on the same members: the group ALS, the day's
global ALS, the repeat-aware blend of a member's own history with the better of those two
(its weight chosen on the validation part) and popularity; it serves the best model on the
test part unless its NDCG@k is below popularity's minus `evaluation.gate_ndcg_margin`, in which
case popularity is served. The served model is the chosen one continued on every rating: each
member's factors solved from all her ratings, then `als.serve_iterations` more ALS iterations
in numpy (transforms/als.py), so the last days count without a second fit (BENCHMARKS.md).
Only when no model trains at all is the group served its last good model (the newest earlier
day whose metrics.json says `served_from: model`), or popularity when there is none.
metrics.json records every candidate's figures on both parts, the choice and the reason.

The group's data is small next to the events (a few hundred thousand ratings at 100,000
members): it is read on the driver with pyarrow, and the gate, the warm start and the scoring
of every member against the candidates (blocks of members, transforms/top_k.py) run there in
numpy. So does the fit, with Spark's own algorithm, up to `als.driver_fit_max_ratings`; a group
with more ratings is fit by Spark's ALS on the executors.
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

from flashfeed.core import lake
from flashfeed.core.config import group_settings
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
from spark_jobs.train_global import GLOBAL
from spark_jobs.transforms import als, candidates, top_k

log = get_logger("train_group")
SERVED_FROM_MODEL = "model"
SERVED_FROM_POPULARITY = "popularity"
FACTORS = "factors"   # models/dt=D/group=G/factors/{members, items}: what was served
RATING_COLUMNS = ["member_id", "member_sk", "subclass_brand_id", "rating", "recent_rating"]
AFFINITY_SCHEMA = pa.schema([("member_id", pa.string()), ("subclass_brand_id", pa.int32()), ("affinity", pa.float64()),
                             ("rating", pa.float64()), ("affinity_rank", pa.int32())])


@dataclass
class Served:
    """What the members are scored with: factors (members x rank by member_id, candidates x rank),
    blended with each member's own history when `history_weight` is set (repeat_blend), or one
    popularity score per candidate (`members` None)."""
    candidate_ids: np.ndarray               # ascending
    values: np.ndarray                      # candidates x rank, or one score per candidate
    products: np.ndarray                    # products a collection can show, per candidate
    members: pd.DataFrame | None = None     # member_id, features
    items: pd.DataFrame | None = None       # subclass_brand_id, features (every item of the model)
    history_weight: float | None = None

    def scorer(self) -> top_k.Scorer:
        if self.members is None:
            return candidates.shared_scorer(self.values)
        model = candidates.factor_scorer(self.values, np.ones(len(self.candidate_ids), dtype=bool))
        if self.history_weight is None:
            return model
        return candidates.blend_scorer(model, self.history_weight, self.candidate_ids)


def factors_served(members: pd.DataFrame, items: pd.DataFrame, candidates_frame: pd.DataFrame,
                   history_weight: float | None = None) -> Served:
    """Factors restricted to the candidates (subclass_brand_id ascending, products) the model knows."""
    ids = candidates_frame["subclass_brand_id"].to_numpy(dtype=np.int64)
    known, matrix = als.factor_matrix(items, "subclass_brand_id", ids)
    return Served(ids[known], matrix[known], candidates_frame["products"].to_numpy()[known], members, items,
                  history_weight)


def last_good_model(fs: LakeFS, root: str, group: str, dt: date) -> tuple[str, dict] | None:
    """(day, its metrics) of the newest day before `dt` whose model of `group` was served (and
    whose factors exist)."""
    days = [name[len("dt="):] for name in fs.list_dirs(f"{root}/models") if name.startswith("dt=")]
    for day in sorted((d for d in days if d < dt.isoformat()), reverse=True):
        folder = lake.models(day, group, root)
        if not (fs.exists(f"{folder}/metrics.json") and fs.exists(f"{folder}/{FACTORS}/members")):
            continue
        metrics = fs.read_json(f"{folder}/metrics.json")
        if metrics.get("served_from") == SERVED_FROM_MODEL:
            return day, metrics
    return None


def scoring_frame(ratings: pd.DataFrame, served: Served) -> pd.DataFrame:
    """One row per member of the group: member_id, her ratings and recency-weighted ratings as
    lists and, when the group is served from factors, her `features` (members unknown to those
    factors are left out: they get the fallback payload)."""
    ordered = ratings.sort_values(["member_id", "subclass_brand_id"])
    frame = ordered.groupby("member_id").agg(rated_items=("subclass_brand_id", list), rated_values=("rating", list),
                                             history_values=("recent_rating", list)).reset_index()
    frame["history_items"] = frame["rated_items"]
    if served.members is not None:
        frame = frame.merge(served.members[["member_id", "features"]], on="member_id")
    return frame


def read_gate(features: str, group: str) -> candidates.GateParts | None:
    """The group's gate split, or None when it has no training or no test part (a history
    shorter than the gate's parts)."""
    ratings = lake.read_table(f"{features}/gate/ratings/group={group}",
                              ["member_sk", "subclass_brand_id", "part", "rating", "recent_rating"])
    if not ((ratings["part"] == "test").any() and (ratings["part"] == "train").any()):
        return None
    return candidates.GateParts(ratings, lake.read_table(f"{features}/gate/live"))


def fit_group(spark: Callable[[], SparkSession], fit_frame: pd.DataFrame, params: dict, blocks: int,
              what: str) -> tuple[pd.DataFrame | None, str | None]:
    """(item factors, None) of the group ALS fit on `fit_frame`, or (None, why) when it fails:
    the gate then judges the other candidates."""
    where = "in numpy on the driver" if als.fits_on_driver(len(fit_frame), params) else f"with Spark, {blocks} blocks"
    try:
        with timed(log, f"training the group ALS on {what}: {len(fit_frame)} ratings, {params['max_iter']} "
                        f"iterations, rank {params['rank']}, {where}"):
            return als.fitted_factors(spark, fit_frame, params, blocks)[1], None
    except Exception as error:  # noqa: BLE001 - any training failure is recorded with its cause
        failure = f"training failed: {first_line(error)}"
        log.error("the group ALS FAILED to train (%s). Next step: fix the cause (e.g. the group's als settings in "
                  "include/flashfeed.yaml), then clear this map index", failure)
        return None, failure


def judge_candidates(gate_inputs: candidates.GateParts | None, group_items: pd.DataFrame | None, failure: str | None,
                     global_items: pd.DataFrame | None, params: dict, global_params: dict,
                     settings: candidates.Settings) -> dict:
    """The gate's verdict (candidates.gate) on the models that trained; without a gate split the
    group ALS is served unjudged."""
    if gate_inputs is None:
        chosen = candidates.GROUP_ALS if group_items is not None else candidates.GLOBAL_ALS
        gate = {"evaluated": False, "passed": True, "chosen": chosen,
                "k": settings.k, "margin": settings.margin,
                "reason": "the group's history has no training or no test part for the gate (evaluation."
                          "gate_holdout_days and gate_validation_days): not evaluated"}
        log.warning("quality gate skipped: %s", gate["reason"])
        return gate
    item_factors = {name: (items, model_params) for name, items, model_params in
                    ((candidates.GROUP_ALS, group_items, params), (candidates.GLOBAL_ALS, global_items, global_params))
                    if items is not None}
    validation, test = gate_inputs.stages(settings.exclude_seen)
    started = time.monotonic()
    gate, _ = candidates.gate(validation, test, item_factors, settings)
    gate["failed"] = {candidates.GROUP_ALS: failure} if failure else {}
    log.info("quality gate on %d validation and %d test members in %.1f s: NDCG@%d validation/test: %s",
             len(validation.members), len(test.members), time.monotonic() - started, settings.k,
             candidates.summary_line(gate))
    log.info("quality gate %s: %s", "chose " + gate["chosen"] if gate["passed"] else "FAILED", gate["reason"])
    return gate


def tuned_settings(fs: LakeFS, root: str, dt: date) -> tuple[str, dict] | None:
    """(day, settings.json) of the newest weekly tune (`flashfeed_weekly_tune`) not after `dt`."""
    base = f"{root}/tuning"
    if not fs.exists(base):
        return None
    days = [name[len("dt="):] for name in fs.list_dirs(base) if name.startswith("dt=")]
    for day in sorted((d for d in days if d <= dt.isoformat()), reverse=True):
        path = f"{lake.tuning(day, root)}/settings.json"
        if fs.exists(path):
            return day, fs.read_json(path)
    return None


def with_tuning(params: dict, tuned: tuple[str, dict] | None, group: str) -> tuple[dict, str | None]:
    """(the group's als settings, the tuning day they come from or None): a weekly tune's chosen
    settings of the group replace the config's."""
    chosen = (tuned[1].get("groups") or {}).get(group) if tuned else None
    if not chosen:
        return params, None
    unknown = set(chosen["settings"]) - set(params)
    if unknown:
        raise JobError(f"the weekly tune of {tuned[0]} sets unknown als settings {sorted(unknown)} for group {group}",
                       "re-run flashfeed_weekly_tune for that day, or delete its tuning/dt= folder")
    return {**params, **chosen["settings"]}, tuned[0]


def global_factors(fs: LakeFS, dt: date, group: str, root: str, which: str) -> pd.DataFrame | None:
    """The day's global ALS: its gate item factors (`which` = gate_items), or its served factors
    of the group's members or of the items; None when train_global did not produce them."""
    folder = lake.global_model(dt, root)
    path = {"gate_items": f"{folder}/gate_items", "members": f"{folder}/{FACTORS}/members/group={group}",
            "items": f"{folder}/{FACTORS}/items"}[which]
    return lake.read_table(path) if fs.exists(path) else None


def serve_model(fs: LakeFS, dt: date, group: str, root: str, chosen: str, gate: dict,
                group_items: pd.DataFrame | None, ratings: pd.DataFrame, params: dict,
                candidate_rows: pd.DataFrame) -> Served:
    """The chosen model on every rating: the group ALS continued on them (als.continued_model),
    the global ALS's own continued factors of the group's members, or one of those blended with
    each member's own history at the weight the gate chose."""
    cf, weight = ((gate["blend"]["cf"], float(gate["blend"]["weight"])) if chosen == candidates.REPEAT_BLEND
                  else (chosen, None))
    if cf == candidates.GROUP_ALS:
        members, items = als.continued_model(group_items, ratings, params)
    else:
        members, items = (global_factors(fs, dt, group, root, which) for which in ("members", "items"))
        if members is None or items is None:
            raise JobError(f"the global ALS of {dt} has gate factors but no served factors for group {group} under "
                           f"{lake.global_model(dt, root)}", "clear train_global_als of this run, then this task")
    return factors_served(members, items, candidate_rows, weight)


def main(argv: list[str] | None = None) -> None:
    started_job = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv, group=True)
    dt, group = date.fromisoformat(args.dt), args.group
    params, global_params = group_settings(config, "als", group), group_settings(config, "als", GLOBAL)
    block = int(params["score_block_members"])
    settings = candidates.settings_from(config, group)
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
    params, tuned_from = with_tuning(params, tuned_settings(fs, root, dt), group)
    if tuned_from:
        log.info("group %s uses the settings the weekly tune of %s chose (%s): rank=%s regParam=%s alpha=%s", group,
                 tuned_from, f"{lake.tuning(tuned_from, root)}/settings.json", params["rank"], params["reg_param"],
                 params["alpha"])

    # Extract
    features = lake.features(dt, root)
    ratings_path = f"{features}/ratings/group={group}"
    log.info("group %s on %s: reads %s and %s/candidates; als rank=%s maxIter=%s regParam=%s alpha=%s top_k=%s "
             "serve_iterations=%s; gate k=%s margin=%s tolerance=%s blend weights %s", group, dt, ratings_path,
             features, params["rank"], params["max_iter"], params["reg_param"], params["alpha"], params["top_k"],
             params["serve_iterations"], settings.k, settings.margin, settings.tolerance, settings.blend_weights)
    fs.require(features, f"features for {dt}", features_next_step(dt))
    if not fs.exists(ratings_path):
        known = fs.read_json(f"{features}/groups.json")["groups"]
        raise JobError(
            f"group {group!r} has no ratings on {dt} ({ratings_path} does not exist); groups of that day: {known}",
            "the features were rebuilt with other groups after this run planned its tasks: clear discover_groups "
            "of this run (with its downstream tasks) so that the mapped tasks follow the day's groups.json",
        )
    # A group's data is small: read on the driver (pyarrow), no Spark job until the fit.
    local = check_columns(lake.read_table(ratings_path), RATING_COLUMNS, "ratings", ratings_path,
                          f"re-run build_features of flashfeed_daily_model for {dt}")
    # The day's saleable subclass-brands, computed once by build_features for every group.
    candidate_rows = lake.read_table(f"{features}/candidates").sort_values("subclass_brand_id", ignore_index=True)
    candidate_ids = candidate_rows["subclass_brand_id"].to_numpy(dtype=np.int64)
    has_gate = fs.exists(f"{features}/gate/ratings/group={group}")
    members, items, n_ratings = local["member_id"].nunique(), local["subclass_brand_id"].nunique(), len(local)
    blocks, divisor = als.blocks_for(members, params)
    k, enough_products = min(int(params["top_k"]), len(candidate_ids)), int(params["top_k_products"])
    log.info("group %s on %s: %d members, %d subclass-brands, %d ratings; %d saleable candidates, at most %d kept "
             "per member; %d user blocks (divisor %d)", group, dt, members, items, n_ratings, len(candidate_ids), k,
             blocks, divisor)

    # Transform: fit the group ALS on the gate's training part, judge every candidate, serve the choice
    gate_inputs = read_gate(features, group) if has_gate else None
    fit_frame = gate_inputs.part("train") if gate_inputs is not None else local
    group_items, failure = fit_group(spark, fit_frame, params, blocks, "the gate's training part" if gate_inputs
                                     is not None else "every rating (no gate split)")
    global_items = global_factors(fs, dt, group, root, "gate_items")
    if global_items is None:
        log.warning("no global ALS for %s under %s: global_als is not a candidate today (train_global_als did not "
                    "run or its fit failed; see its log)", dt, lake.global_model(dt, root))
    if group_items is None and global_items is None:
        gate, fallback_reason = {"evaluated": False, "passed": False, "reason": failure}, failure
    else:
        gate = judge_candidates(gate_inputs, group_items, failure, global_items, params, global_params, settings)
        fallback_reason = None if gate["passed"] else f"quality gate: {gate['reason']}"

    # Transform: affinities from the chosen candidate, popularity, or (training failed) the last good model
    served_model = gate.get("chosen") if gate["passed"] else None
    if served_model is not None:
        served_from = SERVED_FROM_MODEL
        with timed(log, f"preparing the served {served_model} on all {len(local)} ratings"):
            served = serve_model(fs, dt, group, root, served_model, gate, group_items, local, params, candidate_rows)
    else:
        # Popularity when the gate chose it; the last good model only when no model could be judged.
        good = last_good_model(fs, root, group, dt) if group_items is None and global_items is None else None
        if good:
            good_day, good_metrics = good
            served_from = f"last_good_model:{good_day}"
            folder = f"{lake.models(good_day, group, root)}/{FACTORS}"
            served = factors_served(lake.read_table(f"{folder}/members"), lake.read_table(f"{folder}/items"),
                                    candidate_rows, good_metrics.get("history_weight"))
            served_model = good_metrics.get("served_model", candidates.GROUP_ALS)
        else:
            served_from = SERVED_FROM_POPULARITY
            served = Served(candidate_ids, candidates.popularity_share(local, "member_id", candidate_ids),
                            candidate_rows["products"].to_numpy())
        log.warning("group %s is served from %s because %s", group, served_from, fallback_reason)
    scoring = scoring_frame(local, served)
    per_member = min(k, len(served.candidate_ids))

    # Load
    with timed(log, f"scoring and writing the affinities of {len(scoring)} members (their best of "
                    f"{len(served.candidate_ids)} candidates, at most {per_member}, until {enough_products} products; "
                    f"blocks of {block} members)"), \
            staged_partition(fs, lake.affinity(dt, group, root), log) as staging:
        rows = lake.write_table(staging, top_k.top_k_rows(scoring, served.candidate_ids, served.scorer(), k, block,
                                                          served.products, enough_products), AFFINITY_SCHEMA)
    scored_members = len(scoring)
    log.info("affinities: %d rows for %d of %d members (%.1f per member; %d candidates), from %s", rows,
             scored_members, members, rows / max(scored_members, 1), len(candidate_ids), served_from)
    with staged_partition(fs, lake.models(dt, group, root), log) as staging:
        if served_from == SERVED_FROM_MODEL:   # the day's served factors: a later day's last good model
            lake.write_table(f"{staging}/{FACTORS}/members", [served.members[["member_id", "features"]]],
                             als.MEMBER_FACTORS_SCHEMA)
            lake.write_table(f"{staging}/{FACTORS}/items", [served.items], als.ITEM_FACTORS_SCHEMA)
        fs.write_json(f"{staging}/metrics.json", {
            "dt": dt.isoformat(), "group": group, "members": members, "subclass_brands": items,
            "ratings": n_ratings, "candidates": len(candidate_ids), "top_k": k, "top_k_products": enough_products,
            "affinity_rows": rows,
            "members_scored": scored_members, "user_blocks": blocks, "user_blocks_divisor": divisor,
            "fit_on": "spark" if spark.cache_info().currsize else "driver",
            "gate": gate, "served_from": served_from, "served_model": served_model,
            "history_weight": served.history_weight, "fallback_reason": fallback_reason, "tuned_from": tuned_from,
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
