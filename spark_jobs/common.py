"""What every flashfeed Spark application needs: a session, plain logging, lake I/O.

Partitions are written atomically: into a staging sibling first, then swapped into place
and sealed with `_SUCCESS`, through Hadoop's FileSystem API so that the same code works on
a local folder and on S3 (`s3a://`).

Logs are read in the Airflow task log by the engineer deciding at 10:45 whether the 11:00
launch is at risk, so every job logs one line with its inputs and parameters, counts after
each step, progress on long work, one line with its outputs and elapsed time, and ends a
failure with a `JobError`: what is missing or wrong (the exact URI), then the next step.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from pyspark.sql import DataFrame, SparkSession

from flashfeed.core import lake
from flashfeed.core.config import lake_root, load_config, project_path
from flashfeed.core.schemas import SCHEMAS
from spark_jobs import executor_code

SQL_DIR = project_path("include", "sql")
STAGING_SUFFIX = ".__staging"
DIGEST_CHUNK_BYTES = 1 << 20
DISK_FULL = "No space left on device"        # ENOSPC, in Java's IOException and Python's OSError alike


class JobError(RuntimeError):
    """A failure the reader of the task log can act on; the message is "<cause>. Next step: <step>"."""

    def __init__(self, cause: str, next_step: str):
        self.cause, self.next_step = cause.rstrip(". "), next_step.rstrip(". ")
        super().__init__(f"{self.cause}. Next step: {self.next_step}.")


def first_line(error: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`: Spark's and py4j's messages run over many lines, and
    py4j's first one only names the call ("An error occurred while calling o123.count.")."""
    lines = [line.strip().removeprefix(": ") for line in str(error).splitlines()]
    lines = [line for line in lines if line and not line.startswith("An error occurred while calling")]
    return f"{type(error).__name__}: {lines[0][:limit].rstrip('. ')}" if lines else type(error).__name__


def run_job(main: Callable[[list[str]], None], log: logging.Logger, argv: list[str] | None = None) -> None:
    """spark-submit's entry point of a job: the task log's last line of a failure says why and
    what to do. A JobError's message is all the reader needs, so it is not buried under a
    traceback; any other error keeps its traceback (where it broke), then one plain line."""
    started = time.monotonic()
    try:
        main(sys.argv[1:] if argv is None else argv)
    except JobError as error:
        log.error("FAILED after %.1f s: %s", time.monotonic() - started, error)
        sys.exit(1)
    except Exception as error:
        if DISK_FULL in str(error):
            log.error("FAILED after %.1f s: %s: the disk under the lake or Spark's local folders is full. Next step: "
                      "free space there (or grow the volume), then clear this task; the partition being written was "
                      "not sealed, so readers still see the previous one.", time.monotonic() - started, DISK_FULL)
            sys.exit(1)
        log.exception("unexpected error")
        log.error("FAILED after %.1f s: %s. Next step: the traceback above shows where; fix the cause, then "
                  "clear this task (a re-run replaces only its own partitions).",
                  time.monotonic() - started, first_line(error))
        sys.exit(1)


def get_logger(name: str) -> logging.Logger:
    """Plain timestamped lines on stderr: they end up verbatim in the Airflow task log."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def parse_job_args(
    doc: str, argv: list[str] | None, *, launch: bool = False, group: bool = False,
    extra: Iterable[tuple[str, str]] = (),
) -> tuple[argparse.Namespace, dict, str]:
    """(arguments, config, lake root) of a job; `doc` is the job module's docstring; `extra`:
    more required (flag, help) arguments."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for flag, help_text in extra:
        parser.add_argument(flag, required=True, help=help_text)
    parser.add_argument("--dt", required=True, help="partition date YYYY-MM-DD (local date)")
    if launch:
        parser.add_argument("--launch", required=True, help="launch time HHMM, local (e.g. 1100)")
    if group:
        parser.add_argument("--group", required=True, help="member group key, e.g. 13")
    parser.add_argument("--lake", default=None, help="lake root URI (default: FLASHFEED_LAKE)")
    parser.add_argument("--config", default=None, help="config file (default: include/flashfeed.yaml)")
    args = parser.parse_args(argv)
    config = load_config(args.config) if args.config else load_config()
    return args, config, (args.lake or lake_root()).rstrip("/")


