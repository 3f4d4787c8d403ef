"""A small local Spark session shared by the transform tests."""
from __future__ import annotations

import logging
import os
import sys
import uuid

import pytest

from flashfeed.core.config import REPO_ROOT

# py4j logs at INFO while the interpreter shuts down, after pytest closed its streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    # Python workers (mapInPandas) need this venv's numpy and pandas, as in the jobs (flashfeed.local.env).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    session = (
        SparkSession.builder.master("local[2]")
        .appName("flashfeed-unit-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def client(dynamodb_server):
    """A DynamoDB client on the session's test dynalite."""
    from flashfeed.serving import tables

    dynamodb_server.require_running()
    return tables.dynamodb_client(dynamodb_server.endpoint)


@pytest.fixture
def prefix() -> str:
    """Each test gets its own tables on the shared dynalite."""
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def serving_config(monkeypatch, tmp_path, dynamodb_endpoint, prefix):
    """Point config, endpoint and Airflow's aws_default at the test dynalite and prefix; call it with
    {"old text": "new text"} to change more of the config file (the call can repeat)."""
    from flashfeed.local.env import aws_connection
    from flashfeed.serving import tables

    monkeypatch.setenv(tables.ENDPOINT_ENV, dynamodb_endpoint)
    # The Airflow tasks' DynamoDB: connection aws_default (flashfeed_airflow.aws)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection(dynamodb_endpoint, "test", "test", "us-east-1"))

    def write(replacements: dict[str, str] | None = None):
        config_text = (REPO_ROOT / "include" / "flashfeed.yaml").read_text()
        for old, new in {"table_prefix: flashfeed-": f"table_prefix: {prefix}", **(replacements or {})}.items():
            assert old in config_text, f"{old!r} is not in include/flashfeed.yaml"
            config_text = config_text.replace(old, new)
        config_file = tmp_path / f"flashfeed-{uuid.uuid4().hex[:6]}.yaml"
        config_file.write_text(config_text)
        monkeypatch.setenv("FLASHFEED_CONFIG", str(config_file))
        return config_file

    write()
    return write


@pytest.fixture
def operators(monkeypatch, serving_config):
    """The serving operators module with env and config pointing at the test dynalite and prefix."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    from flashfeed_airflow import serving

    return serving
