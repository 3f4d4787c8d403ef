"""What the Spark jobs write in the task log: inputs, counts and outputs of a normal run, and a
failure that names the missing partition and the next step (read at 10:45 before an 11:00 launch)."""
from __future__ import annotations

import json
import logging
import re
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from flashfeed.core import lake
from flashfeed.demo import generator as demo_data
from flashfeed.demo.generator import SCHEMAS
from spark_jobs import build_collections, features, score_products, train_group
from spark_jobs.common import JobError, LakeFS, first_line, get_logger, run_job

pytestmark = pytest.mark.slow   # whole Spark jobs: not in `make test-fast`
DAY = "2026-11-22"


@pytest.fixture
def job_log(caplog):
    """The jobs' loggers write plain lines to stderr and do not propagate: listen to them directly."""
    loggers = [get_logger(name) for name in ("features", "train_group", "score_products", "build_collections")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def job_spark(spark, monkeypatch):
    """The jobs run on the tests' session: their own session would change its settings, and
    their final `spark.stop()` would end it for the tests after them."""
    for job in (features, train_group, score_products, build_collections):
        monkeypatch.setattr(job, "spark_session", lambda name, config: spark)
    monkeypatch.setattr(spark, "stop", lambda: None)
    return spark


@pytest.mark.parametrize("job, args, marker, next_step", [
    (features, [], "raw/events/dt=2026-11-21/_SUCCESS",
     "Next step: deliver raw events for 2026-11-21 again"),
    (train_group, ["--group", "13"], f"features/dt={DAY}/_SUCCESS",
     f"Next step: run flashfeed_daily_model for {DAY} first"),
    (score_products, ["--launch", "1100"], f"raw/sale_calendar/dt={DAY}/_SUCCESS",
     f"Next step: deliver raw sale_calendar for {DAY} again"),
    (build_collections, ["--launch", "1100"], f"affinity/dt={DAY}/_SUCCESS",
     f"Next step: let flashfeed_daily_model for {DAY} finish"),
], ids=["features", "train_group", "score_products", "build_collections"])
def test_a_missing_input_partition_fails_with_its_uri_and_the_next_step(job_spark, tmp_path, job, args, marker,
                                                                         next_step):
    with pytest.raises(JobError) as failure:
        job.main(["--dt", DAY, "--lake", str(tmp_path), *args])
    message = str(failure.value)
    assert f"{tmp_path}/{marker} does not exist" in message
    assert next_step in message


def test_run_job_ends_a_job_error_with_one_plain_line_and_exit_code_1(job_log):
    log = get_logger("features")

    def main(argv):
        raise JobError("raw events for 2026-11-21 not complete: /lake/raw/events/dt=2026-11-21/_SUCCESS "
                       "does not exist", "deliver raw events for 2026-11-21 again, then clear this task")

    with pytest.raises(SystemExit) as exit_:
        run_job(main, log, [])
    assert exit_.value.code == 1
    last = job_log.records[-1]
    assert last.levelname == "ERROR" and last.exc_info is None      # the message says it all: no traceback
    assert last.getMessage().startswith("FAILED after ")
    assert last.getMessage().endswith("/_SUCCESS does not exist. Next step: deliver raw events for 2026-11-21 "
                                      "again, then clear this task.")


def test_run_job_keeps_the_traceback_of_an_unexpected_error_and_ends_with_the_cause(job_log):
    def main(argv):
        raise KeyError("style_id")

    with pytest.raises(SystemExit) as exit_:
        run_job(main, get_logger("features"), [])
    assert exit_.value.code == 1
    *_, traceback, last = job_log.records
    assert traceback.exc_info is not None
    assert "FAILED after" in last.getMessage() and "KeyError: 'style_id'. Next step:" in last.getMessage()


def test_the_cause_of_a_spark_error_is_its_java_exception_not_the_py4j_call():
    class Py4JJavaError(Exception):
        pass

    error = Py4JJavaError("An error occurred while calling o1057.count.\n: org.apache.spark.SparkException: "
                          "[FAILED_READ_FILE.NO_HINT] Encountered error while reading file /lake/x.parquet.\n\tat ...")
    assert first_line(error) == ("Py4JJavaError: org.apache.spark.SparkException: [FAILED_READ_FILE.NO_HINT] "
                                 "Encountered error while reading file /lake/x.parquet")


def test_a_gap_in_the_raw_days_is_a_warning_naming_the_days(spark, tmp_path, job_log):
    demo_data.generate(str(tmp_path), members=20, days=3, end_date=DAY, seed=5)
    (tmp_path / "raw" / "events" / "dt=2026-11-20" / lake.SUCCESS).unlink()
    days = [date(2026, 11, 22) - timedelta(days=i) for i in range(1, 6)]
    features.read_daily(spark, LakeFS(spark), "events", days, str(tmp_path))
    assert "reading events: 2 of 5 daily partitions present (2026-11-19 .. 2026-11-21)" in job_log.text
    assert "raw events has no complete partition for 1 days between 2026-11-19 and 2026-11-21 (2026-11-20)" \
        in job_log.text


def _rewrite(spark, partition: str, change) -> None:
    """Replace a sealed raw partition by `change(frame)`, written by Spark and sealed again."""
    change(spark.read.parquet(partition)).write.parquet(partition + ".new")
    shutil.rmtree(partition)
    Path(partition + ".new").rename(partition)
    Path(lake.success(partition)).touch()


@pytest.mark.parametrize("change, problem", [
    (lambda f: f.drop("qty_on_hand"), "column qty_on_hand is missing"),
    (lambda f: f.withColumn("qty_on_hand", f.qty_on_hand.cast("string")),
     "column qty_on_hand is string, the contract says bigint"),
    (lambda f: f.withColumn("starts_at", f.starts_at.cast("timestamp_ntz")),
     "column starts_at is timestamp without time zone (timestamp_ntz), the contract says timestamp"),
], ids=["missing", "string-for-number", "naive-timestamp"])
def test_a_raw_partition_off_the_contract_is_named_with_its_uri_and_column(job_spark, tmp_path, change, problem):
    demo_data.generate(str(tmp_path), members=20, days=2, end_date=DAY, seed=5)
    calendar_uri = lake.raw("sale_calendar", DAY, str(tmp_path))
    _rewrite(job_spark, calendar_uri, change)          # complete, but not the contract's schema
    with pytest.raises(JobError, match=rf"raw sale_calendar does not match the lake contract .* in 1 of 1 "
                                       rf"partitions: {calendar_uri}: {re.escape(problem)}"
                                       rf".*Next step: deliver raw sale_calendar for {DAY} again"):
        score_products.main(["--dt", DAY, "--launch", "1100", "--lake", str(tmp_path)])


def test_one_day_of_events_off_the_contract_fails_the_daily_model_naming_that_day(job_spark, tmp_path):
    demo_data.generate(str(tmp_path), members=20, days=3, end_date=DAY, seed=5)
    bad_day = lake.raw("events", "2026-11-20", str(tmp_path))
    _rewrite(job_spark, bad_day, lambda f: f.withColumn("occurred_at", f.occurred_at.cast("string")))
    with pytest.raises(JobError, match=rf"raw events does not match the lake contract .* in 1 of 3 partitions: "
                                       rf"{bad_day}: column occurred_at is string, the contract says timestamp"):
        features.main(["--dt", DAY, "--lake", str(tmp_path)])
    assert not Path(lake.success(lake.features(DAY, str(tmp_path)))).exists()


def test_a_catalogue_moving_many_styles_is_refused_and_a_few_moves_are_logged(job_spark, tmp_path, job_log):
    root = str(tmp_path)
    demo_data.generate(root, members=20, days=3, end_date=DAY, seed=5)
    today = lake.raw("catalog", DAY, root)
    moved = job_spark.read.parquet(today).orderBy("style_id").limit(1).first().style_id
    _rewrite(job_spark, today, lambda f: f.withColumn(
        "subclass", F.when(f.style_id == moved, F.lit("Moved Subclass")).otherwise(f.subclass)))
    features.main(["--dt", DAY, "--lake", root])
    report = json.loads(Path(lake.features(DAY, root), "groups.json").read_text())["catalog"]
    assert report["previous"] == "2026-11-21" and report["hierarchy_changes"] == 1
    assert f"catalog: 1 of {report['styles_in_both']} styles changed subclass or brand since 2026-11-21" \
        in job_log.text and f"{moved}: " in job_log.text

    # Columns shifted by a broken export: every style moves. The day's features stay as they were.
    sealed = Path(lake.success(lake.features(DAY, root))).stat().st_mtime_ns
    job_spark.catalog.clearCache()                 # each spark-submit has its own session and cache
    _rewrite(job_spark, today, lambda f: f.withColumn("subclass", f["class"]))
    with pytest.raises(JobError, match=rf"raw catalog {today} against {lake.raw('catalog', '2026-11-21', root)}: "
                                       r"[\d,]+ of the [\d,]+ styles in both catalogues \(100.0%\) changed .*"
                                       r"raise cleaning.max_hierarchy_change_share"):
        features.main(["--dt", DAY, "--lake", root])
    assert Path(lake.success(lake.features(DAY, root))).stat().st_mtime_ns == sealed


@pytest.mark.parametrize("job, args, cause", [
    (features, [], r"no subclass-brand has \d+\+ on hand in any launch window of 2026-11-22"),
    (score_products, ["--launch", "1100"], r"no product with \d+\+ on hand is on sale in .* \(0 on sale in all\)"),
], ids=["daily-model", "launch"])
def test_an_empty_sale_calendar_fails_the_day_naming_it_and_writes_nothing(job_spark, tmp_path, job, args, cause):
    root = str(tmp_path)
    demo_data.generate(root, members=20, days=3, end_date=DAY, seed=5)
    if job is score_products:
        features.main(["--dt", DAY, "--lake", root])
    _rewrite(job_spark, lake.raw("sale_calendar", DAY, root), lambda f: f.limit(0))
    with pytest.raises(JobError, match=cause + rf".*{lake.raw('sale_calendar', DAY, root)}"
                                               rf".*Next step: deliver raw sale_calendar for {DAY} again"):
        job.main(["--dt", DAY, "--lake", root, *args])
    output = lake.features(DAY, root) if job is features else lake.products(DAY, "1100", root)
    assert not Path(lake.success(output)).exists() and not Path(output).exists()


def test_spark_written_timestamps_int96_or_micros_meet_the_contract(spark, tmp_path):
    frame = spark.createDataFrame([("m1", "s1", "return", datetime(2026, 11, 21, 10, 0))],
                                  "member_id string, style_id string, kind string, occurred_at timestamp")
    for output in ("INT96", "TIMESTAMP_MICROS", "TIMESTAMP_MILLIS"):
        spark.conf.set("spark.sql.parquet.outputTimestampType", output)
        frame.write.mode("overwrite").parquet(str(tmp_path / output))
        assert lake.schema_problems(lake.partition_columns(str(tmp_path / output)), SCHEMAS["returns"]) == []
    spark.conf.unset("spark.sql.parquet.outputTimestampType")


def test_a_normal_run_logs_inputs_counts_and_outputs(job_spark, tmp_path, job_log):
    root = str(tmp_path)
    demo_data.generate(root, members=60, days=3, end_date=DAY, seed=5)
    features.main(["--dt", DAY, "--lake", root])
    score_products.main(["--dt", DAY, "--launch", "1100", "--lake", root])
    lines = [record.getMessage() for record in job_log.records if record.levelno >= logging.INFO]

    def line(start: str) -> str:
        found = [text for text in lines if text.startswith(start)]
        assert found, f"no line starts with {start!r} in:\n" + "\n".join(lines)
        return found[0]

    # features: inputs and parameters first, counts after each step, outputs and time last
    assert f"raw catalog {lake.raw('catalog', DAY, root)}" in line(f"features for {DAY}: events and returns of")
    assert "lookback 90 days" in line(f"features for {DAY}: events and returns of")
    assert line("reading events: 3 of 180 daily partitions present")
    assert line("catalog: ") and line("events read: ") and line("group ")
    assert any(re.fullmatch(r"\d+ members in \d+ groups", text) for text in lines)
    assert f"wrote {lake.features(DAY, root)} " in line(f"features for {DAY} done in ")
    # score_products: the same shape
    assert lake.raw("sale_calendar", DAY, root) in line("launch 20261122t1100: window")
    assert line("products on sale in the window: ")
    assert line("kept ")
    assert f"wrote {lake.products(DAY, '1100', root)}" in line("launch 20261122t1100 products done in ")
    assert lines[-1].startswith("launch 20261122t1100 products done in ")
