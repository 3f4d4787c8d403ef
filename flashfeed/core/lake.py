"""The lake contract (DESIGN.md section 5): every path any stage reads or writes.

Partitions are complete only when their `_SUCCESS` marker exists; writers replace a whole
partition and write the marker last, so a re-run or a backfill overwrites its own partition
and nothing else.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from datetime import date

from flashfeed.core.config import lake_root

SUCCESS = "_SUCCESS"
PART_FILE = "part-00000.parquet"                      # the one data file of a partition written by Python
RAW_DATASETS = ("events", "catalog", "sale_calendar", "returns")
FEEDS = ("products", "brands", "categories")          # the six collections: each feed x VARIANTS
VARIANTS = ("full", "card")
BECAUSE = "because"                                    # the seventh: "Because you viewed X", card only
MEMBER_FEEDS = {**{feed: VARIANTS for feed in FEEDS}, BECAUSE: ("card",)}
RELATED, BOUGHT_TOGETHER = "related", "bought_together"
PRODUCT_FEEDS = (RELATED, BOUGHT_TOGETHER)             # one payload per product on sale
FALLBACK_MEMBER_PREFIX = "__fallback__#"
STYLE_KEY_PREFIX = "__style__#"                        # table hash key of a product's payloads
FALLBACK_DATA_SET = "fallback"


def _root(root: str | None) -> str:
    return (root or lake_root()).rstrip("/")


def _day(dt: date | str) -> str:
    return dt if isinstance(dt, str) else dt.isoformat()


def raw(dataset: str, dt: date | str, root: str | None = None) -> str:
    if dataset not in RAW_DATASETS:
        raise ValueError(f"unknown raw dataset {dataset!r}; expected one of {RAW_DATASETS}")
    return f"{_root(root)}/raw/{dataset}/dt={_day(dt)}"


QUARTER_MINUTES = 15


def intraday_events(dt: date | str, hhmm: str, root: str | None = None) -> str:
    """Raw events of one quarter hour, [hhmm, hhmm + 15 min) of UTC date `dt` (the events schema),
    complete when its `_SUCCESS` exists: what the freshness refresh reads during the day."""
    return f"{_root(root)}/raw/events_intraday/dt={_day(dt)}/hhmm={hhmm}"


def refresh(dt: date | str, launch: str, quarter: str, root: str | None = None) -> str:
    """The payloads the freshness refresh rewrote after quarter hour `quarter` (`YYYYMMDDtHHMM`,
    UTC, its start) in launch `launch`'s served version."""
    return f"{feeds(dt, launch, root)}/refresh/quarter={quarter}"


def features(dt: date | str, root: str | None = None) -> str:
    return f"{_root(root)}/features/dt={_day(dt)}"


def rejects(dt: date | str, root: str | None = None) -> str:
    return f"{_root(root)}/rejects/dt={_day(dt)}"


def models(dt: date | str, group: str | None = None, root: str | None = None) -> str:
    base = f"{_root(root)}/models/dt={_day(dt)}"
    return base if group is None else f"{base}/group={group}"


def global_model(dt: date | str, root: str | None = None) -> str:
    """The day's one ALS over every member (train_global), next to the groups' models."""
    return f"{models(dt, root=root)}/global"


def tuning(dt: date | str, root: str | None = None) -> str:
    """`flashfeed_weekly_tune`'s per-group ALS settings of day D (settings.json, results.csv)."""
    return f"{_root(root)}/tuning/dt={_day(dt)}"


def related(dt: date | str, root: str | None = None) -> str:
    """Day D's related subclass-brands (co-occurrence, bought-together rules; spark_jobs/related.py)."""
    return f"{_root(root)}/related/dt={_day(dt)}"


def affinity(dt: date | str, group: str | None = None, root: str | None = None) -> str:
    base = f"{_root(root)}/affinity/dt={_day(dt)}"
    return base if group is None else f"{base}/group={group}"


def products(dt: date | str, launch: str, root: str | None = None) -> str:
    return f"{_root(root)}/products/dt={_day(dt)}/launch={launch}"


def feeds(dt: date | str, launch: str, root: str | None = None) -> str:
    return f"{_root(root)}/feeds/dt={_day(dt)}/launch={launch}"


