"""The models a member group can be served, judged on the same members, and the gate's choice.

Candidates (their names in metrics.json, the report and `flashfeed evaluate`):
- group_als: the group's own implicit ALS;
- global_als: one implicit ALS over every member, restricted to the group's members;
- repeat_blend: (1 - w) x the better of those two (on validation) + w x the member's own
  history, her recency-weighted implicit rating; each part scaled by its largest value in the
  member's row, so w is a share; w chosen on validation;
- popularity: the share of the group's members who rated each subclass-brand: the floor.

Every candidate is a top_k.Scorer. A judging (`Stage`) is a frame of evaluated members with
their history (`history_items`, `history_values`: recency-weighted ratings, `seen`: what
they rated) and what they must find (`relevant`), over the subclass-brands live then. ALS
members are folded in on the stage's history against a model's item factors (als.fold_in),
so one fit serves the validation and, with the validation part added to the history, the test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spark_jobs.transforms import als, top_k
from spark_jobs.transforms.als import factor_matrix
from spark_jobs.transforms.top_k import Scorer

GROUP_ALS, GLOBAL_ALS, REPEAT_BLEND, POPULARITY = "group_als", "global_als", "repeat_blend", "popularity"
CF_MODELS = (GROUP_ALS, GLOBAL_ALS)
MODELS = (GROUP_ALS, GLOBAL_ALS, REPEAT_BLEND)
HISTORY_COLUMNS = ["member_sk", "subclass_brand_id", "rating", "recent_rating"]


def factor_scorer(item_matrix: np.ndarray, known: np.ndarray, column: str = "features") -> Scorer:
    """Dot products of each member's vector (column `column`) with the items' factors; items
    the model does not know (`known` False) cannot be ranked."""
    matrix, unknown = np.asarray(item_matrix, dtype=np.float64), ~np.asarray(known, dtype=bool)

    def score(part: pd.DataFrame) -> np.ndarray:
        vectors = np.stack(part[column].to_numpy()) if len(part) else np.zeros((0, matrix.shape[1]))
        scores = vectors @ matrix.T
        scores[:, unknown] = -np.inf
        return scores
    return score


def boosted_scorer(model: Scorer, boost: float, item_ids: np.ndarray) -> Scorer:
    """The model's scores x (1 + boost) on each member's `boost_items` (the subclass-brands of
    the subclasses she recently browsed without buying): the collections' boost."""
    def score(part: pd.DataFrame) -> np.ndarray:
        scores = model(part)
        rows, columns, _ = top_k.item_positions(part["boost_items"], item_ids)
        scores[rows, columns] *= 1.0 + boost
        return scores
    return score


def shared_scorer(values: np.ndarray) -> Scorer:
    """The same scores (e.g. popularity) for every member."""
    values = np.asarray(values, dtype=np.float64)
    return lambda part: np.tile(values, (len(part), 1))


def row_scaled(scores: np.ndarray) -> np.ndarray:
    """Each row divided by its largest finite absolute value (rows of zeros stay zeros); -inf
    (not rankable) becomes -1, the lowest a scaled score can be."""
    finite = np.isfinite(scores)
    largest = np.where(finite, np.abs(scores), 0.0).max(axis=1, initial=0.0)
    scaled = np.where(finite, scores, 0.0) / np.where(largest > 0, largest, 1.0)[:, None]
    return np.where(finite, scaled, -1.0)


def blend_scorer(cf: Scorer, weight: float, item_ids: np.ndarray) -> Scorer:
    """(1 - weight) x the scaled CF scores + weight x the scaled own history (`history_items`,
    `history_values`): a member's favourites come back, and CF fills the rest."""
    def score(part: pd.DataFrame) -> np.ndarray:
        history = top_k.history_block(part, item_ids, "history_items", "history_values")
        return (1.0 - weight) * row_scaled(cf(part)) + weight * row_scaled(history)
    return score


