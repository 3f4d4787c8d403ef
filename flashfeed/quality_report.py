"""The daily model's quality summary: which groups serve their model, which fell back and why.

Reads every `models/dt=D/group=G/metrics.json` written by train_group and writes, next to them,
`models/dt=D/metrics.json` (per group: gate figures, served_from, reason) and
`models/dt=D/report.png` (NDCG@k and recall@k by group, model vs the popularity baseline).
Plain Python (fsspec, matplotlib): it runs in an Airflow task, not in Spark.
"""
from __future__ import annotations

import io
import json
import logging

from flashfeed import lake

log = logging.getLogger(__name__)
SUMMARY_FILE = "metrics.json"
REPORT_FILE = "report.png"


def summarise(models_day: str, groups: list[str]) -> dict:
    """Collect the groups' metrics into one summary (see module docstring); returns it."""
    per_group = {}
    for group in groups:
        metrics = lake.read_json(f"{models_day}/group={group}/{SUMMARY_FILE}")
        per_group[group] = {key: metrics.get(key) for key in
                            ("members", "served_from", "fallback_reason", "gate", "params")}
    fell_back = {g: m["fallback_reason"] for g, m in per_group.items() if m["served_from"] != "model"}
    return {"groups": per_group, "fell_back": fell_back,
            "served_from_model": sorted(g for g in per_group if g not in fell_back)}


def report_png(summary: dict, title: str) -> bytes:
    """Two bar charts, NDCG@k and recall@k per evaluated group: the group's model vs popularity."""
    import matplotlib

    matplotlib.use("Agg")   # no display in a worker
    import matplotlib.pyplot as plt

    evaluated = {g: m["gate"] for g, m in sorted(summary["groups"].items()) if (m.get("gate") or {}).get("evaluated")}
    figure, axes = plt.subplots(1, 2, figsize=(max(11.0, 2.2 * len(evaluated)), 4.2))
    k = next(iter(evaluated.values()))["k"] if evaluated else "k"
    positions = range(len(evaluated))
    width = 0.38
    for axis, metric in zip(axes, ("ndcg@k", "recall@k")):
        model = [gate["model"][metric] for gate in evaluated.values()]
        baseline = [gate["popularity"][metric] for gate in evaluated.values()]
        axis.bar([p - width / 2 for p in positions], model, width, label="group ALS", color="#1f77b4")
        axis.bar([p + width / 2 for p in positions], baseline, width, label="popularity", color="#bbbbbb")
        labels = [f"{g}\n{'model' if summary['groups'][g]['served_from'] == 'model' else 'fallback'}"
                  for g in evaluated]
        axis.set_xticks(list(positions), labels, fontsize=8)
        axis.set_title(metric.replace("@k", f"@{k}"))
        axis.set_xlabel("member group")
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def write_report(models_day: str, groups: list[str], dt: str,
                 logger: logging.Logger | logging.LoggerAdapter = log) -> dict:
    """Summarise, log every group's outcome, and write metrics.json and report.png."""
    summary = {"dt": dt, **summarise(models_day, groups)}
    for group, entry in sorted(summary["groups"].items()):
        gate = entry.get("gate") or {}
        if entry["served_from"] == "model":
            logger.info("group %s: serves today's model (%s)", group, gate.get("reason", "gate not run"))
        else:
            logger.warning("group %s: FELL BACK to %s because %s", group, entry["served_from"],
                           entry["fallback_reason"])
    lake.write_bytes(f"{models_day}/{SUMMARY_FILE}", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    lake.write_bytes(f"{models_day}/{REPORT_FILE}", report_png(summary, f"flashfeed daily model {dt}: quality gate"))
    logger.info("%d of %d groups serve today's model; fell back: %s. Summary %s, picture %s",
                len(summary["served_from_model"]), len(groups),
                ", ".join(f"{g} ({r})" for g, r in summary["fell_back"].items()) or "none",
                f"{models_day}/{SUMMARY_FILE}", f"{models_day}/{REPORT_FILE}")
    return summary
