"""Tuning: a grid of ALS rank, regParam and alpha per member group, chosen on validation, reported on test.

Reads   what `flashfeed evaluate` reads (raw/events before D, raw/catalog/dt=D)
Writes  --out results.csv (one row per group and grid point, plus each group's popularity
        baseline; NDCG etc. on the validation and the test part), the same table as Markdown on
        stdout, and with --settings-out a JSON of each group's chosen settings and their evidence

    flashfeed tune --lake URI [--groups 13 21] [--rank 10 50] [--reg-param 0.01 0.1] [--alpha 0.05 1]

The split is `flashfeed evaluate`'s: each grid point's group ALS is fit on the fit part and
judged on the validation part as the gate would serve it (the ALS, or its repeat-aware blend
when that is better there), where each group's best point is chosen; it is then fit again on
the whole training part and judged on the untouched test part, so the test figures say how well
the choice generalises. `flashfeed_weekly_tune` runs this on the lake and writes the settings where
the daily model reads them; committed defaults come from the same table (include/tuning/).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import sys
import time

from flashfeed.core import lake
from flashfeed.core.config import group_settings, load_config
from flashfeed.quality.metrics import METRICS
from spark_jobs.common import get_logger
from spark_jobs.evaluate import fit_items, open_lake, parse, parser, prepare
from spark_jobs.transforms import candidates

log = get_logger("tune")
GRID = ("rank", "reg_param", "alpha")
PARTS = ("validation", "test")


def tune_group(spark, parts: candidates.GateParts, base: dict, points: list[tuple], settings: candidates.Settings,
               group: str) -> list[dict]:
    """Rows of one group: popularity, then every grid point, each on both parts. A point is judged
    as the gate would serve it: the group's ALS with those settings, or its blend with the
    member's own history (weight chosen on validation), whichever is better on validation
    (column `model`). The point with the best validation NDCG@k is marked `chosen`."""
    validation, test = parts.stages(settings.exclude_seen)
    on_fit, on_training = parts.part("train"), candidates.summed(parts.part("train", "validation"))
    rows = [{"group": group, "model": "popularity", **dict.fromkeys(GRID, ""), "blend_weight": "", "seconds": "",
             **{part: candidates.judged(stage, candidates.shared_scorer(stage.popularity), settings.k,
                                        settings.block, settings.exclude_seen)
                for part, stage in (("validation", validation), ("test", test))}}]
    for rank, reg_param, alpha in points:
        params = {**base, "rank": rank, "reg_param": reg_param, "alpha": alpha}
        started = time.monotonic()
        fitted = {candidates.GROUP_ALS: (fit_items(spark, on_fit, params), params)}
        refitted = {candidates.GROUP_ALS: (fit_items(spark, on_training, params), params)}
        result, _ = candidates.gate(validation, test, fitted, settings, refitted, choose_on="validation")
        judged = [name for name in (candidates.GROUP_ALS, candidates.REPEAT_BLEND) if name in result["validation"]]
        model = max(judged, key=lambda name: result["validation"][name]["ndcg@k"]) if judged else candidates.GROUP_ALS
        row = {"group": group, "model": model, "rank": rank, "reg_param": reg_param, "alpha": alpha,
               "blend_weight": result.get("blend", {}).get("weight", "") if model == candidates.REPEAT_BLEND else "",
               "validation": result["validation"].get(model, result["test"][model]), "test": result["test"][model],
               "seconds": round(time.monotonic() - started, 1)}
        rows.append(row)
        log.info("group %s rank=%s regParam=%s alpha=%s: %s NDCG@k validation %.4f, test %.4f (%d/%d members)", group,
                 rank, reg_param, alpha, model, row["validation"]["ndcg@k"], row["test"]["ndcg@k"],
                 row["validation"]["members"], row["test"]["members"])
    best = max(rows[1:], key=lambda r: r["validation"]["ndcg@k"])
    best["chosen"] = True
    return rows


def chosen_settings(rows: list[dict], split: dict, dt) -> dict:
    """Per group, the chosen grid point with its evidence (what the weekly tune writes and
    train_group reads: `groups.G.settings` replace the group's als settings)."""
    groups = {}
    for row in rows:
        if row.get("chosen"):
            baseline = next(r for r in rows if r["group"] == row["group"] and r["model"] == "popularity")
            groups[row["group"]] = {"settings": {name: row[name] for name in GRID},
                                    "evidence": {part: {"ndcg@k": row[part]["ndcg@k"],
                                                        "popularity_ndcg@k": baseline[part]["ndcg@k"],
                                                        "members": row[part]["members"]} for part in PARTS}}
    return {"dt": dt.isoformat(), "split": split, "groups": groups}


def selected_groups(requested: list[str] | None, existing: list[str]) -> list[str]:
    """The groups to tune: those asked for (all by default); refuses groups the split lacks."""
    groups = requested or existing
    unknown = sorted(set(groups) - set(existing))
    if unknown:
        raise SystemExit(f"groups {unknown} do not exist in this split; groups: {existing}")
    return groups


def transform(spark, prepared, config: dict, args, dt, groups: list[str]) -> list[dict]:
    """Every group's rows: popularity, then each grid point on both parts."""
    points = list(itertools.product(args.rank, args.reg_param, args.alpha))
    log.info("tuning %d groups x %d grid points on %s (%s split)", len(groups), len(points), dt, args.split)
    settings = candidates.settings_from(config, k=args.k, exclude_seen=prepared.exclude_seen)
    rows = []
    for group in groups:
        parts = candidates.GateParts(prepared.ratings[prepared.ratings["group"] == group], prepared.live)
        rows.extend(tune_group(spark, parts, group_settings(config, "als", group), points, settings, group))
    return rows


def load(rows: list[dict], prepared, args, dt) -> None:
    """The results table, then each group's chosen settings (last: the daily model reads them, so
    they appear only with their results), then the Markdown table on stdout."""
    lake.write_bytes(args.out, results_csv(rows).encode("utf-8"))
    if args.settings_out:
        lake.write_bytes(args.settings_out,
                         (json.dumps(chosen_settings(rows, prepared.split, dt), indent=2) + "\n")
                         .encode("utf-8"))
    print(markdown(rows, args.k))
    print(f"\nresults written to {args.out} ({args.split} split of {dt}, k={args.k}); each group's chosen "
          "point (best validation NDCG) is in bold")


def main(argv: list[str] | None = None) -> int:
    grid = load_config()["evaluation"]["tune_grid"]
    p = parser("flashfeed tune", __doc__.splitlines()[0])
    p.add_argument("--groups", nargs="+", default=None, help="member groups to tune (default: all)")
    p.add_argument("--rank", nargs="+", type=int, default=grid["rank"])
    p.add_argument("--reg-param", nargs="+", type=float, default=grid["reg_param"])
    p.add_argument("--alpha", nargs="+", type=float, default=grid["alpha"])
    p.add_argument("--out", default="tune_results.csv", help="results table (CSV)")
    p.add_argument("--settings-out", default=None, help="each group's chosen settings and evidence (JSON)")
    args = parse(p, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spark, config, root, dt = open_lake(args, "flashfeed-tune")
    prepared = prepare(spark, config, root, dt, args)
    groups = selected_groups(args.groups, sorted(prepared.ratings["group"].unique()))
    load(transform(spark, prepared, config, args, dt, groups), prepared, args, dt)
    spark.stop()
    return 0


def results_csv(rows: list[dict]) -> str:
    """Every row with its metrics on both parts."""
    columns = ["group", "model", *GRID, "blend_weight", *(f"{part}_{m}" for part in PARTS for m in METRICS),
               "validation_members", "test_members", "chosen", "seconds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{c: row.get(c, "") for c in ("group", "model", *GRID, "blend_weight", "seconds")},
                         **{f"{part}_{m}": f"{row[part][m]:.4f}" for part in PARTS for m in METRICS},
                         "validation_members": row["validation"]["members"],
                         "test_members": row["test"]["members"], "chosen": bool(row.get("chosen"))})
    return buffer.getvalue()


def markdown(rows: list[dict], k: int) -> str:
    """The results as a Markdown table; each group's chosen row (best validation NDCG@k) in bold."""
    lines = [f"| group | model | rank | regParam | alpha | blend weight | validation NDCG@{k} | test NDCG@{k} "
             f"| test recall@{k} | members (validation/test) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        mark = "**" if row.get("chosen") else ""
        lines.append(f"| {row['group']} | {row['model']} | {row['rank']} | {row['reg_param']} | {row['alpha']} "
                     f"| {row['blend_weight']} "
                     f"| {mark}{row['validation']['ndcg@k']:.4f}{mark} | {mark}{row['test']['ndcg@k']:.4f}{mark} "
                     f"| {row['test']['recall@k']:.4f} | {row['validation']['members']}/{row['test']['members']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
