"""The read API's own DynamoDB client: the same answers as boto3 on dynalite, signed requests,
and its retries and errors against a scripted server on 127.0.0.1 (fault injection)."""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError

from flashfeed.serving import dynamodb_reader, payloads, tables
from flashfeed.serving.errors import ServingStoreError

pytestmark = pytest.mark.serial   # upper bounds on calls under a deadline: not beside other tests


@pytest.fixture(scope="module")
def table_with_items(dynamodb_endpoint):
    client = tables.dynamodb_client(dynamodb_endpoint)
    table = f"reader{uuid.uuid4().hex[:8]}-feeds"
    tables.ensure_feeds_table(client, table)
    for member, feed, payload in (("m-1", "brands#card", '{"a": "caf\\u00e9 é"}'), ("m-2", "brands#card", "{}")):
        client.put_item(TableName=table, Item={"member_id": {"S": member}, "feed": {"S": feed},
                                               "payload": {"S": payload}})
    return client, table


def test_the_reader_answers_like_boto3_on_dynalite(dynamodb_endpoint, table_with_items):
    client, table = table_with_items
    reader = dynamodb_reader.from_settings(dynamodb_endpoint)
    for member in ("m-1", "m-404"):
        request = {"TableName": table, "Key": {"member_id": {"S": member}, "feed": {"S": "brands#card"}},
                   "ProjectionExpression": "#p", "ExpressionAttributeNames": {"#p": "payload"}}
        mine, theirs = reader.get_item(**request), client.get_item(**request)
        theirs.pop("ResponseMetadata")
        assert mine == theirs
    assert payloads.get_item_payload(reader, table, "m-1", "brands#card") == '{"a": "caf\\u00e9 é"}'
    assert payloads.get_payloads(reader, table, [("m-1", "brands#card"), ("m-2", "brands#card"),
                                              ("m-3", "brands#card")]) == {"m-1": '{"a": "caf\\u00e9 é"}', "m-2": "{}"}


class Script:
    """A DynamoDB stand-in on 127.0.0.1 answering from a list: (status, body, crc override, close);
    a body of bytes is sent as it is (not JSON)."""

    def __init__(self, answers):
        self.answers, self.requests = list(answers), []
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"                  # keep-alive, like DynamoDB

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                script.requests.append((dict(self.headers), json.loads(body)))
                status, answer, crc, close = script.answers.pop(0)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amz-crc32", str(zlib.crc32(data) if crc is None else crc))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reader(self):
        return dynamodb_reader.DynamoDBReader("us-east-1", self.endpoint, Credentials("AKIDTEST", "secret"))

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


ITEM = {"Item": {"payload": {"S": "{}"}}}
THROTTLED = {"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
             "message": "The level of configured provisioned throughput for the table was exceeded."}


@pytest.fixture
def script():
    made = []

    def make(*answers):
        made.append(Script(answers))
        return made[-1]

    yield make
    for server in made:
        server.stop()


def test_requests_are_signed_and_name_the_operation(script):
    server = script((200, ITEM, None, False))
    assert server.reader().get_item(TableName="t", Key={}) == ITEM
    headers, body = server.requests[0]
    assert headers["X-Amz-Target"] == "DynamoDB_20120810.GetItem"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert "/us-east-1/dynamodb/aws4_request" in headers["Authorization"]
    assert body == {"TableName": "t", "Key": {}}


def test_a_throttled_read_is_retried_once_then_raised_as_boto3_would(script):
    server = script((400, THROTTLED, None, False), (200, ITEM, None, False))
    assert server.reader().get_item(TableName="t", Key={}) == ITEM
    assert len(server.requests) == 2
    server = script((400, THROTTLED, None, False), (400, THROTTLED, None, False))
    with pytest.raises(ClientError) as error:
        server.reader().get_item(TableName="t", Key={})
    assert error.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert len(server.requests) == 2


