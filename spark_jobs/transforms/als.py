"""Implicit ALS as the pipeline uses it: Spark's estimator from a group's settings, the same
algorithm in numpy for groups that fit on the driver, and scores."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession
from scipy import sparse

from spark_jobs.transforms import affinity

OUTER_CHUNK_VALUES = 1 << 25   # doubles of factor outer products held at once (256 MB)
MEMBER_FACTORS_SCHEMA = pa.schema([("member_id", pa.string()), ("features", pa.list_(pa.float64()))])
ITEM_FACTORS_SCHEMA = pa.schema([("subclass_brand_id", pa.int32()), ("features", pa.list_(pa.float64()))])


def estimator(params: dict, user_blocks: int) -> ALS:
    """ALS on (member_sk, subclass_brand_id, rating) with a group's settings (`als` section)."""
    return ALS(
        rank=int(params["rank"]), maxIter=int(params["max_iter"]), regParam=float(params["reg_param"]),
        alpha=float(params["alpha"]), implicitPrefs=True, userCol="member_sk", itemCol="subclass_brand_id",
        ratingCol="rating", numUserBlocks=user_blocks, numItemBlocks=int(params["item_blocks"]),
        checkpointInterval=int(params["checkpoint_interval"]), seed=int(params["seed"]),
    )


def blocks_for(members: int, params: dict) -> tuple[int, int]:
    """(user blocks, divisor) for a group of `members` members."""
    return affinity.user_blocks(members, int(params["user_blocks_threshold"]),
                                int(params["user_blocks_divisor_small"]), int(params["user_blocks_divisor_large"]))


