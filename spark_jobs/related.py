"""Related subclass-brands of day D: item-to-item co-occurrence and bought-together rules.

Reads   features/dt=D/events (the clean events of the look-back, with their subclass-brand),
        features/dt=D/candidates (the subclass-brands on sale on D: each gets a list)
Writes  related/dt=D/{related (item, related, score, rank, from_model: co-occurrence, what "because
        you viewed" and /related serve), bought_together (the same with score = confidence, lift, support),
        metrics.json (the offline test of both against popularity, rule counts, support, lift)}
Re-run  `spark-submit spark_jobs/related.py --dt D` replaces related/dt=D only.

Each model is first fit on the days before the last `related.holdout_days` and tested on them
(mean reciprocal rank of the next subclass-brand of a session, of the rest of a basket); a model
whose MRR is below popularity's is not served: popularity lists are (`served` in metrics.json).
Then it is fit again on every day, and that is what the launches serve.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from pyspark.ml.fpm import FPGrowth
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flashfeed.core import lake
from spark_jobs.common import (
    JobError,
    LakeFS,
    features_next_step,
    get_logger,
    parse_job_args,
    run_job,
    spark_session,
    staged_partition,
    timed,
)
from spark_jobs.transforms import related as related_t

log = get_logger("related")
FP_GROWTH = "fp_growth"
PURCHASE = "purchase"


def cooccurrence_lists(events: DataFrame, cfg: dict) -> DataFrame:
    """Every pair's scores (llr, count, jaccard) from the members' co-occurrence."""
    items = related_t.member_items(events, cfg["max_items_per_member"])
    return related_t.cooccurrence(items, cfg["min_members"])


def min_support(baskets: int, cfg: dict) -> float:
    """`min_support`, raised so that an item set is in at least `min_baskets` baskets: on a few
    thousand baskets a tiny share is one or two baskets, and the item sets explode."""
    return max(cfg["min_support"], cfg["min_baskets"] / max(baskets, 1))


def rules(purchases: DataFrame, cfg: dict) -> tuple[DataFrame, DataFrame]:
    """(FP-Growth's association rules, the baskets) of the purchases. Baskets of more than
    `max_basket_items` subclass-brands (a reseller's restock, not a shopper's outfit) are left out
    of the rules: they say little about what goes together, and FP-Growth's trees grow as deep
    as the longest basket (a stack overflow in Spark's serializer)."""
    baskets = related_t.baskets(purchases, cfg["basket_window_minutes"])
    shopper_sized = baskets.where(F.size("items") <= cfg["max_basket_items"]).persist()
    model = FPGrowth(itemsCol="items", minSupport=min_support(shopper_sized.count(), cfg),
                     minConfidence=cfg["min_confidence"]).fit(shopper_sized)
    return model.associationRules, baskets


def rule_lists(rules_frame: DataFrame, per_item: int) -> DataFrame:
    """(item, related, score = confidence, rank, lift, support) of the one-to-one rules."""
    return related_t.association_rules(rules_frame, per_item).withColumnRenamed("confidence", "score")


def served_lists(model_lists: DataFrame, events: DataFrame, per_item: int, items: DataFrame,
                 models: list[str]) -> DataFrame:
    """Each model's lists (model, item, related, score, rank) filled with the popular
    subclass-brands of `events`, for `items` (item)."""
    return related_t.with_popular(model_lists, items, related_t.popularity_ranks(events), per_item, models)


def offline_test(train: DataFrame, holdout: DataFrame, cfg: dict) -> dict:
    """MRR on the hold-out of each co-occurrence score and of the rules (each filled with popular
    subclass-brands, as served) and of popularity alone: one pass over the cases per kind."""
    per_item, rules_per_item = cfg["per_item"], cfg["rules_per_item"]

    def mrr(cases: DataFrame, lists: DataFrame, events: DataFrame, n: int, models: list[str]) -> dict:
        anchors = cases.select(F.col("anchor").alias("item"))
        figures = related_t.mean_reciprocal_ranks(cases, served_lists(lists, events, n, anchors, models), models)
        return {model: round(value, 5) for model, value in figures.items()}

    session_cases = related_t.next_item_cases(related_t.sessions(holdout, cfg["session_gap_minutes"])).persist()
    scored = cooccurrence_lists(train, cfg).persist()      # read once per score below
    lists = functools.reduce(DataFrame.unionByName, [
        related_t.top_related(scored, score, per_item).withColumn("model", F.lit(score)) for score in related_t.SCORES])
    cooc = {"cases": session_cases.count(),
            "mrr": mrr(session_cases, lists, train, per_item, [*related_t.SCORES, related_t.POPULARITY])}

    train_purchases = train.where(F.col("event_type") == PURCHASE)
    holdout_baskets = related_t.baskets(holdout.where(F.col("event_type") == PURCHASE),
                                        cfg["basket_window_minutes"])
    basket_cases = related_t.basket_cases(
        holdout_baskets.where(F.size("items") <= cfg["max_basket_items"])).persist()
    train_rules, _ = rules(train_purchases, cfg)
    bought = {"cases": basket_cases.select("case_id").distinct().count(),
              "mrr": mrr(basket_cases, rule_lists(train_rules, rules_per_item).withColumn("model", F.lit(FP_GROWTH)),
                         train_purchases, rules_per_item, [FP_GROWTH, related_t.POPULARITY])}
    return {"cooccurrence": cooc, "bought_together": bought}


def as_served(lists: DataFrame, served: str) -> DataFrame:
    """The model's lists labelled with what is served: none of them when popularity is."""
    return (lists.limit(0) if served == related_t.POPULARITY else lists).withColumn("model", F.lit(served))


def earns_its_place(test: dict, model: str) -> bool:
    """A model is served unless the hold-out had cases and it ranked them worse than popularity."""
    return test["cases"] == 0 or test["mrr"][model] >= test["mrr"][related_t.POPULARITY]


def rule_summary(single_rules: DataFrame, all_rules: DataFrame, baskets: DataFrame, max_items: int) -> dict:
    """Counts and the spread of support, confidence and lift of the served rules."""
    quantiles = {}
    if single_rules.take(1):
        names = {"support": "support", "confidence": "score", "lift": "lift"}
        spreads = single_rules.approxQuantile(list(names.values()), [0.0, 0.5, 1.0], 0.001)
        for name, (low, mid, high) in zip(names, spreads, strict=True):
            quantiles[name] = {"min": round(low, 5), "median": round(mid, 5), "max": round(high, 5)}
    counts = baskets.agg(F.count("*").alias("baskets"),
                         F.sum((F.size("items") >= 2).cast("int")).alias("baskets_of_2_or_more"),
                         F.sum((F.size("items") > max_items).cast("int")).alias("baskets_left_out")).first()
    return {**{k: int(v or 0) for k, v in counts.asDict().items()},
            "rules": all_rules.count(), "one_to_one_rules": single_rules.count(), **quantiles}


def served_models(test: dict, score: str) -> tuple[str, str]:
    """(co-occurrence score served, bought-together model served) after the offline test: each
    model earns its place against popularity (earns_its_place), else popularity lists are served."""
    return (score if earns_its_place(test["cooccurrence"], score) else related_t.POPULARITY,
            FP_GROWTH if earns_its_place(test["bought_together"], FP_GROWTH) else related_t.POPULARITY)


def rules_served(served_rules: str, has_one_to_one_rules: bool) -> str:
    """FP-Growth is served only when some one-to-one rule reached min_support; else its lists
    are popularity's."""
    return related_t.POPULARITY if served_rules == FP_GROWTH and not has_one_to_one_rules else served_rules


@dataclass
class RelatedInputs:
    events: DataFrame            # the look-back's clean events (EVENT_COLUMNS), persisted
    candidates: DataFrame        # subclass-brands on sale on D
    n_events: int
    holdout_since: datetime      # the offline test's hold-out starts then


@dataclass
class RelatedOutputs:
    cooccurrence: DataFrame      # what /related and "because you viewed" serve
    bought_together: DataFrame
    scored: DataFrame            # every co-occurring pair's scores
    single: DataFrame            # the one-to-one rules
    all_rules: DataFrame
    baskets: DataFrame
    test: dict                   # the offline test of both against popularity
    served_score: str
    served_rules: str


def extract(spark, fs: LakeFS, dt: date, cfg: dict, root: str) -> RelatedInputs:
    features = lake.features(dt, root)
    fs.require(features, f"features for {dt}", features_next_step(dt))
    events = spark.read.parquet(f"{features}/events").select(*related_t.EVENT_COLUMNS).persist()
    candidates = spark.read.parquet(f"{features}/candidates").select(related_t.ITEM)
    cutoff = datetime.combine(dt, datetime.min.time(), timezone.utc)
    holdout_since = cutoff - timedelta(days=cfg["holdout_days"])
    n_events = events.count()
    log.info("related subclass-brands for %s from %s: %d events; score %s, %s per item, most recent %s "
             "subclass-brands per member, pairs of %s+ members; baskets within %s min, min support %s, "
             "min confidence %s; offline test on events since %s", dt, features, n_events, cfg["score"],
             cfg["per_item"], cfg["max_items_per_member"], cfg["min_members"], cfg["basket_window_minutes"],
             cfg["min_support"], cfg["min_confidence"], holdout_since)
    if n_events == 0:
        raise JobError(f"{features}/events holds no event: nothing co-occurs", features_next_step(dt))
    return RelatedInputs(events, candidates, n_events, holdout_since)


def transform(inputs: RelatedInputs, cfg: dict) -> RelatedOutputs:
    """The offline test, then the served models on every event."""
    events, holdout_since = inputs.events, inputs.holdout_since
    with timed(log, f"offline test: models fit before {holdout_since}, MRR on the {cfg['holdout_days']} days after"):
        test = offline_test(events.where(F.col("occurred_at") < F.lit(holdout_since)),
                            events.where(F.col("occurred_at") >= F.lit(holdout_since)), cfg)
    log.info("co-occurrence: %d next-item cases, MRR %s", test["cooccurrence"]["cases"], test["cooccurrence"]["mrr"])
    log.info("bought together: %d basket cases, MRR %s", test["bought_together"]["cases"],
             test["bought_together"]["mrr"])
    served_score, served_rules = served_models(test, cfg["score"])
    for what, served, wanted in (("co-occurrence", served_score, cfg["score"]), ("bought together", served_rules,
                                                                                  FP_GROWTH)):
        if served != wanted:
            log.warning("%s: %s ranked the hold-out worse than popularity; serving popularity lists. Check the "
                        "events of the last days, or lower related.min_members / min_support", what, wanted)
    # Lists for every subclass-brand interacted with or on sale today (a brand-new one gets popularity).
    items = events.select(F.col(related_t.ITEM).alias("item")).unionByName(
        inputs.candidates.select(F.col(related_t.ITEM).alias("item"))).distinct().persist()
    scored = cooccurrence_lists(events, cfg).persist()
    cooccurrence = served_lists(as_served(related_t.top_related(scored, cfg["score"], cfg["per_item"]),
                                          served_score), events, cfg["per_item"], items,
                                [served_score]).drop("model")
    purchases = events.where(F.col("event_type") == PURCHASE)
    all_rules, baskets = rules(purchases, cfg)
    all_rules = all_rules.persist()
    single = rule_lists(all_rules, cfg["rules_per_item"]).persist()
    if rules_served(served_rules, served_rules != FP_GROWTH or bool(single.take(1))) != served_rules:
        served_rules = related_t.POPULARITY     # no rule reached min_support: the lists are popularity's
        log.warning("bought together: no one-to-one rule reaches min support %s in %d+ baskets; serving "
                    "popularity lists", cfg["min_support"], cfg["min_baskets"])
    bought_together = served_lists(as_served(single, served_rules), purchases,
                                   cfg["rules_per_item"], items, [served_rules]).drop("model").join(
        single.select("item", "related", "lift", "support"), ["item", "related"], "left")
    return RelatedOutputs(cooccurrence, bought_together, scored, single, all_rules, baskets, test, served_score,
                          served_rules)


def load(spark, fs: LakeFS, outputs: RelatedOutputs, inputs: RelatedInputs, dt: date, cfg: dict,
         partition: str) -> dict:
    """Write both lists and metrics.json; log what is served."""
    with timed(log, f"writing {partition}"), staged_partition(fs, partition, log) as staging:
        outputs.cooccurrence.write.mode("overwrite").parquet(f"{staging}/{lake.RELATED}")
        outputs.bought_together.write.mode("overwrite").parquet(f"{staging}/{lake.BOUGHT_TOGETHER}")
        written = spark.read.parquet(f"{staging}/{lake.RELATED}")
        metrics = {
            "dt": dt.isoformat(), "events": inputs.n_events, "settings": cfg,
            "cooccurrence": {"pairs": outputs.scored.count(), "items": written.select("item").distinct().count(),
                             "rows": written.count(), "served": outputs.served_score,
                             "test": outputs.test["cooccurrence"]},
            "bought_together": {**rule_summary(outputs.single, outputs.all_rules, outputs.baskets,
                                               cfg["max_basket_items"]),
                                "items": spark.read.parquet(f"{staging}/{lake.BOUGHT_TOGETHER}").select("item")
                                .distinct().count(), "served": outputs.served_rules,
                                "test": outputs.test["bought_together"]},
        }
        fs.write_json(f"{staging}/metrics.json", metrics)
    log.info("co-occurrence: %d pairs, %d subclass-brands with related ones, serving %s",
             metrics["cooccurrence"]["pairs"], metrics["cooccurrence"]["items"], outputs.served_score)
    bt = metrics["bought_together"]
    log.info("bought together: %d baskets (%d of 2+ subclass-brands; %d of more than %s left out), %d rules (%d "
             "one-to-one), support %s, lift %s, serving %s", bt["baskets"], bt["baskets_of_2_or_more"],
             bt["baskets_left_out"], cfg["max_basket_items"], bt["rules"], bt["one_to_one_rules"],
             bt.get("support"), bt.get("lift"), outputs.served_rules)
    return metrics


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args, config, root = parse_job_args(__doc__, argv)
    dt, cfg = date.fromisoformat(args.dt), config["related"]
    spark = spark_session(f"flashfeed-related-{dt}", config)
    fs = LakeFS(spark)
    inputs = extract(spark, fs, dt, cfg, root)
    outputs = transform(inputs, cfg)
    partition = lake.related(dt, root)
    load(spark, fs, outputs, inputs, dt, cfg, partition)
    log.info("related for %s done in %.1f s: wrote %s", dt, time.monotonic() - started, partition)
    spark.stop()


if __name__ == "__main__":
    run_job(main, log)
