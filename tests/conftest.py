"""Shared test fixtures.

`dynamodb_endpoint`: a real DynamoDB (the project's dynalite, `npm ci` first) for the whole
test session, on a free 127.0.0.1 port with its data in a temporary folder; stopped by its
PID at the end. Tests isolate themselves with their own table prefix.
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; tiny race accepted in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def dynamodb_endpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    from flashfeed import local_dynamodb

    home: Path = tmp_path_factory.mktemp("dynamodb-home")
    endpoint = local_dynamodb.start(home=home, port=free_port())
    try:
        yield endpoint
    finally:
        local_dynamodb.stop(home=home)
