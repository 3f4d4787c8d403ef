"""The daily quality summary: which groups fell back and why, metrics.json and report.png."""
from __future__ import annotations

import json
import logging

from flashfeed.quality.report import write_report


def gate(model_ndcg: float, popularity_ndcg: float, passed: bool) -> dict:
    parts = {"group_als": {"ndcg@k": model_ndcg, "members": 40},
             "global_als": {"ndcg@k": model_ndcg / 2, "members": 40},
             "repeat_blend": {"ndcg@k": model_ndcg * 0.9, "members": 40},
             "popularity": {"ndcg@k": popularity_ndcg, "members": 40}}
    return {"evaluated": True, "passed": passed, "k": 10, "margin": 0.0, "reason": "r", "chosen": "group_als",
            "validation": parts, "test": parts}


def test_report_names_fallbacks_and_writes_summary_and_picture(tmp_path, caplog):
    groups = {
        "13": {"members": 250, "served_from": "model", "served_model": "group_als", "fallback_reason": None,
               "gate": gate(0.2, 0.15, True)},
        "21": {"members": 220, "served_from": "popularity", "served_model": None, "fallback_reason": "quality gate: "
               "the best model, group_als, has NDCG@10 0.0400, below popularity 0.1900 - margin 0.0",
               "gate": gate(0.04, 0.19, False)},
        "44": {"members": 210, "served_from": "last_good_model:2026-11-20", "served_model": "repeat_blend",
               "fallback_reason": "training failed: Py4JJavaError: boom", "gate": {"evaluated": False}},
    }
    for group, metrics in groups.items():
        folder = tmp_path / f"group={group}"
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({**metrics, "params": {"rank": 10}}))

    with caplog.at_level(logging.INFO):
        summary = write_report(str(tmp_path), sorted(groups), "2026-11-22")

    assert summary["served_from_model"] == ["13"]
    assert summary["fell_back"] == {"21": groups["21"]["fallback_reason"], "44": groups["44"]["fallback_reason"]}
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "group 21: FELL BACK to popularity because quality gate: the best model" in caplog.text
    assert "group 13: serves today's group_als" in caplog.text
    assert "group 44: FELL BACK to last_good_model:2026-11-20 because training failed" in caplog.text
    assert "1 of 3 groups serve today's model (1 group_als, 1 popularity, 1 repeat_blend)" in caplog.text
    assert "report.png" in caplog.text
