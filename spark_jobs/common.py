"""What every flashfeed Spark application needs: a session, plain logging, lake I/O.

Partitions are written atomically: into a staging sibling first, then swapped into place
and sealed with `_SUCCESS`, through Hadoop's FileSystem API so that the same code works on
a local folder and on S3 (`s3a://`).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Iterator

from pyspark.sql import SparkSession

from flashfeed import lake
from flashfeed.config import lake_root, load_config

SQL_DIR = Path(__file__).resolve().parents[1] / "include" / "sql"
STAGING_SUFFIX = ".__staging"
DIGEST_CHUNK_BYTES = 1 << 20


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
    doc: str, argv: list[str] | None, *, launch: bool = False, group: bool = False
) -> tuple[argparse.Namespace, dict, str]:
    """(arguments, config, lake root) of a job; `doc` is the job module's docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
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
    spark = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(spark_cfg["shuffle_partitions"]))
        .config("spark.sql.adaptive.enabled", "true")
        # Takes effect when this process starts the JVM (the `flashfeed evaluate/tune` commands);
        # under spark-submit the driver is already running with --driver-memory.
        .config("spark.driver.memory", str(spark_cfg["driver_memory"]))
        # group=13 is a name, not a number: keep partition values as strings.
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel(spark_cfg["log_level"])
    return spark


def read_sql(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")


class LakeFS:
    """Thin wrapper over Hadoop's FileSystem for markers, small JSON files and renames."""

    def __init__(self, spark: SparkSession):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

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
        """(bytes, sha256, lines) of one file, streamed by the driver through fsspec."""
        import fsspec

        local = uri[len("file:"):] if uri.startswith("file:") else uri
        sha, size, lines = hashlib.sha256(), 0, 0
        with fsspec.open(lake.fsspec_url(local), "rb") as handle:
            while chunk := handle.read(DIGEST_CHUNK_BYTES):
                sha.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
        return size, sha.hexdigest(), lines

    def require(self, partition: str, what: str) -> None:
        """Fail with the next step when an input partition is not complete."""
        marker = lake.success(partition)
        if not self.exists(marker):
            raise FileNotFoundError(
                f"{what} is not complete: {marker} does not exist. "
                f"Run (or backfill) the task that writes {partition} first."
            )


@contextlib.contextmanager
def staged_partition(fs: LakeFS, partition: str, log: logging.Logger) -> Iterator[str]:
    """Yield a staging URI to write the whole partition into; on success swap it in and seal it.

    A failure leaves the previous partition untouched (and no `_SUCCESS` for a half-write).
    """
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