@dataclass
class Stage:
    """One judging: evaluated members (member_sk, history_items, history_values, seen,
    relevant) over the subclass-brands live then, with every group member's history."""
    members: pd.DataFrame
    item_ids: np.ndarray       # ascending
    popularity: np.ndarray     # per item: share of the group's members who rated it in the history
    history: pd.DataFrame      # HISTORY_COLUMNS of every member of the group


def summed(ratings: pd.DataFrame) -> pd.DataFrame:
    """HISTORY_COLUMNS with one row per (member_sk, subclass_brand_id): parts added up."""
    return ratings.groupby(["member_sk", "subclass_brand_id"], as_index=False)[["rating", "recent_rating"]].sum()


def member_lists(ratings: pd.DataFrame, items: str, values: str | None = None) -> pd.DataFrame:
    """Per member_sk: her subclass-brand ids (column `items`) and, when `values` names a rating
    column, its values in the same order (column `values`)."""
    grouped = ratings.sort_values(["member_sk", "subclass_brand_id"]).groupby("member_sk")
    lists = grouped["subclass_brand_id"].apply(lambda s: s.to_numpy(dtype=np.int64)).rename(items).to_frame()
    if values:
        lists[values] = grouped[values].apply(lambda s: s.to_numpy(dtype=np.float64))
    return lists


def popularity_share(ratings: pd.DataFrame, member_key: str, item_ids: np.ndarray) -> np.ndarray:
    """Per item of `item_ids`, the share of the members in `ratings` who rated it (0: nobody)."""
    members = max(ratings[member_key].nunique(), 1)
    rated_by = ratings.groupby("subclass_brand_id")[member_key].nunique()
    return rated_by.reindex(item_ids).fillna(0).to_numpy(dtype=np.float64) / members


def stage(history: pd.DataFrame, target: pd.DataFrame, live: np.ndarray, exclude_seen: bool) -> Stage:
    """The judging of `target` (member_sk, subclass_brand_id: what members did next) from
    `history` (HISTORY_COLUMNS, one row per pair): members with a history and at least one
    relevant subclass-brand, i.e. one in `target` (not one in her history when `exclude_seen`)."""
    wanted = target[["member_sk", "subclass_brand_id"]].drop_duplicates()
    wanted = wanted[wanted["member_sk"].isin(history["member_sk"])]
    if exclude_seen:
        seen = wanted.merge(history[["member_sk", "subclass_brand_id"]], how="left", indicator=True)
        wanted = wanted[(seen["_merge"] == "left_only").to_numpy()]
    relevant = member_lists(wanted, "relevant")
    known = member_lists(history[history["member_sk"].isin(relevant.index)], "history_items", "recent_rating")
    members = relevant.join(known.rename(columns={"recent_rating": "history_values"}), how="inner")
    members["seen"] = members["history_items"]
    ids = np.unique(np.asarray(live, dtype=np.int64))
    return Stage(members.reset_index(), ids, popularity_share(history, "member_sk", ids), history)


def with_member_vectors(target: Stage, name: str, items: pd.DataFrame, params: dict) -> tuple[Scorer, np.ndarray]:
    """Adds column `features_<name>` to the stage's members, each folded in on her history
    against the model's item factors `items` (subclass_brand_id, features); returns the
    model's scorer over the stage's items and which of them it knows."""
    history = target.history[target.history["member_sk"].isin(target.members["member_sk"])]
    known_history = pd.Index(items["subclass_brand_id"]).get_indexer(history["subclass_brand_id"].to_numpy()) >= 0
    members, member_index = np.unique(history["member_sk"].to_numpy()[known_history], return_inverse=True)
    item_ids, item_index = np.unique(history["subclass_brand_id"].to_numpy()[known_history], return_inverse=True)
    _, item_matrix = factor_matrix(items, "subclass_brand_id", item_ids)
    vectors = als.fold_in(member_index, item_index, history["rating"].to_numpy(dtype=np.float64)[known_history],
                          item_matrix, len(members), float(params["alpha"]), float(params["reg_param"]))
    rank = item_matrix.shape[1] if len(item_ids) else np.stack(items["features"].to_numpy()).shape[1]
    position = pd.Index(members).get_indexer(target.members["member_sk"].to_numpy())
    folded = np.zeros((len(target.members), rank))
    folded[position >= 0] = vectors[position[position >= 0]]
    target.members[f"features_{name}"] = list(folded)
    known, candidate_matrix = factor_matrix(items, "subclass_brand_id", target.item_ids)
    return factor_scorer(candidate_matrix, known, f"features_{name}"), known


