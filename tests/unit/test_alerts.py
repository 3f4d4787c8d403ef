"""Alerts: what a failure callback says and where it goes (a real local webhook)."""
from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from flashfeed_airflow import alerts  # noqa: E402

# 10:15 New York (EST, UTC-5) on 2026-11-22: the scheduled run of the 11:00 launch.
LAUNCH_RUN_AT = datetime(2026, 11, 22, 15, 15, tzinfo=timezone.utc)


def _context(dag_id: str, task_id: str, error: Exception, *, map_index: int = -1, params=None,
             logical_date=LAUNCH_RUN_AT) -> dict:
    logger = logging.getLogger("test.task")
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, map_index=map_index, try_number=3,
                         log_url="http://127.0.0.1:8080/log", log=logger)
    dag_run = SimpleNamespace(run_id="scheduled__2026-11-22T15:15:00+00:00", run_type="scheduled",
                              logical_date=logical_date, run_after=LAUNCH_RUN_AT)
    return {"ti": ti, "dag_run": dag_run, "params": params or {}, "exception": error}


def test_a_failed_launch_task_names_the_slot_stage_task_and_error_and_posts_them(
        alert_inbox, monkeypatch, caplog):
    monkeypatch.setenv(alerts.WEBHOOK_ENV, alert_inbox.url)
    with caplog.at_level(logging.ERROR):
        alerts.task_failed(_context("flashfeed_launch_feeds", "serve.load_feeds", RuntimeError("DynamoDB throttled")))
    [posted] = alert_inbox.alerts
    text = posted["text"]
    assert text.startswith("flashfeed_launch_feeds FAILED for launch 2026-11-22 11:00 (version 20261122t1100) "
                           "at stage 'serve' (task serve.load_feeds, try 3")
    assert "RuntimeError: DynamoDB throttled" in text and "Next step:" in text
    assert {k: posted["alert"][k] for k in ("dt", "launch", "version", "stage", "task")} == {
        "dt": "2026-11-22", "launch": "1100", "version": "20261122t1100", "stage": "serve",
        "task": "serve.load_feeds"}
    assert f"ALERT: {text}" in caplog.text        # the same line is in the task log


def test_a_forced_slot_and_a_mapped_model_task_are_named_too(alert_inbox, monkeypatch):
    monkeypatch.setenv(alerts.WEBHOOK_ENV, alert_inbox.url)
    alerts.task_failed(_context("flashfeed_launch_feeds", "build.score_products", ValueError("x"),
                                params={"launch": "2000"}))
    alerts.task_failed(_context("flashfeed_daily_model", "train.train_group_als", ValueError("y"), map_index=2,
                                logical_date=datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)))
    forced, model = alert_inbox.alerts
    assert "for launch 2026-11-22 20:00 (version 20261122t2000)" in forced["text"]
    assert "FAILED for model day 2026-11-22 at stage 'train' (task train.train_group_als[2]" in model["text"]


def test_a_manual_run_without_logical_date_is_named_from_when_it_was_asked_for():
    subject = alerts.run_subject("flashfeed_launch_feeds", None, "2026-11-22T17:30:00Z")   # 12:30 local
    assert subject["version"] == "20261122t1500"


def test_an_unreachable_webhook_is_logged_and_never_raises(monkeypatch, caplog):
    from tests.conftest import free_port

    monkeypatch.setenv(alerts.WEBHOOK_ENV, f"http://127.0.0.1:{free_port()}/nobody")
    with caplog.at_level(logging.ERROR):
        assert alerts.send_alert("launch at risk", {"k": "v"}) is False
    assert "ALERT: launch at risk" in caplog.text and "could not post the alert" in caplog.text


@pytest.mark.parametrize("value", ["", "   "])
def test_without_a_webhook_the_alert_is_only_logged(monkeypatch, caplog, value):
    monkeypatch.setenv(alerts.WEBHOOK_ENV, value)
    with caplog.at_level(logging.ERROR):
        assert alerts.send_alert("x", {}) is False
    assert "ALERT: x" in caplog.text


def test_the_launch_watch_alerts_once(alert_inbox, monkeypatch):
    """Its own alert carries the launch's progress; the failure callback must not repeat it."""
    monkeypatch.setenv(alerts.WEBHOOK_ENV, alert_inbox.url)
    alerts.task_failed(_context("flashfeed_launch_watch", "check_launch_flipped", alerts.LaunchNotFlipped("late")))
    assert alert_inbox.alerts == []
    alerts.task_failed(_context("flashfeed_launch_watch", "check_launch_flipped", ConnectionError("no DynamoDB")))
    [posted] = alert_inbox.alerts
    assert "FAILED for launch 2026-11-22 11:00" in posted["text"] and "ConnectionError: no DynamoDB" in posted["text"]
