"""The lake's plain-Python side on S3, against a real S3-compatible server (SeaweedFS on 127.0.0.1):
partitions written and sealed, footers checked, files read, and the `_SUCCESS` sensor with S3Hook
on an Airflow connection."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from flashfeed.core import lake
from flashfeed.core.config import REPO_ROOT
from flashfeed.demo.generator import SCHEMAS
from flashfeed.local import s3 as local_s3
from tests.conftest import free_port

BUCKET = "unit-lake"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    home = tmp_path_factory.mktemp("s3")
    endpoint = local_s3.start(home, port=free_port(), buckets=(BUCKET,))
    lake.use_s3({"endpoint": endpoint, "region": "us-east-1", "access_key": local_s3.ACCESS_KEY,
                 "secret_key": local_s3.SECRET_KEY})
    try:
        yield endpoint
    finally:
        lake.use_s3(None)
        local_s3.stop(home)


def _returns(kind: str) -> pa.Table:
    return pa.Table.from_pydict({"member_id": ["m1"], "style_id": ["s1"], "kind": [kind],
                                 "occurred_at": [pa.scalar(0, pa.timestamp("us", "UTC")).as_py()]},
                                schema=SCHEMAS["returns"])


def test_a_partition_is_written_sealed_and_rewritten_whole_on_s3(s3):
    partition = lake.raw("returns", "2026-11-21", f"s3a://{BUCKET}/lake")
    lake.write_partition(partition, _returns("return"))
    fs, path = lake.filesystem(partition)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(path, detail=False)) == [lake.SUCCESS, lake.PART_FILE]
    assert lake.read_table(partition)["kind"].tolist() == ["return"]
    assert lake.schema_problems(lake.partition_columns(partition), SCHEMAS["returns"]) == []

    lake.write_partition(partition, _returns("cancel"))              # a re-run replaces it
    assert lake.read_table(partition)["kind"].tolist() == ["cancel"]
    lake.write_bytes(f"s3://{BUCKET}/lake/x/manifest.json", b'{"version": "v"}')   # s3:// is s3a:// too
    assert lake.read_json(f"s3a://{BUCKET}/lake/x/manifest.json") == {"version": "v"}


def test_settings_come_from_the_aws_environment_unless_set(monkeypatch):
    monkeypatch.setattr(lake, "_s3", None)                 # nothing set, no Airflow connection
    monkeypatch.setattr(lake, "_s3_provider", None)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    settings = lake.s3_settings()
    assert lake.s3a_hadoop_settings(settings) == {
        "fs.s3a.endpoint": "http://127.0.0.1:9000", "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false", "fs.s3a.endpoint.region": "eu-west-1"}
    assert lake.s3_environment(settings) == {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1",
                                             "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}


def test_the_success_sensor_uses_s3hook_on_its_connection(s3, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    monkeypatch.setenv("AIRFLOW_CONN_LAKE_S3", json.dumps({
        "conn_type": "aws", "login": local_s3.ACCESS_KEY, "password": local_s3.SECRET_KEY,
        "extra": {"region_name": "us-east-1", "service_config": {"s3": {"endpoint_url": s3}}}}))
    from flashfeed_airflow.sensors import SuccessMarkerSensor

    partition = lake.raw("returns", "2026-11-22", f"s3a://{BUCKET}/lake")
    sensor = SuccessMarkerSensor(task_id="wait", partition=partition, producer="the export", aws_conn_id="lake_s3")
    assert sensor.poke({}) is False
    lake.write_partition(partition, _returns("return"))
    assert sensor.poke({}) is True