def judged(target: Stage, scorer: Scorer, k: int, block: int, exclude_seen: bool) -> dict:
    return top_k.evaluate(target.members, target.item_ids, scorer, k, block, "seen" if exclude_seen else None)


@dataclass
class Settings:
    """What the gate needs from the config (`evaluation` and the models' `als` sections)."""
    k: int
    margin: float              # a model is served when its NDCG@k >= popularity's - margin
    tolerance: float           # models within this NDCG@k of the best tie; the first in MODELS wins
    blend_weights: list[float]
    exclude_seen: bool
    block: int


def settings_from(config: dict, group: str | None = None, k: int | None = None,
                  exclude_seen: bool | None = None) -> Settings:
    """The gate's settings from the config (`evaluation`; the score block of the group's `als`);
    `flashfeed evaluate` passes its own k and seen rule."""
    gate_cfg = config["evaluation"]
    block = (config["als"].get("group_overrides") or {}).get(str(group), {}).get(
        "score_block_members", config["als"]["score_block_members"])
    return Settings(k=gate_cfg["k"] if k is None else k, margin=gate_cfg["gate_ndcg_margin"],
                    tolerance=gate_cfg["gate_ndcg_tolerance"],
                    blend_weights=gate_cfg["blend_weights"],
                    exclude_seen=gate_cfg["exclude_seen"] if exclude_seen is None else exclude_seen,
                    block=block)


def choose(test: dict[str, dict], settings: Settings) -> tuple[str, bool, str]:
    """(candidate, passed, reason): the best model on `test` (one part's metrics by candidate;
    ties within the tolerance go to the first in MODELS), served when it reaches popularity's
    NDCG@k - margin; else popularity."""
    k, floor = settings.k, test[POPULARITY]["ndcg@k"]
    models = [name for name in MODELS if name in test]
    if not models:
        return POPULARITY, False, "no model could be judged"
    best = max(test[name]["ndcg@k"] for name in models)
    chosen = next(name for name in models if test[name]["ndcg@k"] >= best - settings.tolerance)
    ndcg = test[chosen]["ndcg@k"]
    if ndcg >= floor - settings.margin:
        return chosen, True, (f"{chosen} NDCG@{k} {ndcg:.4f} (best model) >= popularity {floor:.4f} - margin "
                              f"{settings.margin}")
    return POPULARITY, False, (f"the best model, {chosen}, has NDCG@{k} {ndcg:.4f}, below popularity {floor:.4f} - "
                               f"margin {settings.margin}")


