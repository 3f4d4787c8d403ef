"""Item-to-item and bought-together models against popularity (not a test): the offline MRR figures.

    .venv/bin/python bench/related_bench.py --lake DIR --dt 2026-11-22 --name demo10k [--holdout-days 7 3]

For each hold-out length, runs `spark_jobs/related.py` (spark-submit, as the daily model does)
with `related.holdout_days` set to it (it rewrites `related/dt=D` of that lake) and prints its
offline test: the MRR of the next subclass-brand of a session under each
co-occurrence score (llr, count, jaccard) and popularity, and of a basket's other
subclass-brands under the FP-Growth rules and popularity, with what would be served, the rule
counts and the job's wall time. Writes bench/results/related-<name>.json. Needs
`features/dt=D` in the lake (the daily model's build_features, or spark_jobs/features.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flashfeed.core import lake  # noqa: E402
from flashfeed.core.config import config_path, load_config  # noqa: E402
from flashfeed.local.env import project_env  # noqa: E402


def run(root: str, dt: str, holdout_days: int, env: dict) -> tuple[dict, float]:
    """The related job's metrics.json with `holdout_days`, and its wall time."""
    config = load_config()
    config["related"]["holdout_days"] = holdout_days
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(config, handle)
    started = time.monotonic()
    subprocess.run(["spark-submit", "--master", "local[*]", "--driver-memory", config["spark"]["driver_memory"],
                    str(REPO / "spark_jobs" / "related.py"), "--dt", dt, "--lake", root, "--config", handle.name],
                   env=env, cwd=REPO, check=True, capture_output=True)
    seconds = time.monotonic() - started
    os.unlink(handle.name)
    return json.loads(Path(lake.related(dt, root), "metrics.json").read_text()), seconds


def row(name: str, holdout: int, metrics: dict, seconds: float) -> dict:
    cooc, bought = metrics["cooccurrence"], metrics["bought_together"]
    return {"data": name, "holdout_days": holdout, "events": metrics["events"], "seconds": round(seconds, 1),
            "session_cases": cooc["test"]["cases"], **{f"mrr_{k}": v for k, v in cooc["test"]["mrr"].items()},
            "related_served": cooc["served"], "basket_cases": bought["test"]["cases"],
            "mrr_fp_growth": bought["test"]["mrr"]["fp_growth"],
            "mrr_basket_popularity": bought["test"]["mrr"]["popularity"], "bought_together_served": bought["served"],
            "baskets": bought["baskets"], "rules": bought["rules"], "one_to_one_rules": bought["one_to_one_rules"],
            "lift_median": bought.get("lift", {}).get("median")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True, help="lake root holding features/dt=D")
    parser.add_argument("--dt", required=True)
    parser.add_argument("--name", required=True, help="name of the data set in the results")
    parser.add_argument("--holdout-days", type=int, nargs="+", default=[7])
    args = parser.parse_args(argv)
    root = str(Path(args.lake).resolve())
    env = project_env({**os.environ, "FLASHFEED_LAKE": root})
    print(f"config {config_path()}; lake {root}; day {args.dt}")
    rows = []
    for holdout in args.holdout_days:
        metrics, seconds = run(root, args.dt, holdout, env)
        rows.append(row(args.name, holdout, metrics, seconds))
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in columns) + " |")
    out = REPO / "bench" / "results" / f"related-{args.name}.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