def success(partition: str) -> str:
    return f"{partition}/{SUCCESS}"


def feed_folder(feed: str, variant: str, experiment_variant: str | None = None) -> str:
    """Folder of one data set inside a feeds partition, e.g. `brands_card`, or
    `brands_card.no_boost` for the members of experiment variant `no_boost`."""
    return f"{feed}_{variant}" + (f".{experiment_variant}" if experiment_variant else "")


def member_data_sets() -> list[str]:
    """`products_full` .. `categories_card`, `because_card`: one payload per member each."""
    return [feed_folder(feed, variant) for feed, variants in MEMBER_FEEDS.items() for variant in variants]


def data_sets(experiment=None) -> list[str]:
    """Every data set of a launch's feeds partition, in manifest (and load) order; with an
    experiment (flashfeed.core.experiments), its variants' six collections too."""
    treatments = [feed_folder(feed, variant, arm.name) for arm in (experiment.treatments if experiment else ())
                  for feed in FEEDS for variant in VARIANTS]
    return [*member_data_sets(), *treatments, FALLBACK_DATA_SET, *PRODUCT_FEEDS]


def fsspec_url(uri: str) -> str:
    """fsspec names Hadoop's `s3a://` scheme `s3://`; local paths pass through."""
    return "s3://" + uri[len("s3a://"):] if uri.startswith("s3a://") else uri


# --- an S3 lake: where it is and with which credentials -------------------------------------
# In an Airflow task from its AWS connection (the plugin's default provider); elsewhere (the
# command line, a Spark driver) from the AWS environment variables (AWS_ENDPOINT_URL_S3 or
# AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and AWS's chain.
# Temporary credentials are never frozen: settings carry either static keys or a `credentials`
# object that refreshes itself (botocore's), read again for every S3 file system made.
S3_SCHEMES = ("s3://", "s3a://")
READ_BUFFER_BYTES = 1 << 20
_s3: dict | None = None              # set with use_s3: wins over everything
_s3_provider = None                  # a default source (the Airflow plugin's connection), called once
_s3_provided: dict | None = None


def use_s3(settings: dict | None) -> None:
    """Use these S3 settings from now on; None goes back to the default source. Keys: endpoint,
    region, and either static keys (access_key, secret_key[, session_token]) or `credentials`,
    an object whose `get_frozen_credentials()` gives the current (access_key, secret_key, token),
    e.g. botocore's refreshing credentials; None values (or neither) mean AWS's defaults."""
    global _s3
    _s3 = settings


def default_s3_provider(provider) -> None:
    """Where S3 settings come from when `use_s3` set none: `provider()`, called at the first S3
    access (the Airflow plugin registers its AWS connection). Without one: the environment."""
    global _s3_provider, _s3_provided
    _s3_provider, _s3_provided = provider, None


def s3_settings() -> dict:
    global _s3_provided
    if _s3 is not None:
        return _s3
    if _s3_provider is not None:
        if _s3_provided is None:
            _s3_provided = _s3_provider()
        return _s3_provided
    return s3_environment_settings()


def s3_environment_settings() -> dict:
    """The S3 settings of the AWS environment variables: what a Spark job uses (the operator that
    starts it puts its connection's settings there)."""
    env = os.environ
    return {"endpoint": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            "access_key": env.get("AWS_ACCESS_KEY_ID") or None, "secret_key": env.get("AWS_SECRET_ACCESS_KEY") or None,
            "session_token": env.get("AWS_SESSION_TOKEN") or None}


def s3a_hadoop_settings(settings: dict) -> dict[str, str]:
    """Hadoop's s3a settings (without the `spark.hadoop.` prefix) for an endpoint and region;
    credentials stay in the environment (`s3_environment`), never on a command line."""
    endpoint = settings.get("endpoint")
    conf = {}
    if endpoint:
        conf.update({"fs.s3a.endpoint": endpoint, "fs.s3a.path.style.access": "true",
                     "fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https")).lower()})
    if settings.get("region"):
        conf["fs.s3a.endpoint.region"] = settings["region"]
    return conf


