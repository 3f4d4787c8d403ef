"""The read API's DynamoDB client: GetItem and BatchGetItem straight over DynamoDB's JSON protocol,
each call bounded by the request's deadline.

A boto3 call spends about 1.3 ms of CPU on this machine in botocore's model-driven
serialisation, event hooks and response parsing, more than the rest of a read request
(BENCHMARKS.md, "Read API under load"). DynamoDB's wire format is already the low-level
client's shape (`{"Item": {"payload": {"S": …}}}`), so this client posts the request on a
keep-alive connection per thread, signs it with botocore's own SigV4 signer and credential
chain (refreshed by botocore when temporary), checks the response's CRC32 and returns the
decoded JSON: about a quarter of the CPU.

**Deadlines.** The API opens a `deadline(seconds)` scope per request; every call made inside it
(retries and their pauses included) ends by then: the socket's timeout is what is left of the
budget, and a call with no budget left is not sent. Past the deadline the call raises
`ReadDeadlineExceeded` (a `ServingStoreError`, so the API answers 503 at once) and the
connection is dropped: its late answer must never be read as the next call's. Outside a scope a
call has `timeout` seconds. A failed call is retried at most once (`MAX_ATTEMPTS`), only while
the budget lasts: a throttled or 5xx answer after `RETRY_PAUSE_SECONDS`, a keep-alive connection
the server closed at once; a timeout is never retried (the budget is spent).

**Where it connects**, the way boto3 would (`resolve_endpoint`): an explicit endpoint, else
FLASHFEED_DYNAMODB_ENDPOINT, else botocore's own resolution (`AWS_ENDPOINT_URL_DYNAMODB`,
`AWS_ENDPOINT_URL`, a profile's `endpoint_url`, else the partition's endpoint of the region,
e.g. `dynamodb.cn-north-1.amazonaws.com.cn`). Region: AWS_REGION, AWS_DEFAULT_REGION, the
profile's, else config `serving.region`. Proxies: HTTP(S)_PROXY and NO_PROXY (HTTPS through a
CONNECT tunnel). CA bundle: AWS_CA_BUNDLE or the profile's `ca_bundle`, else REQUESTS_CA_BUNDLE,
else botocore's (certifi).

It duck-types the two boto3 client methods the read path calls (`get_item`, `batch_get_item`),
with boto3's errors (`ClientError` for an error response, whatever its body, JSON or a proxy's
HTML page; `EndpointConnectionError` when the endpoint cannot be reached), so `payloads`' read
functions and the API's 503 handling work on either client. The loader and every Airflow task
keep boto3.
"""
from __future__ import annotations

import base64
import contextvars
import http.client
import json
import os
import socket
import ssl
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

from flashfeed.serving.errors import ServingStoreError

API_VERSION = "DynamoDB_20120810"
CONTENT_TYPE = "application/x-amz-json-1.0"
RETRYABLE_CODES = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
                   "InternalServerError", "ServiceUnavailable"}
MAX_ATTEMPTS = 2                     # the first try and at most one retry, within the budget
RETRY_PAUSE_SECONDS = 0.01
MIN_ATTEMPT_SECONDS = 0.002          # less budget than this left: the call is not worth sending
DEFAULT_TIMEOUT_SECONDS = 5.0        # a call outside any deadline scope (tools, tests)
ERROR_BODY_CHARS = 200               # of a non-JSON error body, quoted in the error


class ReadDeadlineExceeded(ServingStoreError):
    """The request's read budget ran out before DynamoDB answered."""


class ReaderSetupError(ServingStoreError):
    """The reader cannot be made: no credentials, a bad endpoint or CA bundle."""


# --- the request's deadline ------------------------------------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("flashfeed_read_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Every reader call in this scope (this thread or task) ends within `seconds` from now;
    yields the deadline (time.monotonic())."""
    at = time.monotonic() + seconds
    token = _deadline.set(at)
    try:
        yield at
    finally:
        _deadline.reset(token)


def remaining_seconds() -> float | None:
    """Seconds left in the current deadline scope (may be <= 0), None outside one."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


# --- where to connect --------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    url: str
    region: str
    proxy: str | None           # proxy URL for this endpoint (NO_PROXY applied), or None
    ca_bundle: str | None       # PEM file for TLS, or None for botocore's default


