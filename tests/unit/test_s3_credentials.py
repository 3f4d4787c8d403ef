"""Credentials that refresh (issue 24, part 5): a task's S3 client and a Spark job's environment
never hold a frozen temporary token.

A tiny S3 endpoint on 127.0.0.1 records who signed each request (the access key of the
`Authorization` header and the `X-Amz-Security-Token`), so the test sees what pyarrow's S3
client, the one the lake's plain-Python tasks use, really sends.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flashfeed.core import lake
from flashfeed.core.config import REPO_ROOT

BUCKET, KEY = "lake", "feeds/manifest.json"
BODY = json.dumps({"version": "20261122t1100"}).encode()
TOKEN_LIFETIME = timedelta(seconds=30)         # well inside botocore's refresh window: refreshed at every use
SIGNER = re.compile(r"Credential=([^/]+)/")


class _S3Endpoint(BaseHTTPRequestHandler):
    """HEAD and (ranged) GET of one object; records (method, access key, token) per request."""
    seen: list[tuple[str, str | None, str | None]]

    def _record(self) -> None:
        signer = SIGNER.search(self.headers.get("Authorization", ""))
        self.seen.append((self.command, signer and signer.group(1), self.headers.get("X-Amz-Security-Token")))

    def _headers(self, status: int, length: int, extra: dict | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(length), "Content-Type": "application/json", "ETag": '"e"',
                            "Last-Modified": "Sun, 22 Nov 2026 10:00:00 GMT", **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's names)
        self._record()
        self._headers(200, len(BODY))

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        ranged = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged:
            first, last = int(ranged.group(1)), min(int(ranged.group(2) or len(BODY) - 1), len(BODY) - 1)
            part = BODY[first:last + 1]
            self._headers(206, len(part), {"Content-Range": f"bytes {first}-{last}/{len(BODY)}"})
            self.wfile.write(part)
        else:
            self._headers(200, len(BODY))
            self.wfile.write(BODY)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def s3_endpoint():
    handler = type("Handler", (_S3Endpoint,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()
        lake.use_s3(None)


def refreshing_credentials():
    """botocore's RefreshableCredentials whose source hands out a new key and token each time,
    each valid for TOKEN_LIFETIME: an instance or container role, sped up."""
    from botocore.credentials import RefreshableCredentials

    issued = itertools.count(1)

    def fetch() -> dict:
        number = next(issued)
        expiry = datetime.now(timezone.utc) + TOKEN_LIFETIME
        return {"access_key": f"ASIAROLE{number}", "secret_key": f"secret-{number}", "token": f"token-{number}",
                "expiry_time": expiry.isoformat()}

    return RefreshableCredentials.create_from_metadata(fetch(), fetch, "test-role")


@pytest.fixture
def airflow_connection(monkeypatch, s3_endpoint):
    """Set connection `lake_conn` (with or without static keys) on the test endpoint; returns the
    plugin's aws module."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))
    from flashfeed_airflow import aws

    def define(**keys) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_LAKE_CONN", json.dumps({
            "conn_type": "aws", **keys,
            "extra": {"region_name": "us-east-1", "service_config": {"s3": {"endpoint_url": s3_endpoint[0]}}}}))

    return aws, define


def _role_session(monkeypatch, credentials) -> None:
    """The hook's session for a connection without keys signs with `credentials` (what AWS's chain
    finds on an instance or in a container)."""
    import boto3
    import botocore.session
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    def role_session(self, region_name=None, deferrable=False):
        core = botocore.session.get_session()
        core._credentials = credentials        # what the provider chain would have resolved
        return boto3.session.Session(botocore_session=core, region_name=region_name or "us-east-1")

    monkeypatch.setattr(AwsBaseHook, "get_session", role_session)