def s3_environment(settings: dict) -> dict[str, str]:
    """The AWS environment variables that give a process (spark-submit, a Spark driver) these S3
    settings: `s3_settings` reads them back there, s3a reads the credentials itself. Only static
    keys go there: refreshing `credentials` are never frozen into an environment (the process's
    own provider chain finds and refreshes them)."""
    names = {"endpoint": "AWS_ENDPOINT_URL_S3", "region": "AWS_REGION", "access_key": "AWS_ACCESS_KEY_ID",
             "secret_key": "AWS_SECRET_ACCESS_KEY", "session_token": "AWS_SESSION_TOKEN"}
    return {variable: settings[key] for key, variable in names.items() if settings.get(key)}


def _s3_filesystem():
    """pyarrow's S3 client (pyarrow is already here; s3fs would need another botocore) as fsspec."""
    from fsspec.implementations.arrow import ArrowFSWrapper
    from pyarrow.fs import S3FileSystem

    settings = s3_settings()
    options: dict = {"region": settings.get("region") or "us-east-1"}
    if settings.get("endpoint"):
        scheme, _, host = settings["endpoint"].partition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    keys = current_keys(settings)
    if keys is not None:
        options.update(access_key=keys[0], secret_key=keys[1], session_token=keys[2])
    return ArrowFSWrapper(S3FileSystem(**options))


def current_keys(settings: dict) -> tuple[str, str, str | None] | None:
    """(access key, secret key, session token) to sign with now: the static keys, else the
    current values of the refreshing `credentials` (botocore refreshes them well before they
    expire, so each file system made, one per lake operation, gets a live token), else None:
    pyarrow's own provider chain, which refreshes itself."""
    if settings.get("access_key"):
        return settings["access_key"], settings["secret_key"], settings.get("session_token")
    credentials = settings.get("credentials")
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


# --- small files through fsspec (local folders and S3), for plain-Python tasks --------------

def filesystem(uri: str):
    """(fsspec filesystem, path) of a lake URI. fsspec is imported here, not at DAG parse time."""
    if uri.startswith(S3_SCHEMES):
        return _s3_filesystem(), uri.split("://", 1)[1]
    import fsspec

    return fsspec.core.url_to_fs(uri)


def open_file(uri: str, mode: str = "rb"):
    """A lake file opened for reading ("rb", "r": UTF-8) or writing ("wb"), local or on S3."""
    fs, path = filesystem(uri)
    if uri.startswith(S3_SCHEMES) and mode in ("rb", "r"):
        # Buffered: line by line, pyarrow's S3 file would fetch every byte with its own request.
        stream = io.BufferedReader(fs.fs.open_input_stream(path, buffer_size=READ_BUFFER_BYTES), READ_BUFFER_BYTES)
        return stream if mode == "rb" else io.TextIOWrapper(stream, encoding="utf-8")
    return fs.open(path, mode)


def read_json(uri: str):
    with open_file(uri, "r") as handle:
        return json.load(handle)


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    fs.makedirs(fs._parent(path), exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(data)


def write_partition(partition: str, table) -> None:
    """Replace a whole partition by one Parquet file of `table`, sealed with `_SUCCESS` last.

    A local folder is written into a hidden sibling, then renamed into place, so readers never
    see a half-written one. On S3, which has no rename, the old seal goes first, then the old
    files, then the new file and the new seal: meanwhile the partition is unsealed, which every
    reader waits for or refuses. A failure (a full disk) leaves nothing sealed half-written.
    """
    import shutil
    from pathlib import Path

    import pyarrow.parquet as pq

    if partition.startswith(S3_SCHEMES):
        fs, path = filesystem(partition)
        if fs.exists(f"{path}/{SUCCESS}"):
            fs.rm(f"{path}/{SUCCESS}")
        if fs.exists(path):
            fs.rm(path, recursive=True)
        with fs.open(f"{path}/{PART_FILE}", "wb") as handle:
            pq.write_table(table, handle)
        with fs.open(f"{path}/{SUCCESS}", "wb"):
            pass
        return
    final = Path(partition)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.tmp")
    retired = final.with_name(f".{final.name}.old")
    for leftover in (staging, retired):
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir()
    try:
        pq.write_table(table, staging / PART_FILE)
        (staging / SUCCESS).touch()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)     # e.g. a full disk: free what was written
        raise
    if final.exists():
        final.rename(retired)
        staging.rename(final)
        shutil.rmtree(retired)
    else:
        staging.rename(final)