def resolve_endpoint(endpoint: str | None = None, region: str | None = None, session=None) -> Endpoint:
    """Endpoint, region, proxy and CA bundle of the reader, resolved the way boto3 resolves them."""
    from botocore.session import get_session
    from botocore.utils import get_environ_proxies

    from flashfeed.serving import tables

    session = session or get_session()
    # AWS_REGION: what ECS, EKS and Lambda set (the other AWS SDKs read it; botocore reads only the next two).
    region = (region or os.environ.get("AWS_REGION") or session.get_config_variable("region")
              or tables.serving_config()["region"])
    explicit = endpoint or os.environ.get(tables.ENDPOINT_ENV) or None
    # botocore's resolver knows AWS_ENDPOINT_URL_DYNAMODB, profiles and every partition's hosts.
    url = session.create_client("dynamodb", region_name=region, endpoint_url=explicit,
                                aws_access_key_id="resolve-only", aws_secret_access_key="resolve-only"
                                ).meta.endpoint_url
    scheme = urlparse(url).scheme
    proxy = get_environ_proxies(url).get(scheme)
    ca_bundle = session.get_config_variable("ca_bundle") or os.environ.get("REQUESTS_CA_BUNDLE") or None
    return Endpoint(url=url, region=region, proxy=proxy, ca_bundle=ca_bundle)