def test_a_client_error_is_not_retried(script):
    server = script((400, {"__type": "com.amazon.coral.validate#ValidationException", "message": "bad key"},
                     None, False))
    with pytest.raises(ClientError, match="ValidationException.*bad key"):
        server.reader().get_item(TableName="t", Key={})
    assert len(server.requests) == 1


def test_a_corrupt_response_is_retried_and_then_refused(script):
    server = script((200, ITEM, 1, False), (200, ITEM, None, False))
    assert server.reader().get_item(TableName="t", Key={}) == ITEM
    server = script((200, ITEM, 1, False), (200, ITEM, 1, False))
    with pytest.raises(ClientError, match="CRC32CheckFailed"):
        server.reader().get_item(TableName="t", Key={})


def test_a_connection_the_server_closed_is_reopened(script):
    server = script((200, ITEM, None, True), (200, ITEM, None, False))
    reader = server.reader()
    assert reader.get_item(TableName="t", Key={}) == ITEM
    assert reader.get_item(TableName="t", Key={}) == ITEM       # the first connection is gone
    assert len(server.requests) == 2


def test_an_unreachable_endpoint_is_an_endpoint_connection_error(script):
    server = script()
    reader = server.reader()
    server.stop()
    with pytest.raises(EndpointConnectionError):
        reader.get_item(TableName="t", Key={})


# --- the request's deadline ----------------------------------------------------------------------

