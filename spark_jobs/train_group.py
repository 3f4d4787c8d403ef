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

import time
from collections.abc import Callable, Iterable, Iterator
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
    lazy_session,
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


def last_good_day(days: Iterable[str], dt: date, metrics_of: Callable[[str], dict | None]) -> tuple[str, dict] | None:
    """(day, its metrics) of the newest day before `dt` whose model was served; `metrics_of(day)`:
    that day's metrics.json, None when it or the served factors are missing. Days are looked at
    newest first and no further than the first good one."""
    for day in sorted((d for d in days if d < dt.isoformat()), reverse=True):
        metrics = metrics_of(day)
        if metrics is not None and metrics.get("served_from") == SERVED_FROM_MODEL:
            return day, metrics
    return None


def last_good_model(fs: LakeFS, root: str, group: str, dt: date) -> tuple[str, dict] | None:
    """(day, its metrics) of the newest day before `dt` whose model of `group` was served (and
    whose factors exist)."""
    def metrics_of(day: str) -> dict | None:
        folder = lake.models(day, group, root)
        if not (fs.exists(f"{folder}/metrics.json") and fs.exists(f"{folder}/{FACTORS}/members")):
            return None
        return fs.read_json(f"{folder}/metrics.json")

    days = [name[len("dt="):] for name in fs.list_dirs(f"{root}/models") if name.startswith("dt=")]
    return last_good_day(days, dt, metrics_of)


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


def unjudged_gate(group_trained: bool, k: int, margin: float) -> dict:
    """The gate's record when the group's history has no gate split: the group ALS is served
    unjudged when it trained, else the global ALS."""
    chosen = candidates.GROUP_ALS if group_trained else candidates.GLOBAL_ALS
    return {"evaluated": False, "passed": True, "chosen": chosen, "k": k, "margin": margin,
            "reason": "the group's history has no training or no test part for the gate (evaluation."
                      "gate_holdout_days and gate_validation_days): not evaluated"}


def untrained_gate(failure: str | None) -> dict:
    """The gate's record when no model trained (neither the group's nor the day's global ALS)."""
    return {"evaluated": False, "passed": False, "reason": failure}


@dataclass(frozen=True)
class ServingDecision:
    """Which model the group is served and why: `served_from` is SERVED_FROM_MODEL (the gate's
    choice), `last_good_model:<day>` or SERVED_FROM_POPULARITY; `cf` the factors' model (the
    blend's CF model for repeat_blend); `history_weight` the blend's weight (None: no blend)."""
    served_from: str
    served_model: str | None
    fallback_reason: str | None
    cf: str | None = None
    history_weight: float | None = None
    last_good_day: str | None = None


def serving_decision(gate: dict, models_trained: bool, last_good: tuple[str, dict] | None = None) -> ServingDecision:
    """What the gate serves. `gate`: its verdict (candidates.gate, unjudged_gate or
    untrained_gate); `models_trained`: whether the group ALS or the day's global ALS trained;
    `last_good`: (day, metrics.json) of the newest earlier served model, used only when no model
    trained. The gate's chosen model when it passed; popularity when the gate judged every model
    below it; the last good model only when no model trained (popularity when there is none)."""
    if gate["passed"]:
        chosen = gate["chosen"]
        if chosen == candidates.REPEAT_BLEND:
            return ServingDecision(SERVED_FROM_MODEL, chosen, None, gate["blend"]["cf"], float(gate["blend"]["weight"]))
        return ServingDecision(SERVED_FROM_MODEL, chosen, None, chosen)
    if models_trained:
        return ServingDecision(SERVED_FROM_POPULARITY, None, f"quality gate: {gate['reason']}")
    if last_good:
        day, metrics = last_good
        return ServingDecision(f"last_good_model:{day}", metrics.get("served_model", candidates.GROUP_ALS),
                               gate["reason"], history_weight=metrics.get("history_weight"), last_good_day=day)
    return ServingDecision(SERVED_FROM_POPULARITY, None, gate["reason"])


