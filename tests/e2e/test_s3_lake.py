"""The whole pipeline on an S3 lake: a real S3-compatible server (SeaweedFS, data on disk) on
127.0.0.1, changing only the lake URI and the connections.

`flashfeed import` and `flashfeed evaluate` run as a user runs them outside Airflow, with the AWS
environment variables (AWS_ENDPOINT_URL_S3 and the keys). Both DAGs run through Airflow with the
endpoint only in the `aws_default` connection: the S3 sensors (S3Hook), the Spark jobs (s3a,
endpoint and credentials handed over by the operator), the plain-Python tasks (manifests, feed
files) and DynamoDB all get it from there. Then the API serves a member's payload byte for byte
as the launch wrote it to the bucket.
"""
from __future__ import annotations

import json

import pytest

from flashfeed.core import lake
from flashfeed.local import s3 as local_s3
from flashfeed.serving import control, manifests, payloads, tables
from tests.conftest import config_with_table_prefix, free_port
from tests.e2e.helpers import FLASHFEED, dag_test, e2e_env, run

BUCKET, PREFIX = "flashfeed-lake", "s3e2e-"
LAKE = f"s3a://{BUCKET}/retail"


def _run(command: list[str], env: dict, timeout: int = 1200) -> str:
    return run(command, env, timeout).stdout


@pytest.fixture(scope="module")
def s3_world(tmp_path_factory, dynamodb_endpoint):
    home = tmp_path_factory.mktemp("s3-home")
    endpoint = local_s3.start(home, port=free_port(), buckets=(BUCKET,))
    base = {"FLASHFEED_LAKE": LAKE, "FLASHFEED_DYNAMODB_ENDPOINT": dynamodb_endpoint,
            "AIRFLOW__API__PORT": str(free_port()), "FLASHFEED_CONFIG": str(config_with_table_prefix(home, PREFIX)),
            "AWS_ACCESS_KEY_ID": local_s3.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": local_s3.SECRET_KEY}
    # Airflow: the endpoints in the connection only (AWS_ENDPOINT_URL_S3 is not set for it).
    airflow_env = e2e_env(home, **base, AIRFLOW_CONN_AWS_DEFAULT=json.dumps({
        "conn_type": "aws", "login": local_s3.ACCESS_KEY, "password": local_s3.SECRET_KEY,
        "extra": {"region_name": "us-east-1", "service_config": {"s3": {"endpoint_url": endpoint},
                                                                  "dynamodb": {"endpoint_url": dynamodb_endpoint}}}}))
    # The command line: the AWS environment variables.
    cli_env = {**airflow_env, "AWS_ENDPOINT_URL_S3": endpoint}
    try:
        yield {"home": home, "endpoint": endpoint, "airflow": airflow_env, "cli": cli_env}
    finally:
        local_s3.stop(home)


def test_import_both_dags_and_evaluate_on_an_s3_lake(s3_world, uci_csv, tmp_path):
    cli, airflow = s3_world["cli"], s3_world["airflow"]
    flashfeed = FLASHFEED
    imported = _run([flashfeed, "import", "--events", str(uci_csv["events"]), "--items", str(uci_csv["items"]),
                     "--lake", LAKE], cli)
    assert f"report: {LAKE}/raw/import_report.json" in imported
    daily, launch = [line.split("dags test ", 1)[1].split() for line in imported.splitlines()
                     if "flashfeed airflow dags test" in line]
    # Nothing of the lake is on this machine's disk, except inside the server's data folder.
    assert not (s3_world["home"] / "lake").exists()

    _run([flashfeed, "airflow-init"], airflow)
    for dag_id, logical in (daily, launch):
        dag_test(dag_id, logical, airflow, airflow=[flashfeed, "airflow"], timeout=1800, exact=True)

    # Served from DynamoDB, byte for byte what the launch wrote to the bucket.
    client = tables.dynamodb_client(airflow["FLASHFEED_DYNAMODB_ENDPOINT"])
    served = control.served_version(client, PREFIX)
    assert served is not None and served["manifest"].startswith(f"{LAKE}/feeds/dt=2011-12-10/launch=")
    lake.use_s3({"endpoint": s3_world["endpoint"], "region": "us-east-1", "access_key": local_s3.ACCESS_KEY,
                 "secret_key": local_s3.SECRET_KEY})
    try:
        manifest = manifests.read_manifest_uri(served["manifest"])
        feeds = served["manifest"].rsplit("/", 1)[0]
        with lake.open_file(f"{feeds}/{manifest['data_sets']['products_card']['files'][0]['path']}") as handle:
            first = handle.readline().decode("utf-8").rstrip("\n")
    finally:
        lake.use_s3(None)
    member = json.loads(first)["member_id"]
    assert payloads.get_item_payload(client, served["table"], member, "products#card") == first

    report = tmp_path / "metrics.json"
    _run([flashfeed, "evaluate", "--lake", LAKE, "--out", str(report), "--split", "stratified"], cli)
    metrics = json.loads(report.read_text())
    assert metrics["split"]["dt"] == "2011-12-10" and metrics["models"]["popularity"]["members"] > 100
