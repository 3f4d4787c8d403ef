"""DAG integrity: both DAGs import cleanly and cheaply, are well-formed, and fire on time."""
from __future__ import annotations

import inspect
import socket
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins"))

from flashfeed_airflow import schedules  # noqa: E402

EXPECTED_DAGS = {"flashfeed_daily_model", "flashfeed_launch_feeds", "flashfeed_launch_watch", "flashfeed_rollback",
                 "flashfeed_weekly_tune", "flashfeed_experiment", "flashfeed_freshness"}
# Tasks a retry cannot help: planning is date arithmetic, a timed-out sensor means missing data,
# a bad manifest stays bad, and a lost race or refused flip needs a person.
NO_RETRY_TASKS = {"plan_model_day", "plan_launch", "plan_tune_week", "serve.validate_feeds",
                  "serve.flip_served_version", "rollback_served_version", "check_launch_flipped",
                  "set_experiment_variant", "plan_refresh"}
STAGES = {"flashfeed_daily_model": {"inputs", "features", "train", "related", "publish"},
          "flashfeed_launch_feeds": {"inputs", "build", "serve"}}
DOCUMENTED_TASKS = {"features.build_features", "train.train_global_als", "train.train_group_als",
                    "related.related_items", "refresh_payloads",
                    "build.score_products", "build.build_collections", "serve.load_feeds", "serve.flip_served_version",
                    "rollback_served_version", "check_launch_flipped", "tune_groups"}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    """Parse dags/ with the network blocked and the lake and config files out of reach."""
    from airflow.dag_processing.dagbag import DagBag

    import flashfeed.core.config

    missing_home = tmp_path_factory.mktemp("parse") / "no-such-home"

    def no_network(*args, **kwargs):
        raise AssertionError(f"DAG parsing opened a network connection: {args}")

    def no_config(*args, **kwargs):
        raise AssertionError("DAG parsing read the config file (do it inside a task)")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLASHFEED_HOME", str(missing_home))
        mp.setenv("FLASHFEED_LAKE", str(missing_home / "lake"))
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(flashfeed.core.config, "_validated", no_config)       # cached or not: every load_config
        mp.setattr(flashfeed.core.config, "_settings", no_config)
        bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not missing_home.exists(), "DAG parsing created local state"
    return bag


def test_every_dag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED_DAGS


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_owner_tags_docs_retries_timeouts_and_alerts(dagbag, dag_id):
    from flashfeed_airflow.alerts import task_failed

    dag = dagbag.dags[dag_id]
    assert "flashfeed" in dag.tags and len(dag.tags) >= 2
    assert dag.doc_md and dag_id in dag.doc_md
    assert dag.catchup is False and dag.max_active_runs == 1
    for task in dag.tasks:
        assert task.owner == "flashfeed", task.task_id
        if task.task_id in NO_RETRY_TASKS or task.task_id.rsplit(".", 1)[-1].startswith("wait_for_"):
            assert task.retries == 0, f"{task.task_id} retries although a retry cannot help"
        else:
            assert task.retries >= 1, f"{task.task_id} has no retries"
            assert task.retry_exponential_backoff > 1, f"{task.task_id} retries without backoff"
        assert task.execution_timeout is not None, f"{task.task_id} can hang forever"
        assert task.on_failure_callback in ([task_failed], task_failed), task.task_id
        if task.task_id in DOCUMENTED_TASKS:
            assert task.doc_md and "Re-run" in task.doc_md, f"{task.task_id} does not say how to re-run it"


