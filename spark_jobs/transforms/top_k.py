"""Top-K among candidates, vectorised: a model's scores for blocks of members, k best per row.

A model is a `Scorer` (transforms/candidates.py): for a block of members it returns their
scores over the candidates, a few thousand at most, e.g. their ALS factors times the candidate
matrix in one numpy product, one popularity vector for everyone, or a blend with each member's
own history. The members of a group are taken in blocks of `block_members`, and the k best of
every row are kept with a partial sort. That replaces a cross join of every member with every
candidate followed by a window over all those rows. A group's members and their factors fit
on the driver (about 130,000 members in the largest group of a 10^6-member retailer), and so
the scoring runs there, block by block, without a Spark job's fixed costs.

Order: affinity descending, then subclass_brand_id ascending, exactly as the former window
(`ORDER BY affinity DESC, subclass_brand_id`), ties at the k-th place included. Items a member
has already seen can be left out (evaluation): they are never returned, so a member may get
fewer than k items.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from flashfeed.quality.metrics import METRICS, ranking_metrics_block

# A model's scores for a block of members: rows of a members frame -> rows x candidates
# (columns in ascending subclass_brand_id; -inf: the model cannot rank that item for that member).
Scorer = Callable[[pd.DataFrame], np.ndarray]


def top_k_block(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, valid) of each row's k best scores: `columns` is rows x k, ordered by score
    descending and column ascending; `valid` marks real entries (False where a row has fewer
    than k finite scores: -inf marks an excluded item). Columns must be in item-id order."""
    rows, width = scores.shape
    k = min(k, width)
    if rows == 0 or k == 0:
        return np.zeros((rows, 0), dtype=np.int64), np.zeros((rows, 0), dtype=bool)
    # The k-th largest score of each row, then everything above it plus the lowest columns tied
    # with it: the same set a sort by (score desc, column asc) would keep.
    kth = np.partition(scores, width - k, axis=1)[:, width - k]
    chosen = scores >= kth[:, None]
    surplus = chosen.sum(axis=1) > k      # more than one score equal to the k-th: rare with real factors
    if surplus.any():
        tied = scores[surplus] == kth[surplus, None]
        room = k - (scores[surplus] > kth[surplus, None]).sum(axis=1)
        chosen[surplus] &= ~tied | (np.cumsum(tied, axis=1) <= room[:, None])
    columns = np.nonzero(chosen)[1].reshape(rows, k)          # ascending within each row
    values = np.take_along_axis(scores, columns, axis=1)
    # A stable sort by score keeps the ascending columns of equal scores in order.
    order = np.argsort(-values, axis=1, kind="stable")
    columns = np.take_along_axis(columns, order, axis=1)
    valid = np.isfinite(np.take_along_axis(values, order, axis=1))
    return columns, valid


def item_positions(lists: Iterable, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, kept) of the ids in each row's list (arrays of subclass_brand_id, or None)
    that are among the sorted `item_ids`; `kept` marks, over all the lists' ids in order, those
    that were found (to pick matching values from parallel lists)."""
    lists = [() if s is None else s for s in lists]
    lengths = np.array([len(s) for s in lists], dtype=np.int64)
    if not lengths.sum():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in lists if len(s)])
    rows = np.repeat(np.arange(len(lists)), lengths)
    position = np.searchsorted(item_ids, flat)
    kept = (position < len(item_ids)) & (item_ids[np.minimum(position, len(item_ids) - 1)] == flat)
    return rows[kept], position[kept], kept


def exclude_seen(scores: np.ndarray, seen: Iterable, item_ids: np.ndarray) -> None:
    """Set the scores of each row's seen items to -inf, in place."""
    rows, columns, _ = item_positions(seen, item_ids)
    scores[rows, columns] = -np.inf


def history_block(part: pd.DataFrame, item_ids: np.ndarray, items: str, values: str) -> np.ndarray:
    """rows x items: each member's values (column `values`, parallel to the ids in column
    `items`) at the positions of `item_ids` (ascending), 0 elsewhere."""
    block = np.zeros((len(part), len(item_ids)))
    rows, columns, kept = item_positions(part[items], item_ids)
    if kept.size:
        block[rows, columns] = np.concatenate([np.asarray(v, dtype=np.float64) for v in part[values]])[kept]
    return block


def top_k_rows(members: pd.DataFrame, item_ids: np.ndarray, scorer: Scorer, k: int, block_members: int,
               item_products: np.ndarray | None = None, enough_products: int | None = None) -> Iterator[pd.DataFrame]:
    """Blocks of rows (member_id, subclass_brand_id, affinity, rating, affinity_rank): each
    member's best candidates, at most k of them, and no more than it takes for their products
    to add up to `enough_products` (`item_products`: products per candidate; None: always k).

    `members`: member_id, `rated_items` and `rated_values` (her implicit ratings; each output row
    carries her rating of that subclass-brand, 0 when unrated) and whatever `scorer` reads;
    `scorer` maps a block of those rows to their scores over `item_ids` (ascending).
    """
    ids = np.asarray(item_ids, dtype=np.int64)
    for start in range(0, len(members), int(block_members)):
        part = members.iloc[start:start + int(block_members)]
        scores = scorer(part)
        columns, valid = top_k_block(scores, k)
        if enough_products is not None:
            counts = np.asarray(item_products)[columns]
            valid &= (np.cumsum(counts, axis=1) - counts) < enough_products   # the one that crosses is kept
        rated = history_block(part, ids, "rated_items", "rated_values")
        yield pd.DataFrame({
            "member_id": np.repeat(part["member_id"].to_numpy(), valid.sum(axis=1)),   # rows in member order
            "subclass_brand_id": ids[columns[valid]].astype(np.int32),
            "affinity": np.take_along_axis(scores, columns, axis=1)[valid],
            "rating": np.take_along_axis(rated, columns, axis=1)[valid],
            "affinity_rank": np.broadcast_to(np.arange(1, columns.shape[1] + 1, dtype=np.int32), columns.shape)[valid],
        })


def evaluate(members: pd.DataFrame, item_ids: np.ndarray, scorer: Scorer, k: int, block_members: int,
             exclude: str | None = "seen") -> dict[str, float]:
    """Mean ranking metrics at k (flashfeed/quality/metrics.py) over `members`, in numpy blocks on the
    driver: each row's scores come from `scorer` (see top_k_rows); the ids in its column
    `exclude` (None: nothing excluded) are left out of its ranking, and it must find the ids
    in its column `relevant` (non-empty; ids that are no candidate count as missed)."""
    totals = dict.fromkeys(METRICS, 0.0)
    ids = np.asarray(item_ids, dtype=np.int64)
    for start in range(0, len(members), int(block_members)):
        part = members.iloc[start:start + int(block_members)]
        scores = scorer(part)
        if exclude is not None:
            exclude_seen(scores, part[exclude], ids)
        columns, valid = top_k_block(scores, k)
        wanted = np.zeros(scores.shape, dtype=bool)
        rows, columns_, _ = item_positions(part["relevant"], ids)
        wanted[rows, columns_] = True
        hits = np.take_along_axis(wanted, columns, axis=1) & valid
        sizes = np.array([len(r) for r in part["relevant"]])
        for name, per_member in ranking_metrics_block(hits, sizes, k).items():
            totals[name] += float(per_member.sum())
    means = {name: (total / len(members) if len(members) else 0.0) for name, total in totals.items()}
    means["members"] = len(members)
    return means