def judge_candidates(gate_inputs: candidates.GateParts | None, group_items: pd.DataFrame | None, failure: str | None,
                     global_items: pd.DataFrame | None, params: dict, global_params: dict,
                     settings: candidates.Settings) -> dict:
    """The gate's verdict (candidates.gate) on the models that trained; without a gate split the
    group ALS is served unjudged."""
    if gate_inputs is None:
        gate = unjudged_gate(group_items is not None, settings.k, settings.margin)
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


FactorsLoader = Callable[[], tuple[pd.DataFrame | None, pd.DataFrame | None]]


@dataclass
class GroupInputs:
    """What train_group reads: the group's ratings and gate split, the day's candidates and the
    global ALS's gate factors; the factors a choice may need (the global ALS's served ones, the
    last good model) come as loaders, so that a day that needs none reads none."""
    dt: date
    group: str
    ratings: pd.DataFrame                            # RATING_COLUMNS
    candidate_rows: pd.DataFrame                     # subclass_brand_id ascending, products
    gate_parts: candidates.GateParts | None          # None: no gate split
    global_gate_items: pd.DataFrame | None           # None: no global ALS today
    global_served: FactorsLoader                     # (members, items) of the global ALS, or Nones
    last_good: Callable[[], tuple[str, dict] | None]
    last_good_factors: Callable[[str], tuple[pd.DataFrame, pd.DataFrame]]
    spark: Callable[[], SparkSession]                # started only for a fit too large for the driver
    global_folder: str                               # for the messages
    counts: dict                                     # group_counts: members, subclass_brands, ratings, top_k, ...


@dataclass
class GroupSettings:
    params: dict
    global_params: dict
    gate: candidates.Settings
    tuned_from: str | None


@dataclass
class GroupOutputs:
    gate: dict
    decision: ServingDecision
    served: Served
    affinity: Iterator[pd.DataFrame]                 # blocks of AFFINITY_SCHEMA rows, computed as written
    counts: dict                                     # members, subclass_brands, ratings, candidates, top_k, ...


def serve_model(decision: ServingDecision, group_items: pd.DataFrame | None, inputs: GroupInputs,
                params: dict) -> Served:
    """The chosen model on every rating: the group ALS continued on them (als.continued_model),
    the global ALS's own continued factors of the group's members, or one of those blended with
    each member's own history at the weight the gate chose."""
    if decision.cf == candidates.GROUP_ALS:
        members, items = als.continued_model(group_items, inputs.ratings, params)
    else:
        members, items = inputs.global_served()
        if members is None or items is None:
            raise JobError(f"the global ALS of {inputs.dt} has gate factors but no served factors for group "
                           f"{inputs.group} under {inputs.global_folder}",
                           "clear train_global_als of this run, then this task")
    return factors_served(members, items, inputs.candidate_rows, decision.history_weight)


def group_counts(ratings: pd.DataFrame, candidate_ids: np.ndarray, params: dict) -> dict:
    """The group's sizes and what its scoring keeps (every figure of metrics.json's header)."""
    members = ratings["member_id"].nunique()
    blocks, divisor = als.blocks_for(members, params)
    return {"members": members, "subclass_brands": ratings["subclass_brand_id"].nunique(), "ratings": len(ratings),
            "candidates": len(candidate_ids), "top_k": min(int(params["top_k"]), len(candidate_ids)),
            "top_k_products": int(params["top_k_products"]), "user_blocks": blocks, "user_blocks_divisor": divisor}