class Silent:
    """A server on 127.0.0.1 that accepts connections and reads requests but never answers (a
    stalled DynamoDB node or a lost network path)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted: list[socket.socket] = []
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self):
        self.sock.close()
        for connection in self.accepted:
            connection.close()


def test_a_stalled_store_costs_at_most_the_budget_and_the_late_connection_is_dropped():
    silent = Silent()
    try:
        reader = dynamodb_reader.DynamoDBReader("us-east-1", silent.endpoint, Credentials("AKIDTEST", "secret"))
        started = time.monotonic()
        with dynamodb_reader.deadline(0.1), pytest.raises(dynamodb_reader.ReadDeadlineExceeded, match="budget"):
            reader.get_item(TableName="t", Key={})
        assert 0.09 <= time.monotonic() - started < 1.0          # well under the 5 s default: the budget bounds it
        assert len(silent.accepted) == 1
        with dynamodb_reader.deadline(0.05), pytest.raises(dynamodb_reader.ReadDeadlineExceeded):
            reader.get_item(TableName="t", Key={})
        assert len(silent.accepted) == 2                          # a new connection: the old one may answer late
        with dynamodb_reader.deadline(0.0), pytest.raises(dynamodb_reader.ReadDeadlineExceeded, match="ran out"):
            reader.get_item(TableName="t", Key={})                # no budget left: nothing is sent
        assert len(silent.accepted) == 2
    finally:
        silent.close()


def test_no_retry_when_the_budget_cannot_cover_it(script, monkeypatch):
    # a pause longer than the whole budget, and a budget ample for the first call on a busy CI machine
    monkeypatch.setattr(dynamodb_reader, "RETRY_PAUSE_SECONDS", 5.0)
    server = script((400, THROTTLED, None, False), (200, ITEM, None, False))
    with dynamodb_reader.deadline(2.0), pytest.raises(ClientError):
        server.reader().get_item(TableName="t", Key={})
    assert len(server.requests) == 1


def test_a_non_json_error_body_is_a_client_error_quoting_it(script):
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    server = script((502, page, None, False), (502, page, None, False))
    with pytest.raises(ClientError) as error:
        server.reader().get_item(TableName="t", Key={})
    assert error.value.response["Error"]["Code"] == "HTTP502"
    assert "502 Bad Gateway" in error.value.response["Error"]["Message"]
    assert len(server.requests) == 2                               # a 5xx is retried once
    server = script((200, b"<html>captive portal</html>", None, False))
    with pytest.raises(ClientError, match="InvalidResponse"):
        server.reader().get_item(TableName="t", Key={})


def test_no_credentials_is_a_serving_store_error(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr("botocore.session.Session.get_credentials", lambda self: None)
    with pytest.raises(ServingStoreError, match="no AWS credentials"):
        dynamodb_reader.DynamoDBReader("us-east-1", "https://dynamodb.us-east-1.amazonaws.com")


# --- endpoint, region, proxy and CA bundle, the way boto3 finds them ----------------------------

@pytest.fixture
def aws_environment(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_PROFILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy",
                 tables.ENDPOINT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    return monkeypatch


def test_endpoint_and_region_resolve_as_boto3_does(aws_environment):
    env = aws_environment
    default = dynamodb_reader.resolve_endpoint()
    assert (default.url, default.region) == ("https://dynamodb.us-east-1.amazonaws.com", "us-east-1")   # config
    env.setenv("AWS_REGION", "cn-north-1")                       # another partition, another domain
    assert dynamodb_reader.resolve_endpoint().url == "https://dynamodb.cn-north-1.amazonaws.com.cn"
    env.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")
    assert dynamodb_reader.resolve_endpoint().url == "http://127.0.0.1:9"
    env.setenv(tables.ENDPOINT_ENV, "http://127.0.0.1:8")        # the project's own setting wins
    assert dynamodb_reader.resolve_endpoint().url == "http://127.0.0.1:8"
    assert dynamodb_reader.resolve_endpoint("http://localhost:7").url == "http://localhost:7"


def test_proxy_and_ca_bundle_come_from_the_environment(aws_environment, tmp_path):
    env = aws_environment
    env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    env.setenv("AWS_CA_BUNDLE", str(tmp_path / "corp.pem"))
    resolved = dynamodb_reader.resolve_endpoint()
    assert resolved.proxy == "http://proxy.internal:3128" and resolved.ca_bundle == str(tmp_path / "corp.pem")
    env.setenv("NO_PROXY", ".amazonaws.com")
    assert dynamodb_reader.resolve_endpoint().proxy is None
    with pytest.raises(ServingStoreError, match="CA bundle"):    # an unreadable bundle is said at start
        dynamodb_reader.DynamoDBReader("us-east-1", resolved, Credentials("AKIDTEST", "secret"))


class ForwardProxy:
    """A plain-HTTP forward proxy on 127.0.0.1: takes the absolute URL, forwards to its host."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.seen.append((self.path, self.headers["Host"]))
                target = urlparse(self.path)
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=5)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-authorization"}
                upstream.request("POST", target.path or "/", body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_reads_go_through_the_proxy_of_the_environment(aws_environment, dynamodb_endpoint, table_with_items):
    _, table = table_with_items
    proxy = ForwardProxy()
    try:
        # NO_PROXY's default covers nothing here; 127.0.0.1 endpoints are proxied like any other.
        aws_environment.setenv("HTTP_PROXY", proxy.url)
        reader = dynamodb_reader.from_settings(dynamodb_endpoint)
        assert payloads.get_item_payload(reader, table, "m-2", "brands#card") == "{}"
        host = urlparse(dynamodb_endpoint).netloc
        assert proxy.seen == [(f"{dynamodb_endpoint}/", host)]      # signed for DynamoDB's host, not the proxy's
    finally:
        proxy.stop()


def _self_signed_certificate(folder) -> tuple[str, str]:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    return str(folder / "cert.pem"), str(folder / "key.pem")


def test_https_verifies_against_the_configured_ca_bundle(script, tmp_path):
    cert, key = _self_signed_certificate(tmp_path)
    server = script((200, ITEM, None, False), (200, ITEM, None, False))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    url = server.endpoint.replace("http://", "https://")
    trusted = dynamodb_reader.Endpoint(url=url, region="us-east-1", proxy=None, ca_bundle=cert)
    reader = dynamodb_reader.DynamoDBReader("us-east-1", trusted, Credentials("AKIDTEST", "secret"))
    assert reader.get_item(TableName="t", Key={}) == ITEM
    untrusted = dynamodb_reader.DynamoDBReader("us-east-1", url, Credentials("AKIDTEST", "secret"))
    with pytest.raises(EndpointConnectionError):                 # botocore's bundle does not know this CA
        untrusted.get_item(TableName="t", Key={})
