"""The read API's DynamoDB client: GetItem and BatchGetItem straight over DynamoDB's JSON protocol.

A boto3 call spends about 1.3 ms of CPU on this machine in botocore's model-driven
serialisation, event hooks and response parsing, more than the rest of a read request
(BENCHMARKS.md, "Read API under load"). DynamoDB's wire format is already the low-level
client's shape (`{"Item": {"payload": {"S": …}}}`), so this client posts the request on a
keep-alive connection per thread, signs it with botocore's own SigV4 signer and credential
chain, checks the response's CRC32 and returns the decoded JSON: about a quarter of the CPU.

It duck-types the three boto3 client methods the read path calls (`get_item`,
`batch_get_item`, `describe_table`), with boto3's errors (`ClientError` for an error response,
`EndpointConnectionError` when the endpoint cannot be reached), so `payloads`' read
functions and the API's 503 handling work on either client. The loader and every Airflow
task keep boto3.
"""
from __future__ import annotations

import http.client
import json
import os
import threading
import time
import zlib
from typing import Any
from urllib.parse import urlparse

API_VERSION = "DynamoDB_20120810"
CONTENT_TYPE = "application/x-amz-json-1.0"
# Retried once, after RETRY_PAUSE_SECONDS: a read request has a 40 ms budget, so a second
# failure is the caller's 503 (the client retries), not a long backoff here.
RETRYABLE_CODES = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
                   "InternalServerError", "ServiceUnavailable"}
MAX_ATTEMPTS = 2
RETRY_PAUSE_SECONDS = 0.01


class DynamoDBReader:
    """GetItem / BatchGetItem / DescribeTable on `endpoint` (default AWS's for `region`)."""

    def __init__(self, region: str, endpoint: str | None = None, credentials=None, timeout: float = 5.0):
        from botocore.session import get_session

        self.endpoint = endpoint or f"https://dynamodb.{region}.amazonaws.com"
        url = urlparse(self.endpoint)
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname, url.port
        self._region, self._timeout = region, timeout
        # botocore's chain (environment, config files, instance or container roles), refreshed
        # by botocore when temporary; resolved once here, frozen per request.
        self._credentials = credentials or get_session().get_credentials()
        if self._credentials is None:
            raise ValueError(f"no AWS credentials for the DynamoDB endpoint {self.endpoint}: set AWS_ACCESS_KEY_ID "
                             "and AWS_SECRET_ACCESS_KEY, a profile, or an instance role")
        self._local = threading.local()

    # --- the boto3 methods the read path uses ----------------------------------------------
    def get_item(self, **params: Any) -> dict:
        return self._call("GetItem", params)

    def batch_get_item(self, **params: Any) -> dict:
        return self._call("BatchGetItem", params)

    def describe_table(self, **params: Any) -> dict:
        return self._call("DescribeTable", params)

    # --- the protocol ------------------------------------------------------------------------
    def _call(self, operation: str, params: dict) -> dict:
        from botocore.exceptions import ClientError, EndpointConnectionError

        body = json.dumps(params, separators=(",", ":")).encode("utf-8")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                status, data, crc = self._post(operation, body)
            except (OSError, http.client.HTTPException) as error:
                self._drop_connection()
                if attempt < MAX_ATTEMPTS:       # a keep-alive connection the server closed: once more
                    continue
                raise EndpointConnectionError(endpoint_url=self.endpoint, error=error) from error
            if crc is not None and int(crc) != zlib.crc32(data):
                self._drop_connection()
                if attempt < MAX_ATTEMPTS:
                    continue
                raise ClientError({"Error": {"Code": "CRC32CheckFailed",
                                             "Message": "the response's CRC32 does not match its body"}}, operation)
            decoded = json.loads(data) if data else {}
            if status == 200:
                return decoded
            code = str(decoded.get("__type", f"HTTP{status}")).rsplit("#", 1)[-1]
            if (code in RETRYABLE_CODES or status >= 500) and attempt < MAX_ATTEMPTS:
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            message = decoded.get("message") or decoded.get("Message") or f"HTTP {status}"
            raise ClientError({"Error": {"Code": code, "Message": message},
                               "ResponseMetadata": {"HTTPStatusCode": status}}, operation)
        raise AssertionError("unreachable")

    def _post(self, operation: str, body: bytes) -> tuple[int, bytes, str | None]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="POST", url=self.endpoint + "/", data=body, headers={
            "Content-Type": CONTENT_TYPE, "X-Amz-Target": f"{API_VERSION}.{operation}"})
        SigV4Auth(self._credentials.get_frozen_credentials(), "dynamodb", self._region).add_auth(request)
        connection = self._connection()
        connection.request("POST", "/", body=body, headers=dict(request.headers.items()))
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("x-amz-crc32")

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None or getattr(self._local, "pid", None) != os.getpid():
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=self._timeout)
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None


def from_settings(endpoint: str | None = None) -> DynamoDBReader:
    """The reader for `endpoint`, else FLASHFEED_DYNAMODB_ENDPOINT, else AWS in config
    `serving.region`; like `tables.dynamodb_client`, a local endpoint without AWS
    credentials in the environment gets the dummy ones dynalite accepts."""
    from botocore.credentials import Credentials

    from flashfeed.serving import tables

    endpoint = endpoint or os.environ.get(tables.ENDPOINT_ENV) or None
    dummy = tables.local_credentials(endpoint)
    credentials = dummy and Credentials(dummy["aws_access_key_id"], dummy["aws_secret_access_key"])
    return DynamoDBReader(tables.serving_config()["region"], endpoint, credentials)
