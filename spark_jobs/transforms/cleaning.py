"""Input cleaning: every rejected event is kept with its reason, counted and logged."""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.common import JobError

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


def label_events(events: DataFrame, known_styles: DataFrame, event_types: list[str], cutoff: datetime) -> DataFrame:
    """Every raw event with a `reason` column: null for a clean event, else why it is rejected.

    One frame for both sides, so that a job caches it once and reads the raw events once.
    Checked in this order, the first failing check names the reason: null or malformed ids,
    unknown event type, purchase without a positive price, timestamp missing or at/after the
    cutoff (the end of the newest partition read), style not in the catalog, duplicates (same
    event_id, or same member/style/type/timestamp: the first by event_id is kept).
    """
    reason = (
        F.when(
            F.col("event_id").isNull() | F.col("member_id").isNull() | F.col("style_id").isNull(),
            F.lit("null_id"),
        )
        .when(
            ~F.col("member_id").rlike(ID_PATTERN) | ~F.col("style_id").rlike(ID_PATTERN),
            F.lit("malformed_id"),
        )
        .when(~F.col("event_type").isin(*event_types) | F.col("event_type").isNull(), F.lit("unknown_event_type"))
        .when(
            (F.col("event_type") == "purchase") & (F.col("price").isNull() | (F.col("price") <= 0)),
            F.lit("bad_price"),
        )
        .when(F.col("occurred_at").isNull() | (F.col("occurred_at") >= F.lit(cutoff)), F.lit("bad_timestamp"))
        .when(F.col("_known_style").isNull(), F.lit("unknown_style"))
    )
    known = known_styles.select("style_id").distinct().withColumn("_known_style", F.lit(True))
    checked = events.join(F.broadcast(known), "style_id", "left").withColumn("reason", reason)
    # Duplicates among the valid events only: a rejected copy must not make the valid one a duplicate.
    valid = F.col("reason").isNull()
    first_of_id = Window.partitionBy(valid, "event_id").orderBy("occurred_at")
    first_of_action = Window.partitionBy(valid, "member_id", "style_id", "event_type", "occurred_at").orderBy(
        "event_id")
    duplicate = valid & ((F.row_number().over(first_of_id) > 1) | (F.row_number().over(first_of_action) > 1))
    return checked.withColumn("reason", F.when(duplicate, F.lit("duplicate")).otherwise(F.col("reason"))).select(
        *events.columns, "reason")


def clean_events(
    events: DataFrame, known_styles: DataFrame, event_types: list[str], cutoff: datetime
) -> tuple[DataFrame, DataFrame]:
    """(clean, rejects) of `label_events`; rejects carry their `reason`."""
    labelled = label_events(events, known_styles, event_types, cutoff)
    return split_labelled(labelled)


def split_labelled(labelled: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(clean events without `reason`, rejects with it) of a labelled frame."""
    return labelled.where(F.col("reason").isNull()).drop("reason"), labelled.where(F.col("reason").isNotNull())


def reject_summary(rejects: DataFrame) -> dict[str | None, int]:
    """Rows per reason (a labelled frame's clean rows count under None)."""
    return {r["reason"]: int(r["count"]) for r in rejects.groupBy("reason").count().collect()}


class TooManyRejects(JobError):
    pass


def check_reject_share(total: int, reasons: dict[str, int], limit: float, rejects_path: str,
                       rerun: str = "build_features") -> float:
    """The rejected share of the input; raises when it is above `limit` (a broken extract)."""
    rejected = sum(reasons.values())
    share = rejected / total if total else 0.0
    if share > limit:
        raise TooManyRejects(
            f"{share:.1%} of {total} events were rejected (limit {limit:.0%}): {reasons}",
            f"inspect {rejects_path} (column `reason`), fix the upstream extract and re-import those days, then "
            f"re-run {rerun}; only if these rejects are expected, raise cleaning.max_reject_share",
        )
    return share