@pytest.mark.parametrize("dag_id", sorted(STAGES))
def test_every_stage_is_a_task_group(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    groups = {t.task_id.split(".", 1)[0] for t in dag.tasks if "." in t.task_id}
    assert groups == STAGES[dag_id]
    ungrouped = [t.task_id for t in dag.tasks if "." not in t.task_id]
    assert len(ungrouped) == 1 and ungrouped[0].startswith("plan_")   # the plan feeds every stage


@pytest.mark.parametrize("dag_id", sorted(STAGES))
def test_every_spark_application_takes_a_pool_slot(dagbag, dag_id):
    spark = [t for t in dagbag.dags[dag_id].tasks if _operator_name(t) == "LakeSparkSubmitOperator"]
    assert spark
    for task in spark:
        assert task.pool == schedules.SPARK_POOL, task.task_id
        assert task.execution_timeout in (schedules.SPARK_DAILY_TIMEOUT, schedules.SPARK_LAUNCH_TIMEOUT)
        # The driver's (and a cluster's executors') memory comes from the config, through the plan.
        conf = task.partial_kwargs["conf"] if hasattr(task, "partial_kwargs") else task.conf
        plan = next(t.task_id for t in dagbag.dags[dag_id].tasks if t.task_id.startswith("plan_"))
        assert set(conf) == set(schedules.SPARK_SUBMIT_KEYS), task.task_id
        assert all(f"task_ids='{plan}'" in value and f"['spark_submit']['{key}']" in value
                   for key, value in conf.items()), conf
    # Scoring and collections must time out with time left to alert before the launch.
    launch_spark = sum((t.execution_timeout for t in spark if dag_id == "flashfeed_launch_feeds"), timedelta())
    assert launch_spark < timedelta(minutes=schedules.LAUNCH_LEAD_MINUTES)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_every_param_has_a_title_and_a_description(dagbag, dag_id):
    params = dagbag.dags[dag_id].params
    for name in params.keys():
        param = params.get_param(name)
        assert param.schema.get("title") and len(param.description or "") > 20, f"{dag_id}.{name}"


def _operator_name(task) -> str:
    return task.operator_class.__name__ if type(task).__name__ == "MappedOperator" else type(task).__name__


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_no_cycles_and_a_single_entry_point(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    order = [t.task_id for t in dag.topological_sort()]
    assert len(order) == len(dag.tasks)
    roots = [t.task_id for t in dag.roots]
    assert roots == [order[0]] and roots[0].startswith(("plan_", "check_", "set_experiment"))


def test_daily_model_shape(dagbag):
    dag = dagbag.dags["flashfeed_daily_model"]
    train = dag.get_task("train.train_group_als")
    assert type(train).__name__ == "MappedOperator"  # one Spark application per member group
    assert train.operator_class.__name__ == "LakeSparkSubmitOperator"
    upstream_of_groups = dag.get_task("train.discover_groups").upstream_task_ids
    assert "features.build_features" in upstream_of_groups  # groups are only known after features ran
    # Every group's gate judges the day's global ALS: it is trained first.
    assert "train.train_global_als" in train.upstream_task_ids
    sensors = {t.task_id for t in dag.tasks if t.task_id.startswith("inputs.")}
    assert sensors == {f"inputs.wait_for_{name}" for name in ("events", "returns", "catalog", "sale_calendar")}
    # The quality report sees every group's outcome before the day's affinities are sealed.
    assert dag.get_task("publish.report_quality").upstream_task_ids == {"train.train_group_als", "plan_model_day"}
    assert "publish.report_quality" in dag.get_task("publish.publish_affinity").upstream_task_ids
    # Related subclass-brands need only the features: they are computed beside the training.
    assert dag.get_task("related.related_items").upstream_task_ids == {"features.build_features"}
    groups = dag.params.get_param("groups")
    assert groups.resolve(["13", "21"]) == ["13", "21"]
    with pytest.raises(Exception, match="does not match"):
        groups.resolve(["women"])


def test_launch_feeds_shape(dagbag):
    dag = dagbag.dags["flashfeed_launch_feeds"]
    chain = ["plan_launch", "build.score_products", "build.build_collections", "build.wait_for_feeds",
             "serve.validate_feeds", "serve.load_feeds", "serve.flip_served_version", "serve.apply_retention"]
    for upstream, downstream in zip(chain, chain[1:]):
        assert dag.get_task(upstream).task_id in _ancestors(dag, downstream)
    assert {"inputs.wait_for_affinity", "inputs.wait_for_related", "inputs.wait_for_sale_calendar"} <= \
        dag.get_task("build.score_products").upstream_task_ids
    assert set(dag.params.keys()) == {"launch", "dry_run", "allow_low_coverage", "allow_older_version",
                                      "reload_served_version"}
    assert dag.params["allow_low_coverage"] is False and dag.params["allow_older_version"] is False
    assert dag.params["reload_served_version"] is False      # reloading the live version is asked for, per run
    flip = dag.get_task("serve.flip_served_version")
    load = dag.get_task("serve.load_feeds")
    assert flip.allow_low_coverage == "{{ params.allow_low_coverage }}"
    assert flip.allow_older_version == load.allow_older_version == "{{ params.allow_older_version }}"
    assert load.reload_served_version == "{{ params.reload_served_version }}"
    assert load.dry_run == flip.dry_run == "{{ params.dry_run }}"
    assert flip.max_active_tis_per_dag == 1                  # backfills flip one run at a time
    retention = dag.get_task("serve.apply_retention")
    assert retention.upstream_task_ids == {"serve.flip_served_version"} and not retention.downstream_task_ids
    assert retention.dry_run == "{{ params.dry_run }}"   # skipped on a dry run
    launch = dag.params.get_param("launch")
    assert launch.resolve("1500") == "1500" and launch.resolve("") == ""
    with pytest.raises(Exception, match="is not one of"):   # the form shows the allowed slots
        launch.resolve("1200")


def test_launch_watch_fires_15_minutes_before_each_launch_and_checks_that_launch(dagbag):
    from airflow.serialization.encoders import encode_timetable
    from airflow.timetables.trigger import MultipleCronTriggerTimetable

    from flashfeed.core import calendar

    timetable = MultipleCronTriggerTimetable(*schedules.launch_watch_crons(), timezone=schedules.TIMEZONE)
    assert encode_timetable(dagbag.dags["flashfeed_launch_watch"].timetable) == encode_timetable(timetable)
    fires = _fire_times(timetable, datetime(2026, 10, 31, tzinfo=timezone.utc), 9)   # across the DST change
    ny = ZoneInfo("America/New_York")
    assert [f.astimezone(ny).strftime("%H:%M") for f in fires] == ["10:45", "14:45", "19:45"] * 3
    for fire in fires:
        assert calendar.slot_for_run(fire).starts_at - fire == timedelta(minutes=15)


def test_weekly_tune_is_off_until_unpaused_and_writes_where_the_daily_model_reads(dagbag):
    from flashfeed_airflow.planning import plan_tune_week

    dag = dagbag.dags["flashfeed_weekly_tune"]
    assert dag.is_paused_upon_creation is True
    assert [t.task_id for t in dag.topological_sort()] == ["plan_tune_week", "tune_groups"]
    tune = dag.get_task("tune_groups")
    assert tune.pool == "flashfeed_spark" and tune.application.endswith("spark_jobs/tune.py")
    # Sunday 01:00 in New York plans the Sunday: the day whose daily model (05:00) reads it.
    plan = plan_tune_week(datetime(2026, 11, 29, 6, 0, tzinfo=timezone.utc))
    assert plan["dt"] == "2026-11-29" and plan["tuning"].endswith("/tuning/dt=2026-11-29")
    from airflow.serialization.encoders import encode_timetable
    from airflow.timetables.trigger import CronTriggerTimetable

    timetable = CronTriggerTimetable(schedules.WEEKLY_TUNE_CRON, timezone=schedules.TIMEZONE)
    assert encode_timetable(dag.timetable) == encode_timetable(timetable)
    fires = _fire_times(timetable, datetime(2026, 11, 23, tzinfo=timezone.utc), 2)
    ny = ZoneInfo("America/New_York")
    assert [(f.astimezone(ny).strftime("%a %H:%M")) for f in fires] == ["Sun 01:00", "Sun 01:00"]


def test_rollback_shape(dagbag):
    dag = dagbag.dags["flashfeed_rollback"]
    assert type(dag.timetable).__name__ == "NullTimetable"   # manual trigger only
    order = [t.task_id for t in dag.topological_sort()]
    assert order == ["plan_rollback", "rollback_served_version", "apply_retention"]   # 3 tasks: no groups
    assert set(dag.params.keys()) == {"target_version"}
    target = dag.params.get_param("target_version")
    assert target.resolve(None) is None                          # empty in the form: the previous version
    assert target.resolve("20261122t1100") == "20261122t1100"
    with pytest.raises(Exception, match="does not match"):        # refused at trigger time
        target.resolve("yesterday")
    assert dag.get_task("rollback_served_version").retries == 0


def _ancestors(dag, task_id):
    seen, todo = set(), [task_id]
    while todo:
        for up in dag.get_task(todo.pop()).upstream_task_ids:
            if up not in seen:
                seen.add(up)
                todo.append(up)
    return seen


def test_schedules_match_the_configured_launch_times():
    from flashfeed.core.config import load_config

    cal = load_config()["calendar"]
    assert tuple(cal["launch_times"]) == schedules.LAUNCH_TIMES
    assert cal["timezone"] == schedules.TIMEZONE


def _fire_times(timetable, start: datetime, count: int) -> list[datetime]:
    from airflow.timetables.base import TimeRestriction

    times, last = [], None
    for _ in range(count):
        info = timetable.next_dagrun_info(
            last_automated_data_interval=last, restriction=TimeRestriction(start, None, catchup=True)
        )
        times.append(info.run_after)
        last = info.data_interval
    return times


def test_launch_timetable_fires_at_the_three_local_times_across_dst():
    from airflow.timetables.trigger import MultipleCronTriggerTimetable

    timetable = MultipleCronTriggerTimetable(*schedules.launch_crons(), timezone=schedules.TIMEZONE)
    # DST ends on 2026-11-01 in New York: 11:00 local is 15:00 UTC before, 16:00 UTC after.
    start = datetime(2026, 10, 31, 0, 0, tzinfo=timezone.utc)
    fires = _fire_times(timetable, start, 9)
    ny = ZoneInfo("America/New_York")
    local = [f.astimezone(ny) for f in fires]
    assert [t.strftime("%H:%M") for t in local] == ["10:15", "14:15", "19:15"] * 3
    assert [t.date().isoformat() for t in local[::3]] == ["2026-10-31", "2026-11-01", "2026-11-02"]
    assert fires[0] == datetime(2026, 10, 31, 14, 15, tzinfo=timezone.utc)   # EDT, UTC-4
    assert fires[6] == datetime(2026, 11, 2, 15, 15, tzinfo=timezone.utc)    # EST, UTC-5
    # Each run prepares the launch 45 minutes later, in local time.
    from flashfeed.core import calendar

    prepared = [calendar.slot_for_run(f) for f in fires]
    assert [s.hhmm for s in prepared] == ["1100", "1500", "2000"] * 3
    assert all(s.starts_at - f == timedelta(minutes=schedules.LAUNCH_LEAD_MINUTES) for s, f in zip(prepared, fires))


def test_dag_timetables_use_the_tested_schedules(dagbag):
    from airflow.serialization.encoders import encode_timetable
    from airflow.timetables.trigger import CronTriggerTimetable, MultipleCronTriggerTimetable

    launch = encode_timetable(dagbag.dags["flashfeed_launch_feeds"].timetable)
    expected = MultipleCronTriggerTimetable(*schedules.launch_crons(), timezone=schedules.TIMEZONE)
    assert launch == encode_timetable(expected)
    daily = encode_timetable(dagbag.dags["flashfeed_daily_model"].timetable)
    assert daily == encode_timetable(CronTriggerTimetable(schedules.DAILY_MODEL_CRON, timezone=schedules.TIMEZONE))


def test_launch_crons_reject_a_lead_that_crosses_midnight():
    with pytest.raises(ValueError):
        schedules.launch_crons(("00:30",), lead_minutes=45)


def test_freshness_runs_every_quarter_hour_of_the_day_and_is_off_until_unpaused(dagbag):
    from airflow.serialization.encoders import encode_timetable
    from airflow.timetables.trigger import CronTriggerTimetable

    dag = dagbag.dags["flashfeed_freshness"]
    assert dag.is_paused_upon_creation is True
    assert [t.task_id for t in dag.topological_sort()] == ["plan_refresh", "wait_for_intraday_events",
                                                           "refresh_payloads", "apply_refresh"]
    assert dag.get_task("wait_for_intraday_events").soft_fail is True    # a late quarter: the next run catches up
    timetable = CronTriggerTimetable(schedules.FRESHNESS_CRON, timezone=schedules.TIMEZONE)
    assert encode_timetable(dag.timetable) == encode_timetable(timetable)
    fires = _fire_times(timetable, datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc), 5)
    ny = ZoneInfo("America/New_York")
    assert [f.astimezone(ny).strftime("%H:%M") for f in fires] == ["06:00", "06:15", "06:30", "06:45", "07:00"]
    # Each run is given time to finish before the next one plans.
    assert dag.get_task("refresh_payloads").execution_timeout <= timedelta(minutes=15)


def test_every_aws_operator_and_sensor_takes_the_aws_default_connection(dagbag):
    """DynamoDB and S3 are reached through an Airflow connection (a secrets backend in production)."""
    aws_tasks = {}
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if _operator_name(task) in {"LoadFeedsOperator", "FlipServedVersionOperator",
                                        "RollbackServedVersionOperator", "ApplyRetentionOperator",
                                        "SuccessMarkerSensor", "LakeSparkSubmitOperator"}:
                if type(task).__name__ == "MappedOperator":     # its own setting, else the class's default
                    default = inspect.signature(task.operator_class.__init__).parameters["aws_conn_id"].default
                    aws_tasks[f"{dag.dag_id}.{task.task_id}"] = task.partial_kwargs.get("aws_conn_id", default)
                else:
                    aws_tasks[f"{dag.dag_id}.{task.task_id}"] = task.aws_conn_id
    assert {"flashfeed_launch_feeds.serve.load_feeds", "flashfeed_launch_feeds.serve.flip_served_version",
            "flashfeed_rollback.rollback_served_version", "flashfeed_rollback.apply_retention",
            "flashfeed_daily_model.features.build_features"} <= set(aws_tasks)
    assert set(aws_tasks.values()) == {"aws_default"}