class DynamoDBReader:
    """GetItem / BatchGetItem on `endpoint` (an `Endpoint`, or a URL; default: AWS's for `region`)."""

    def __init__(self, region: str, endpoint: str | Endpoint | None = None, credentials=None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS):
        from botocore.session import get_session

        if not isinstance(endpoint, Endpoint):
            endpoint = Endpoint(url=endpoint or f"https://dynamodb.{region}.amazonaws.com", region=region,
                                proxy=None, ca_bundle=None)
        self.endpoint, self._region, self._timeout = endpoint.url, endpoint.region, timeout
        url = urlparse(endpoint.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ReaderSetupError(f"DynamoDB endpoint {endpoint.url!r} is not an http(s) URL")
        self._https, self._host = url.scheme == "https", url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._proxy = urlparse(endpoint.proxy) if endpoint.proxy else None
        self._ssl = self._ssl_context(endpoint.ca_bundle) if self._https else None
        # botocore's chain (environment, config files, instance or container roles): a
        # temporary one refreshes itself; frozen per request only, to sign it.
        self._credentials = credentials or get_session().get_credentials()
        if self._credentials is None:
            raise ReaderSetupError(
                f"no AWS credentials for the DynamoDB endpoint {self.endpoint}: give the API process an IAM role "
                "(instance profile, task or pod role), a profile, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        self._local = threading.local()

    @staticmethod
    def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
        if ca_bundle is None:
            from botocore.httpsession import get_cert_path

            ca_bundle = get_cert_path(True)
        try:
            return ssl.create_default_context(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as error:
            raise ReaderSetupError(f"CA bundle {ca_bundle!r} cannot be read ({error}); fix AWS_CA_BUNDLE, the "
                                   "profile's ca_bundle or REQUESTS_CA_BUNDLE") from None

    # --- the boto3 methods the read path uses ----------------------------------------------
    def get_item(self, **params: Any) -> dict:
        return self._call("GetItem", params)

    def batch_get_item(self, **params: Any) -> dict:
        return self._call("BatchGetItem", params)

    # --- the protocol ------------------------------------------------------------------------
    def _budget(self, operation: str) -> float:
        """Seconds this attempt may take: what the deadline leaves, else the reader's timeout."""
        left = remaining_seconds()
        if left is None:
            return self._timeout
        if left < MIN_ATTEMPT_SECONDS:
            raise ReadDeadlineExceeded(f"the request's read budget ran out before {operation} on {self.endpoint} "
                                       "answered")
        return left

    def _call(self, operation: str, params: dict) -> dict:
        from botocore.exceptions import ClientError, EndpointConnectionError

        body = json.dumps(params, separators=(",", ":")).encode("utf-8")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            timeout = self._budget(operation)
            try:
                status, data, crc = self._post(operation, body, timeout)
            except (TimeoutError, socket.timeout):
                self._drop_connection()          # its late answer must not be read by the next call
                if remaining_seconds() is None:
                    raise ReadDeadlineExceeded(f"{operation} on {self.endpoint} did not answer within "
                                               f"{timeout:.1f} s") from None
                raise ReadDeadlineExceeded(f"{operation} on {self.endpoint} did not answer within the request's "
                                           "read budget") from None
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
            decoded = _json_or_none(data)
            if status == 200 and decoded is not None:
                return decoded
            code, message = _error_of(status, decoded, data)
            if (code in RETRYABLE_CODES or status >= 500) and attempt < MAX_ATTEMPTS:
                left = remaining_seconds()
                if left is None or left > RETRY_PAUSE_SECONDS + MIN_ATTEMPT_SECONDS:
                    time.sleep(RETRY_PAUSE_SECONDS)
                    continue
            raise ClientError({"Error": {"Code": code, "Message": message},
                               "ResponseMetadata": {"HTTPStatusCode": status}}, operation)
        raise AssertionError("unreachable")

    def _post(self, operation: str, body: bytes, timeout: float) -> tuple[int, bytes, str | None]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="POST", url=self.endpoint + "/", data=body, headers={
            "Content-Type": CONTENT_TYPE, "X-Amz-Target": f"{API_VERSION}.{operation}"})
        SigV4Auth(self._credentials.get_frozen_credentials(), "dynamodb", self._region).add_auth(request)
        headers = dict(request.headers.items())
        connection = self._connection(timeout)
        target = "/"
        if self._proxy is not None and not self._https:    # a plain-HTTP proxy takes the absolute URL
            target = self.endpoint.rstrip("/") + "/"
            headers["Host"] = f"{self._host}:{self._port}"
            headers.update(self._proxy_headers())
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("x-amz-crc32")

    def _proxy_headers(self) -> dict[str, str]:
        if self._proxy is None or not self._proxy.username:
            return {}
        user_password = f"{unquote(self._proxy.username)}:{unquote(self._proxy.password or '')}"
        return {"Proxy-Authorization": "Basic " + base64.b64encode(user_password.encode()).decode("ascii")}

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        """This thread's keep-alive connection, its timeout set to `timeout` for the next call."""
        connection = getattr(self._local, "connection", None)
        if connection is None or getattr(self._local, "pid", None) != os.getpid():
            connection = self._new_connection(timeout)
            self._local.connection, self._local.pid = connection, os.getpid()
        connection.timeout = timeout                       # a (re)connect's timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)            # each send and receive on the open socket
        return connection

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._proxy is None:
            if self._https:
                return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
            return http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        proxy_port = self._proxy.port or (443 if self._proxy.scheme == "https" else 80)
        if not self._https:
            return http.client.HTTPConnection(self._proxy.hostname, proxy_port, timeout=timeout)
        connection = http.client.HTTPSConnection(self._proxy.hostname, proxy_port, timeout=timeout,
                                                 context=self._ssl)
        connection.set_tunnel(self._host, self._port, headers=self._proxy_headers())
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None


def _json_or_none(data: bytes) -> Any:
    if not data:
        return {}
    try:
        return json.loads(data)
    except ValueError:          # a proxy's or load balancer's HTML page, a truncated body
        return None


def _error_of(status: int, decoded: Any, data: bytes) -> tuple[str, str]:
    """(code, message) of an error answer, JSON (DynamoDB's `__type`) or not (quoted)."""
    if isinstance(decoded, dict) and decoded:
        code = str(decoded.get("__type", f"HTTP{status}")).rsplit("#", 1)[-1]
        return code, str(decoded.get("message") or decoded.get("Message") or f"HTTP {status}")
    text = data[:ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
    code = f"HTTP{status}" if status != 200 else "InvalidResponse"
    return code, f"HTTP {status} with a body that is not DynamoDB's JSON: {text!r}"


def from_settings(endpoint: str | None = None) -> DynamoDBReader:
    """The reader for `endpoint`, else as `resolve_endpoint` finds it. Like `tables.dynamodb_client`,
    a local endpoint without AWS credentials in the environment gets the dummy ones dynalite accepts."""
    from botocore.credentials import Credentials

    from flashfeed.serving import tables

    resolved = resolve_endpoint(endpoint)
    dummy = tables.local_credentials(resolved.url)
    credentials = dummy and Credentials(dummy["aws_access_key_id"], dummy["aws_secret_access_key"])
    return DynamoDBReader(resolved.region, resolved, credentials)