def gate(validation: Stage, test: Stage, item_factors: dict[str, tuple[pd.DataFrame, dict]],
         settings: Settings, test_item_factors: dict[str, tuple[pd.DataFrame, dict]] | None = None,
         choose_on: str = "test") -> tuple[dict, dict[str, Scorer]]:
    """(result, the test part's scorers): every candidate's metrics on both parts and the gate's
    choice. `item_factors`: per CF model that trained, its item factors (fit before the
    validation part) and its als settings;
    `test_item_factors`: the same refit before the test part (default: the same factors, their
    members folded in on the longer history). The blend's CF model and weight are chosen on
    validation; the choice on `choose_on`: the daily gate chooses on its test part, the newest
    data; `flashfeed evaluate` on validation, keeping its test part for the report."""
    k, block, exclude = settings.k, settings.block, settings.exclude_seen
    # A model fit on no ratings (an empty part) cannot be judged.
    item_factors = {name: fitted for name, fitted in item_factors.items() if len(fitted[0])}
    test_item_factors = {name: fitted for name, fitted in (test_item_factors or item_factors).items()
                         if len(fitted[0])}
    result: dict = {"evaluated": True, "k": k, "margin": settings.margin, "tolerance": settings.tolerance,
                    "exclude_seen": exclude, "validation": {}, "test": {}}
    scorers: dict[str, dict[str, Scorer]] = {"validation": {}, "test": {}}
    for part, target in (("validation", validation), ("test", test)):
        scorers[part][POPULARITY] = shared_scorer(target.popularity)
        for name, (items, params) in (item_factors if part == "validation" else test_item_factors).items():
            scorers[part][name] = with_member_vectors(target, name, items, params)[0]
    if len(validation.members):
        for name, scorer in scorers["validation"].items():
            result["validation"][name] = judged(validation, scorer, k, block, exclude)
    cf_models = [name for name in CF_MODELS if name in item_factors and name in test_item_factors]
    if cf_models:
        # Without validation members the first CF model and the middle weight are taken, unjudged.
        cf = max(cf_models, key=lambda name: result["validation"].get(name, {}).get("ndcg@k", 0.0))
        by_weight = {str(w): judged(validation, blend_scorer(scorers["validation"][cf], w, validation.item_ids), k,
                                    block, exclude)["ndcg@k"] for w in settings.blend_weights} \
            if len(validation.members) else {}
        weight = (max(settings.blend_weights, key=lambda w: by_weight[str(w)]) if by_weight
                  else settings.blend_weights[len(settings.blend_weights) // 2])
        result["blend"] = {"cf": cf, "weight": weight, "validation_ndcg_by_weight": by_weight}
        if by_weight:
            result["validation"][REPEAT_BLEND] = judged(
                validation, blend_scorer(scorers["validation"][cf], weight, validation.item_ids), k, block, exclude)
        scorers["test"][REPEAT_BLEND] = blend_scorer(scorers["test"][cf], weight, test.item_ids)
    for name, scorer in scorers["test"].items():
        result["test"][name] = judged(test, scorer, k, block, exclude)
    chosen, passed, reason = choose(result[choose_on], settings) if result[choose_on] else \
        (POPULARITY, False, f"no member to judge on the {choose_on} part")
    return {**result, "chosen": chosen, "passed": passed, "reason": reason}, scorers["test"]


@dataclass
class GateParts:
    """One group's ratings split for the gate (train, validation, test), and the subclass-brands
    rankable in each part."""
    ratings: pd.DataFrame        # member_sk, subclass_brand_id, part, rating, recent_rating
    live: pd.DataFrame           # subclass_brand_id, part

    def part(self, *names: str) -> pd.DataFrame:
        return self.ratings[self.ratings["part"].isin(names)]

    def stages(self, exclude_seen: bool) -> tuple[Stage, Stage]:
        """(validation, test): the validation part judged from the training part, the test part
        from both."""
        live = {part: rows["subclass_brand_id"].to_numpy() for part, rows in self.live.groupby("part")}
        empty = np.zeros(0, dtype=np.int64)
        return (stage(summed(self.part("train")), self.part("validation"), live.get("validation", empty),
                      exclude_seen),
                stage(summed(self.part("train", "validation")), self.part("test"), live.get("test", empty),
                      exclude_seen))


def summary_line(result: dict) -> str:
    """`name NDCG@k validation/test` for every candidate, for the task log."""
    k = result["k"]
    return "; ".join(f"{name} NDCG@{k} {result['validation'].get(name, {}).get('ndcg@k', float('nan')):.4f}/"
                     f"{metrics['ndcg@k']:.4f}" for name, metrics in result["test"].items())
