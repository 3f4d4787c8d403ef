"""The daily model's quality summary: which groups serve their model, which fell back and why.

Reads every `models/dt=D/group=G/metrics.json` written by train_group and writes, next to them,
`models/dt=D/metrics.json` (per group: every candidate's gate figures, the served model,
served_from, reason) and `models/dt=D/report.png` (NDCG@k of every candidate by group, on the
gate's validation and test parts, the served one marked).
Plain Python (fsspec, matplotlib): it runs in an Airflow task, not in Spark.
"""
from __future__ import annotations

import io
import json
import logging
from collections import Counter

from flashfeed.core import lake

log = logging.getLogger(__name__)
SUMMARY_FILE = "metrics.json"
REPORT_FILE = "report.png"
CANDIDATES = (("group_als", "group ALS", "#1f77b4"), ("global_als", "global ALS", "#ff7f0e"),
              ("repeat_blend", "repeat-aware blend", "#2ca02c"), ("popularity", "popularity", "#bbbbbb"))


def summarise(models_day: str, groups: list[str]) -> dict:
    """Collect the groups' metrics into one summary (see module docstring); returns it."""
    per_group = {}
    for group in groups:
        metrics = lake.read_json(f"{models_day}/group={group}/{SUMMARY_FILE}")
        per_group[group] = {key: metrics.get(key) for key in
                            ("members", "served_from", "served_model", "fallback_reason", "gate", "params")}
    fell_back = {g: m["fallback_reason"] for g, m in per_group.items() if m["served_from"] != "model"}
    return {"groups": per_group, "fell_back": fell_back,
            "served_from_model": sorted(g for g in per_group if g not in fell_back)}


def report_png(summary: dict, title: str) -> bytes:
    """Two bar charts, NDCG@k per evaluated group on the gate's validation and test parts: one
    bar per candidate; each group is labelled with what it serves."""
    import matplotlib

    matplotlib.use("Agg")   # no display in a worker
    import matplotlib.pyplot as plt

    evaluated = {g: m["gate"] for g, m in sorted(summary["groups"].items()) if (m.get("gate") or {}).get("evaluated")}
    figure, axes = plt.subplots(2, 1, figsize=(max(11.0, 1.2 * len(evaluated)), 7.5), sharex=True)
    k = next(iter(evaluated.values()))["k"] if evaluated else "k"
    positions = range(len(evaluated))
    width = 0.8 / len(CANDIDATES)
    for axis, part in zip(axes, ("validation", "test"), strict=True):
        for offset, (name, label, color) in enumerate(CANDIDATES):
            values = [gate.get(part, {}).get(name, {}).get("ndcg@k", 0.0) for gate in evaluated.values()]
            axis.bar([p - 0.4 + width * (offset + 0.5) for p in positions], values, width, label=label, color=color)
        axis.set_title(f"NDCG@{k}, {part} part" + (" (the gate chooses here)" if part == "test" else ""))
        axis.set_ylabel(f"NDCG@{k}")
    labels = [f"{g}\n{summary['groups'][g].get('served_model') or summary['groups'][g]['served_from']}"
              for g in evaluated]
    axes[1].set_xticks(list(positions), labels, fontsize=7)
    axes[1].set_xlabel("member group, and what it serves")
    axes[0].legend(fontsize=8, ncols=len(CANDIDATES))
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
            logger.info("group %s: serves today's %s (%s)", group, entry.get("served_model"),
                        gate.get("reason", "gate not run"))
        else:
            logger.warning("group %s: FELL BACK to %s because %s", group, entry["served_from"],
                           entry["fallback_reason"])
    lake.write_bytes(f"{models_day}/{SUMMARY_FILE}", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    lake.write_bytes(f"{models_day}/{REPORT_FILE}", report_png(summary, f"flashfeed daily model {dt}: the quality "
                                                                       "gate's candidates"))
    served = Counter(entry.get("served_model") or entry["served_from"] for entry in summary["groups"].values())
    logger.info("%d of %d groups serve today's model (%s); fell back: %s. Summary %s, picture %s",
                len(summary["served_from_model"]), len(groups),
                ", ".join(f"{n} {m}" for m, n in sorted(served.items())),
                ", ".join(f"{g} ({r})" for g, r in summary["fell_back"].items()) or "none",
                f"{models_day}/{SUMMARY_FILE}", f"{models_day}/{REPORT_FILE}")
    return summary