def extract(fs: LakeFS, args, config: dict, root: str, spark: Callable[[], SparkSession]) -> tuple[GroupInputs,
                                                                                                  GroupSettings]:
    """The group's settings (a weekly tune's replace the config's) and inputs; fails when the
    day's features or the group's ratings are missing."""
    dt, group = date.fromisoformat(args.dt), args.group
    params, tuned_from = with_tuning(group_settings(config, "als", group), tuned_settings(fs, root, dt), group)
    if tuned_from:
        log.info("group %s uses the settings the weekly tune of %s chose (%s): rank=%s regParam=%s alpha=%s", group,
                 tuned_from, f"{lake.tuning(tuned_from, root)}/settings.json", params["rank"], params["reg_param"],
                 params["alpha"])
    settings = GroupSettings(params, group_settings(config, "als", GLOBAL), candidates.settings_from(config, group),
                             tuned_from)
    gate = settings.gate
    features = lake.features(dt, root)
    ratings_path = f"{features}/ratings/group={group}"
    log.info("group %s on %s: reads %s and %s/candidates; als rank=%s maxIter=%s regParam=%s alpha=%s top_k=%s "
             "serve_iterations=%s; gate k=%s margin=%s tolerance=%s blend weights %s", group, dt, ratings_path,
             features, params["rank"], params["max_iter"], params["reg_param"], params["alpha"], params["top_k"],
             params["serve_iterations"], gate.k, gate.margin, gate.tolerance, gate.blend_weights)
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
    has_gate = fs.exists(f"{features}/gate/ratings/group={group}")
    counts = group_counts(local, candidate_rows["subclass_brand_id"].to_numpy(dtype=np.int64), params)
    log.info("group %s on %s: %d members, %d subclass-brands, %d ratings; %d saleable candidates, at most %d kept "
             "per member; %d user blocks (divisor %d)", group, dt, counts["members"], counts["subclass_brands"],
             counts["ratings"], counts["candidates"], counts["top_k"], counts["user_blocks"],
             counts["user_blocks_divisor"])

    def last_good_factors(day: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        folder = f"{lake.models(day, group, root)}/{FACTORS}"
        return lake.read_table(f"{folder}/members"), lake.read_table(f"{folder}/items")

    inputs = GroupInputs(
        dt, group, local, candidate_rows, read_gate(features, group) if has_gate else None,
        global_factors(fs, dt, group, root, "gate_items"),
        lambda: tuple(global_factors(fs, dt, group, root, which) for which in ("members", "items")),
        lambda: last_good_model(fs, root, group, dt), last_good_factors, spark, lake.global_model(dt, root), counts)
    return inputs, settings


def transform(inputs: GroupInputs, settings: GroupSettings) -> GroupOutputs:
    """Fit the group ALS on the gate's training part, judge every candidate, decide what is
    served (serving_decision) and prepare its scoring of every member; writes nothing (the
    affinities are computed block by block as `load` writes them). The fallbacks' factors come
    through `inputs`' loaders, read only when the decision needs them."""
    params, gate_settings = settings.params, settings.gate
    counts = inputs.counts
    fit_frame = inputs.gate_parts.part("train") if inputs.gate_parts is not None else inputs.ratings
    group_items, failure = fit_group(inputs.spark, fit_frame, params, counts["user_blocks"],
                                     "the gate's training part" if inputs.gate_parts is not None
                                     else "every rating (no gate split)")
    global_items = inputs.global_gate_items
    if global_items is None:
        log.warning("no global ALS for %s under %s: global_als is not a candidate today (train_global_als did not "
                    "run or its fit failed; see its log)", inputs.dt, inputs.global_folder)
    trained = group_items is not None or global_items is not None
    gate = (judge_candidates(inputs.gate_parts, group_items, failure, global_items, params, settings.global_params,
                             gate_settings) if trained else untrained_gate(failure))
    decision = serving_decision(gate, trained, None if trained else inputs.last_good())
    served = served_for(decision, group_items, inputs, params)
    if decision.served_from != SERVED_FROM_MODEL:
        log.warning("group %s is served from %s because %s", inputs.group, decision.served_from,
                    decision.fallback_reason)
    scoring = scoring_frame(inputs.ratings, served)
    affinity = top_k.top_k_rows(scoring, served.candidate_ids, served.scorer(), counts["top_k"],
                                int(params["score_block_members"]), served.products, counts["top_k_products"])
    return GroupOutputs(gate, decision, served, affinity, {**counts, "members_scored": len(scoring)})


def served_for(decision: ServingDecision, group_items: pd.DataFrame | None, inputs: GroupInputs,
               params: dict) -> Served:
    """The factors (or popularity) of `decision`."""
    if decision.served_from == SERVED_FROM_MODEL:
        with timed(log, f"preparing the served {decision.served_model} on all {len(inputs.ratings)} ratings"):
            return serve_model(decision, group_items, inputs, params)
    if decision.last_good_day is not None:
        return factors_served(*inputs.last_good_factors(decision.last_good_day), inputs.candidate_rows,
                              decision.history_weight)
    candidate_ids = inputs.candidate_rows["subclass_brand_id"].to_numpy(dtype=np.int64)
    return Served(candidate_ids, candidates.popularity_share(inputs.ratings, "member_id", candidate_ids),
                  inputs.candidate_rows["products"].to_numpy())


def group_metrics(inputs: GroupInputs, settings: GroupSettings, outputs: GroupOutputs, rows: int,
                  fit_on: str) -> dict:
    """metrics.json of the group's day."""
    counts, decision, params = outputs.counts, outputs.decision, settings.params
    return {
        "dt": inputs.dt.isoformat(), "group": inputs.group, "members": counts["members"],
        "subclass_brands": counts["subclass_brands"], "ratings": counts["ratings"],
        "candidates": counts["candidates"], "top_k": counts["top_k"], "top_k_products": counts["top_k_products"],
        "affinity_rows": rows, "members_scored": counts["members_scored"], "user_blocks": counts["user_blocks"],
        "user_blocks_divisor": counts["user_blocks_divisor"], "fit_on": fit_on,
        "gate": outputs.gate, "served_from": decision.served_from, "served_model": decision.served_model,
        "history_weight": outputs.served.history_weight, "fallback_reason": decision.fallback_reason,
        "tuned_from": settings.tuned_from,
        "params": {key: params[key] for key in ("rank", "max_iter", "reg_param", "alpha", "item_blocks", "seed",
                                                "serve_iterations", "driver_fit_max_ratings")},
    }


def load(fs: LakeFS, root: str, inputs: GroupInputs, settings: GroupSettings, outputs: GroupOutputs) -> dict:
    """Write the affinities (scored block by block as they are written), then the served factors
    and metrics.json; returns the metrics."""
    dt, group, counts, served = inputs.dt, inputs.group, outputs.counts, outputs.served
    per_member = min(counts["top_k"], len(served.candidate_ids))
    with timed(log, f"scoring and writing the affinities of {counts['members_scored']} members (their best of "
                    f"{len(served.candidate_ids)} candidates, at most {per_member}, until "
                    f"{counts['top_k_products']} products; blocks of {int(settings.params['score_block_members'])} "
                    "members)"), staged_partition(fs, lake.affinity(dt, group, root), log) as staging:
        rows = lake.write_table(staging, outputs.affinity, AFFINITY_SCHEMA)
    scored = counts["members_scored"]
    log.info("affinities: %d rows for %d of %d members (%.1f per member; %d candidates), from %s", rows,
             scored, counts["members"], rows / max(scored, 1), counts["candidates"], outputs.decision.served_from)
    metrics = group_metrics(inputs, settings, outputs, rows, "spark" if inputs.spark.cache_info().currsize
                            else "driver")
    with staged_partition(fs, lake.models(dt, group, root), log) as staging:
        if outputs.decision.served_from == SERVED_FROM_MODEL:   # the day's served factors: a later day's last good
            lake.write_table(f"{staging}/{FACTORS}/members", [served.members[["member_id", "features"]]],
                             als.MEMBER_FACTORS_SCHEMA)
            lake.write_table(f"{staging}/{FACTORS}/items", [served.items], als.ITEM_FACTORS_SCHEMA)
        fs.write_json(f"{staging}/metrics.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv, group=True)
    app_name, models = f"flashfeed-als-{args.dt}-group-{args.group}", lake.models(args.dt, args.group, root)
    # Spark's ALS truncates its lineage in the checkpoints
    spark = lazy_session(lambda: spark_session(app_name, config), models + ".__checkpoints")
    fs = LakeFS()
    log_driver_ready(app_name, "a Spark session starts only for a fit too large for the driver")
    inputs, settings = extract(fs, args, config, root, spark)
    outputs = transform(inputs, settings)
    load(fs, root, inputs, settings, outputs)
    fs.delete(models + ".__checkpoints")
    log.info("group %s on %s done in %.1f s (served from %s): wrote %s and %s", args.group, inputs.dt,
             time.monotonic() - started, outputs.decision.served_from, lake.affinity(args.dt, args.group, root),
             models)
    if spark.cache_info().currsize:
        spark().stop()


if __name__ == "__main__":
    run_job(main, log)