@dataclass(frozen=True)
class ImplicitRatings:
    """Ratings as one ALS half-step needs them, rows solved from columns' factors (rows x columns):
    confidence - 1 (c = alpha |r|), (1 + c) where r > 0, and the count of r > 0 per row."""
    confidence: sparse.csc_matrix
    preference: sparse.csr_matrix
    positives: np.ndarray

    @classmethod
    def of(cls, row_index: np.ndarray, col_index: np.ndarray, rating: np.ndarray, rows: int, cols: int,
           alpha: float) -> ImplicitRatings:
        rating = np.asarray(rating, dtype=np.float64)
        confidence = alpha * np.abs(rating)
        positive = rating > 0
        where = (np.asarray(row_index), np.asarray(col_index))
        return cls(sparse.csc_matrix((confidence, where), shape=(rows, cols)),
                   sparse.csr_matrix(((1.0 + confidence) * positive, where), shape=(rows, cols)),
                   np.bincount(where[0], weights=positive, minlength=rows))

    def solve(self, col_factors: np.ndarray, reg_param: float, chunk_cols: int | None = None) -> np.ndarray:
        """One half-step of Spark's implicit ALS (ALS.computeFactors with implicitPrefs): for row u,
            (Y'Y + sum_i c_ui y_i y_i' + reg_param n_u I) x_u = sum_{i: r_ui > 0} (1 + c_ui) y_i
        with n_u its count of r > 0; rows without one get zeros. The outer products y_i y_i' are
        formed for `chunk_cols` columns at a time (OUTER_CHUNK_VALUES doubles by default)."""
        factors = np.asarray(col_factors, dtype=np.float64)
        rank = factors.shape[1]
        chunk_cols = chunk_cols or max(1, OUTER_CHUNK_VALUES // (rank * rank))
        normal = np.zeros((self.confidence.shape[0], rank * rank))
        for start in range(0, len(factors), chunk_cols):
            y = factors[start:start + chunk_cols]
            normal += self.confidence[:, start:start + chunk_cols] @ (y[:, :, None] * y[:, None, :]).reshape(len(y), -1)
        normal = normal.reshape(-1, rank, rank) + factors.T @ factors
        normal += (reg_param * self.positives)[:, None, None] * np.eye(rank)
        right = self.preference @ factors
        solved = np.zeros((len(normal), rank))
        rated = self.positives > 0
        solved[rated] = np.linalg.solve(normal[rated], right[rated][:, :, None])[:, :, 0]
        return solved


def fold_in(member_index: np.ndarray, item_index: np.ndarray, rating: np.ndarray, item_factors: np.ndarray,
            members: int, alpha: float, reg_param: float, chunk_cols: int | None = None) -> np.ndarray:
    """Members' factors from their ratings with the item factors held fixed: one user half-step
    of Spark's implicit ALS, so that applied to a fitted model's item factors it reproduces the
    model's own user factors. `member_index` (0 .. members-1) and `item_index` (rows of
    `item_factors`) give each rating's member and item; returns members x rank."""
    by_member = ImplicitRatings.of(member_index, item_index, rating, members, len(item_factors), alpha)
    return by_member.solve(item_factors, reg_param, chunk_cols)


def initial_factors(count: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    """Spark's ALS start: a Gaussian vector of unit length per member or item."""
    factors = rng.standard_normal((count, rank))
    return factors / np.linalg.norm(factors, axis=1, keepdims=True)


def iterate(member_index: np.ndarray, item_index: np.ndarray, rating: np.ndarray, users: np.ndarray, items: int,
            alpha: float, reg_param: float, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """(member factors, item factors) after `iterations` ALS iterations from member factors
    `users`, each an item half-step then a user half-step, as Spark orders them."""
    by_item = ImplicitRatings.of(item_index, member_index, rating, items, len(users), alpha)
    by_member = ImplicitRatings.of(member_index, item_index, rating, len(users), items, alpha)
    item_factors = np.zeros((items, users.shape[1]))
    for _ in range(iterations):
        item_factors = by_item.solve(users, reg_param)
        users = by_member.solve(item_factors, reg_param)
    return users, item_factors


def fit_on_driver(member_index: np.ndarray, item_index: np.ndarray, rating: np.ndarray, members: int, items: int,
                  params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(member factors, item factors): Spark's implicit ALS (the same start, normal equations and
    order of half-steps) in numpy on the driver, for a group whose ratings fit there
    (`als.driver_fit_max_ratings`): Spark's own fit of such a group is mostly fixed cost.
    Refuses the settings Spark's ALS refuses, with the same names."""
    for name, least in (("rank", 1), ("max_iter", 0), ("reg_param", 0), ("alpha", 0)):
        if not float(params[name]) >= least:
            raise ValueError(f"als {name} must be at least {least}, got {params[name]!r}")
    start = initial_factors(members, int(params["rank"]), np.random.default_rng(int(params["seed"])))
    return iterate(member_index, item_index, rating, start, items, float(params["alpha"]), float(params["reg_param"]),
                   int(params["max_iter"]))


def warm_start(member_index: np.ndarray, item_index: np.ndarray, rating: np.ndarray, item_factors: np.ndarray,
               known_items: np.ndarray, members: int, items: int, alpha: float, reg_param: float,
               iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """(member factors, item factors) after continuing a fitted model on more ratings: every
    member folded in against the model's item factors (items the model does not know, where
    `known_items` is False, do not count), then `iterations` full ALS iterations over all the
    ratings. The item half-step also gives items first rated in the new ratings their factors."""
    known = known_items[item_index]
    users = fold_in(member_index[known], item_index[known], rating[known], item_factors, members, alpha, reg_param)
    if not iterations:
        return users, item_factors
    return iterate(member_index, item_index, rating, users, items, alpha, reg_param, iterations)


def factor_matrix(factors: pd.DataFrame, key: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(present, matrix): which of `ids` have factors in `factors` (key, features), and their
    factors in `ids` order (zeros where absent)."""
    position = pd.Index(factors[key]).get_indexer(ids)
    present = position >= 0
    stacked = np.stack(factors["features"].to_numpy()) if len(factors) else np.zeros((0, 1))
    matrix = np.zeros((len(ids), stacked.shape[1]))
    matrix[present] = stacked[position[present]]
    return present, matrix


@dataclass
class IndexedRatings:
    """Ratings as numpy ALS takes them: members and items numbered 0.. in key order."""
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


def fits_on_driver(ratings: int, params: dict) -> bool:
    return ratings <= int(params["driver_fit_max_ratings"])


def fitted_factors(spark: Callable[[], SparkSession], ratings: pd.DataFrame, params: dict,
                   blocks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(member factors by member_sk, item factors by subclass_brand_id) of one ALS fit of
    `ratings` (member_sk, subclass_brand_id, rating): in numpy on the driver up to
    `als.driver_fit_max_ratings` (the same algorithm; Spark's own fit of that much is mostly the
    JVM warming up), else Spark's ALS in the session `spark()` starts."""
    if fits_on_driver(len(ratings), params):
        indexed = IndexedRatings.of(ratings, "member_sk")
        return indexed.factor_frames(*fit_on_driver(indexed.member_index, indexed.item_index, indexed.rating,
                                                    len(indexed.member_keys), len(indexed.item_ids), params))
    # Fitted from the frame already on the driver: reading the Parquet again costs a cold
    # Spark scan (about a second a group).
    frame = spark().createDataFrame(ratings[["member_sk", "subclass_brand_id", "rating"]])   # the session first
    model = estimator(params, blocks).fit(frame)
    return (model.userFactors.withColumnRenamed("id", "member_sk").toPandas(),
            model.itemFactors.withColumnRenamed("id", "subclass_brand_id").toPandas())


def continued_model(items: pd.DataFrame, ratings: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(members: member_id, features; items: subclass_brand_id, features): a fitted model (its
    item factors `items`) continued on every rating (warm_start, `serve_iterations`); every
    member is solved again from all her ratings, so the model's own member factors are not needed."""
    indexed = IndexedRatings.of(ratings, "member_id")
    known, item_matrix = factor_matrix(items, "subclass_brand_id", indexed.item_ids)
    users, item_factors = warm_start(indexed.member_index, indexed.item_index, indexed.rating, item_matrix, known,
                                     len(indexed.member_keys), len(indexed.item_ids), float(params["alpha"]),
                                     float(params["reg_param"]), int(params["serve_iterations"]))
    return indexed.factor_frames(users, item_factors)