def spark_session(app_name: str, config: dict) -> SparkSession:
    spark_cfg = config["spark"]
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.adaptive.enabled", "true")
        # The catalog's style -> subclass-brand keys (about 15 MB at 450k styles) join the events
        # as a broadcast instead of sorting millions of events. Joins planned at run time (AQE)
        # keep Spark's 10 MB: a big shuffled side must not become a broadcast in a small heap.
        .config("spark.sql.autoBroadcastJoinThreshold", f"{spark_cfg['broadcast_join_mb']}m")
        .config("spark.sql.adaptive.autoBroadcastJoinThreshold", "10m")
        # Takes effect when this process starts the JVM (the `flashfeed evaluate/tune` commands);
        # under spark-submit the driver is already running with --driver-memory.
        .config("spark.driver.memory", spark_cfg["driver_memory"])
        # Driver <-> pandas through Arrow: the groups' factors and ratings, toPandas/createDataFrame.
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # group=13 is a name, not a number: keep partition values as strings.
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    )
    # An S3 lake's endpoint and region, from the environment (the Airflow task sets it from its
    # AWS connection); credentials stay in the environment, where s3a reads them.
    for key, value in lake.s3a_hadoop_settings(lake.s3_environment_settings()).items():
        builder = builder.config(f"spark.hadoop.{key}", value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(spark_cfg["log_level"])
    # A cluster's executors have no flashfeed of their own: they import the driver's.
    code = executor_code.ship_to_executors(spark)
    # Shuffles start with at least two partitions per core of the cluster (8 on a laptop), and
    # AQE merges the small ones a small group or a demo day leaves behind.
    partitions = max(spark_cfg["shuffle_partitions"], 2 * spark.sparkContext.defaultParallelism)
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    startup = driver_startup_seconds()
    heap = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory()   # what the driver really has
    get_logger("spark").info(
        "Spark session %s ready on %s (driver heap %.1f GB)%s", app_name, spark.sparkContext.master, heap / 2**30,
        f", {startup:.1f} s after the driver JVM started (fixed cost before any work)" if startup is not None else "")
    if code is not None:
        get_logger("spark").info("executors import flashfeed and spark_jobs from %s", code)
    return spark


def lazy_session(start: Callable[[], SparkSession], checkpoints: str) -> Callable[[], SparkSession]:
    """A Spark session started by `start()` at the first call only (for a fit too large for the
    driver, `als.driver_fit_max_ratings`), with Spark's ALS checkpoints under `checkpoints`;
    `.cache_info().currsize` says whether it started."""
    @functools.cache
    def spark() -> SparkSession:
        session = start()
        session.sparkContext.setCheckpointDir(checkpoints)
        return session
    return spark


def driver_jvm():
    """The driver's JVM without starting a Spark session: under spark-submit the one already
    running (its py4j gateway), otherwise a new one. A later session re-uses it."""
    from pyspark import SparkContext

    SparkContext._ensure_initialized()
    return SparkContext._jvm


def log_driver_ready(app_name: str, why: str) -> None:
    """The start-up line of a job that needs no Spark session (the pipeline benchmark reads it)."""
    startup = driver_startup_seconds()
    get_logger("spark").info("Spark driver %s ready without a session (%s)%s", app_name, why,
                             f", {startup:.1f} s after the driver JVM started" if startup is not None else "")


def driver_startup_seconds() -> float | None:
    """Seconds since the driver's JVM started: under spark-submit the Python driver is a child
    of the JVM, otherwise Python starts the JVM itself and its own start counts. Linux only
    (None elsewhere); the pipeline benchmark reads it from the task logs."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime "))

        def started(pid: int) -> tuple[str, float]:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
            name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            return name, boot + int(fields[19]) / ticks     # field 22 of stat: start time in ticks

        parent_name, parent_started = started(os.getppid())
        return time.time() - (parent_started if parent_name == "java" else started(os.getpid())[1])
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def read_sql(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")


class LakeFS:
    """Thin wrapper over Hadoop's FileSystem for markers, small JSON files and renames."""

    def __init__(self, spark: SparkSession | None = None):
        """On a session's Hadoop configuration, or without a session (`spark` None) on the driver
        JVM's own: the same `spark.hadoop.*` settings, for a job that needs no Spark session."""
        if spark is not None:
            self._jvm = spark.sparkContext._jvm
            self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        else:
            self._jvm = driver_jvm()
            self._conf = self._jvm.org.apache.spark.deploy.SparkHadoopUtil.get().newConfiguration(
                self._jvm.org.apache.spark.SparkConf())
            # as spark_session does
            for key, value in lake.s3a_hadoop_settings(lake.s3_environment_settings()).items():
                self._conf.set(key, value)

    def _path(self, uri: str):
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        return path, path.getFileSystem(self._conf)

    def exists(self, uri: str) -> bool:
        path, fs = self._path(uri)
        return bool(fs.exists(path))

    def delete(self, uri: str) -> None:
        path, fs = self._path(uri)
        if fs.exists(path):
            fs.delete(path, True)

    def rename(self, src: str, dst: str) -> None:
        src_path, fs = self._path(src)
        dst_path, _ = self._path(dst)
        parent = dst_path.getParent()
        if parent is not None and not fs.exists(parent):
            fs.mkdirs(parent)
        if not fs.rename(src_path, dst_path):
            raise IOError(f"could not rename {src} to {dst}")

    def write_bytes(self, uri: str, data: bytes) -> None:
        path, fs = self._path(uri)
        stream = fs.create(path, True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def write_json(self, uri: str, obj) -> None:
        self.write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def read_bytes(self, uri: str) -> bytes:
        path, fs = self._path(uri)
        stream = fs.open(path)
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def read_json(self, uri: str):
        return json.loads(self.read_bytes(uri).decode("utf-8"))

    def list_files(self, uri: str, suffix: str = "") -> list[str]:
        path, fs = self._path(uri)
        if not fs.exists(path):
            return []
        names = [str(status.getPath().toString()) for status in fs.listStatus(path) if status.isFile()]
        return sorted(n for n in names if n.endswith(suffix))

    def list_dirs(self, uri: str) -> list[str]:
        """Names (not paths) of the folders directly under `uri`, sorted; [] when it is missing."""
        path, fs = self._path(uri)
        if not fs.exists(path):
            return []
        return sorted(str(status.getPath().getName()) for status in fs.listStatus(path) if status.isDirectory())

    def file_digest(self, uri: str) -> tuple[int, str, int]:
        """(bytes, sha256, lines) of one file, streamed by the driver (`lake.open_file`)."""
        local = uri[len("file:"):] if uri.startswith("file:") else uri
        sha, size, lines = hashlib.sha256(), 0, 0
        with lake.open_file(local, "rb") as handle:
            while chunk := handle.read(DIGEST_CHUNK_BYTES):
                sha.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
        return size, sha.hexdigest(), lines

    def require(self, partition: str, what: str, next_step: str) -> None:
        """Fail with the next step when an input partition is not complete."""
        marker = lake.success(partition)
        if not self.exists(marker):
            partial = " (the folder exists: its writer did not finish)" if self.exists(partition) else ""
            raise JobError(f"{what} not complete: {marker} does not exist{partial}", next_step)


def check_columns(frame, expected: Iterable[str], what: str, uri: str, next_step: str) -> DataFrame:
    """Fail with the missing columns (and the URI) before Spark fails deep inside a plan; `frame` is
    a Spark or a pandas DataFrame."""
    missing = [column for column in expected if column not in frame.columns]
    if missing:
        raise JobError(f"{what} at {uri} lacks columns {missing} (it has {list(frame.columns)})", next_step)
    return frame


def raw_next_step(dataset: str, day) -> str:
    """What to do when a raw input partition is missing or malformed: it comes from outside."""
    return (f"deliver raw {dataset} for {day} again (the upstream export or `flashfeed import`, which end "
            f"with _SUCCESS), then clear this task")


def features_next_step(day) -> str:
    """What to do when the day's features (the daily model's first Spark job) are missing."""
    return f"run flashfeed_daily_model for {day} first (its build_features task writes them)"


def check_contract(dataset: str, partitions: list[str], next_step: str) -> None:
    """Fail naming each raw partition whose Parquet schema differs from the lake contract (a
    missing column or another type), before Spark fails deep inside a plan or reads wrong values."""
    found = []
    for partition in partitions:
        columns = lake.partition_columns(partition)
        problems = lake.schema_problems(columns, SCHEMAS[dataset]) if columns is not None else []
        if problems:
            found.append(f"{partition}: {'; '.join(problems)}")
    if found:
        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more partitions" if len(found) > 5 else "")
        raise JobError(f"raw {dataset} does not match the lake contract (DESIGN.md section 5; "
                       f"{lake.contract_ddl(SCHEMAS[dataset])}) in {len(found)} of {len(partitions)} "
                       f"partitions: {shown}", next_step)


def read_contract(spark: SparkSession, dataset: str, partitions: list[str]) -> DataFrame:
    """Raw partitions checked by `check_contract`, read with the contract's schema."""
    return spark.read.schema(lake.contract_ddl(SCHEMAS[dataset])).parquet(*partitions)


def read_raw(spark: SparkSession, fs: LakeFS, dataset: str, day, root: str) -> DataFrame:
    """One complete raw partition, with the columns and types of the lake contract (DESIGN.md section 5)."""
    partition = lake.raw(dataset, day, root)
    next_step = raw_next_step(dataset, day)
    fs.require(partition, f"raw {dataset} for {day}", next_step)
    check_contract(dataset, [partition], next_step)
    return read_contract(spark, dataset, [partition])


@contextlib.contextmanager
def staged_partition(fs: LakeFS, partition: str, log: logging.Logger) -> Iterator[str]:
    """Yield the URI to write the whole partition into; on success seal it with `_SUCCESS`.

    On a file system that is a staging sibling, swapped in at the end: a failure leaves the
    previous partition untouched. On S3 a directory rename copies every file and a deleted
    folder may still be listed (SeaweedFS), so the partition is unsealed, emptied and written in
    place: a failure leaves it unsealed, which readers wait for or refuse, and the next run
    rewrites it. Either way nothing half-written is ever sealed. Writers use mode "overwrite".
    """
    if partition.startswith(lake.S3_SCHEMES):
        fs.delete(lake.success(partition))
        fs.delete(partition)
        yield partition
    else:
        staging = partition + STAGING_SUFFIX
        fs.delete(staging)
        try:
            yield staging
        except BaseException:
            fs.delete(staging)
            raise
        fs.delete(partition)
        fs.rename(staging, partition)
    fs.write_bytes(lake.success(partition), b"")
    log.info("wrote %s (sealed with %s)", partition, lake.SUCCESS)


@contextlib.contextmanager
def timed(log: logging.Logger, what: str) -> Iterator[None]:
    started = time.monotonic()
    log.info("%s ...", what)
    yield
    log.info("%s done in %.1f s", what, time.monotonic() - started)
