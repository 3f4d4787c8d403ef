"""The read API's own DynamoDB client: the same answers as boto3 on dynalite, signed requests,
and its retries and errors against a scripted server on 127.0.0.1 (fault injection)."""
from __future__ import annotations

import json
import threading
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError

from flashfeed.serving import dynamodb_reader, payloads, tables


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
    assert tables.table_exists(reader, table) and not tables.table_exists(reader, "no-such-table")


class Script:
    """A DynamoDB stand-in on 127.0.0.1 answering from a list: (status, body, crc override, close)."""

    def __init__(self, answers):
        self.answers, self.requests = list(answers), []
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"                  # keep-alive, like DynamoDB

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                script.requests.append((dict(self.headers), json.loads(body)))
                status, answer, crc, close = script.answers.pop(0)
                data = json.dumps(answer).encode()
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