def read_table(uri: str, columns: list[str] | None = None):
    """A small Parquet partition (a folder of part files, or one file) as a pandas DataFrame,
    read on the driver with pyarrow: no Spark job for a group's few hundred thousand rows."""
    import pyarrow.dataset as ds

    fs, path = filesystem(uri)
    fs = getattr(fs, "fs", fs)          # on S3 pyarrow's own file system, not its fsspec wrapper
    return ds.dataset(path, filesystem=fs, format="parquet", partitioning=None,
                      exclude_invalid_files=True).to_table(columns=columns).to_pandas()


def write_table(uri: str, frames: Iterable, schema) -> int:
    """Write pandas DataFrames (one per block) as one Parquet file `part-00000.parquet` under the
    folder `uri`, streamed block by block so memory holds one block; returns the rows written.
    `schema` is the pyarrow schema of every block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = filesystem(uri)
    fs.makedirs(path, exist_ok=True)
    rows = 0
    with fs.open(f"{path}/part-00000.parquet", "wb") as handle, pq.ParquetWriter(handle, schema) as writer:
        for frame in frames:
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            rows += len(frame)
    return rows


# --- raw partitions against the contract's schemas, before Spark reads them --------------------

def spark_type(arrow_type, physical_type: str | None = None) -> str:
    """The Spark SQL type (DDL name) a Parquet column of this Arrow type is read as, or a
    description of why Spark cannot read it as one. INT96 is Spark's legacy timestamp."""
    import pyarrow as pa

    if physical_type == "INT96":
        return "timestamp"
    if pa.types.is_timestamp(arrow_type):
        if arrow_type.unit == "ns":
            return "timestamp in nanoseconds (Spark reads micro- or milliseconds)"
        return "timestamp" if arrow_type.tz else "timestamp without time zone (timestamp_ntz)"
    names = {pa.string(): "string", pa.large_string(): "string", pa.int64(): "bigint", pa.int32(): "int",
             pa.int16(): "smallint", pa.int8(): "tinyint", pa.float64(): "double", pa.float32(): "float",
             pa.date32(): "date", pa.bool_(): "boolean"}
    return names.get(arrow_type, str(arrow_type))


def contract_ddl(schema) -> str:
    """The Arrow contract schema as Spark DDL ("style_id string, ..."): the schema raw data is read with."""
    return ", ".join(f"`{field.name}` {spark_type(field.type)}" for field in schema)


def schema_problems(columns: dict[str, str], contract) -> list[str]:
    """What keeps a file with `columns` ({name: Spark type}) from the Arrow `contract` schema:
    missing columns and columns of another type; other columns are ignored."""
    problems = []
    for field in contract:
        expected = spark_type(field.type)
        if field.name not in columns:
            problems.append(f"column {field.name} is missing")
        elif columns[field.name] != expected:
            problems.append(f"column {field.name} is {columns[field.name]}, the contract says {expected}")
    return problems


def partition_columns(uri: str) -> dict[str, str] | None:
    """{column: Spark type} of a partition's first data file (its Parquet footer only), or None
    when it holds no data file."""
    import pyarrow.parquet as pq

    fs, path = filesystem(uri)
    data_files = sorted(entry["name"] for entry in fs.ls(path, detail=True)
                        if entry["type"] == "file" and not entry["name"].rsplit("/", 1)[-1].startswith(("_", ".")))
    if not data_files:
        return None
    with fs.open(data_files[0], "rb") as handle:
        parquet = pq.ParquetFile(handle)
        arrow, physical = parquet.schema_arrow, parquet.schema
        # Flat schemas (the contract's) have one Parquet column per Arrow field, in order.
        flat = len(physical) == len(arrow)
        return {field.name: spark_type(field.type, physical.column(k).physical_type if flat else None)
                for k, field in enumerate(arrow)}