def test_the_task_s3_client_signs_later_requests_with_the_refreshed_token(s3_endpoint, airflow_connection,
                                                                          monkeypatch):
    aws, define = airflow_connection
    define()                                                     # no keys: an instance or container role
    _role_session(monkeypatch, refreshing_credentials())
    settings = aws.s3_settings("lake_conn")
    assert (settings["access_key"], settings["secret_key"], settings["session_token"]) == (None, None, None)
    lake.use_s3(settings)

    seen = s3_endpoint[1]
    uri = f"s3a://{BUCKET}/{KEY}"
    signers = []
    for _ in range(3):                                           # three lake operations, one after another
        before = len(seen)
        assert lake.read_json(uri) == json.loads(BODY)
        requests = seen[before:]
        assert requests and all(token is not None for _, _, token in requests)
        assert len({(key, token) for _, key, token in requests}) == 1, requests   # one operation, one signer
        signers.append(requests[0][1:])
    tokens = [token for _, token in signers]
    assert len(set(tokens)) == 3, f"a frozen token was reused: {signers}"
    numbers = [int(token.rsplit("-", 1)[1]) for token in tokens]
    assert numbers == sorted(numbers) and all(key == f"ASIAROLE{n}" for (key, _), n in zip(signers, numbers))


def test_a_spark_job_gets_no_frozen_token_without_static_keys(s3_endpoint, airflow_connection, monkeypatch):
    aws, define = airflow_connection
    define()
    _role_session(monkeypatch, refreshing_credentials())
    from flashfeed_airflow.spark import LakeSparkSubmitOperator

    monkeypatch.setenv("FLASHFEED_LAKE", f"s3a://{BUCKET}/retail")
    operator = LakeSparkSubmitOperator(task_id="job", application="job.py", aws_conn_id="lake_conn")
    assert operator.lake_environment() == {"AWS_ENDPOINT_URL_S3": s3_endpoint[0], "AWS_REGION": "us-east-1"}
    # s3a then finds and refreshes credentials itself: the SDK v1 chain (hadoop-aws 3.3.1, SDK 1.11.901).
    conf = (REPO_ROOT / "include" / "spark-conf" / "spark-defaults.conf").read_text()
    providers = re.search(r"^spark\.hadoop\.fs\.s3a\.aws\.credentials\.provider\s+(\S+)$", conf, re.M).group(1)
    assert providers == "com.amazonaws.auth.DefaultAWSCredentialsProviderChain"


def test_static_keys_of_a_connection_still_reach_spark_and_the_task_client(s3_endpoint, airflow_connection,
                                                                           monkeypatch):
    aws, define = airflow_connection
    define(login="flashfeed-local", password="local-secret")    # a local S3-compatible store
    from flashfeed_airflow.spark import LakeSparkSubmitOperator

    monkeypatch.setenv("FLASHFEED_LAKE", f"s3a://{BUCKET}/retail")
    operator = LakeSparkSubmitOperator(task_id="job", application="job.py", aws_conn_id="lake_conn")
    assert operator.lake_environment() == {"AWS_ENDPOINT_URL_S3": s3_endpoint[0], "AWS_REGION": "us-east-1",
                                           "AWS_ACCESS_KEY_ID": "flashfeed-local",
                                           "AWS_SECRET_ACCESS_KEY": "local-secret"}
    settings = aws.s3_settings("lake_conn")
    assert settings["credentials"] is None
    lake.use_s3(settings)
    assert lake.read_json(f"s3://{BUCKET}/{KEY}") == json.loads(BODY)
    assert {(key, token) for _, key, token in s3_endpoint[1]} == {("flashfeed-local", None)}


def test_a_role_the_connection_assumes_is_named_in_the_spark_log_line(s3_endpoint, airflow_connection,
                                                                     monkeypatch):
    aws, _ = airflow_connection
    settings = {"access_key": None, "credentials": object(), "role_arn": "arn:aws:iam::1:role/lake"}
    line = aws.describe_s3_credentials(settings, "lake_conn")
    assert "assumes role arn:aws:iam::1:role/lake" in line and "must reach the lake" in line
    assert "static keys" in aws.describe_s3_credentials({"access_key": "k"}, "lake_conn")
