"""Shared test fixtures.

`dynamodb_endpoint`: a real DynamoDB (the project's dynalite, `npm ci` first) for the whole
test session, on a free 127.0.0.1 port with its data in a temporary folder; stopped by its
PID at the end. Tests isolate themselves with their own table prefix.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

PORT_ATTEMPTS = 3
# The UCI Online Retail sample (CC BY 4.0) ships next to the project's checkout, in
# ../shared/data/; FLASHFEED_UCI_SAMPLE points elsewhere (e.g. for a clone in another folder).
_UCI_RELATIVE = Path("shared", "data", "uci-online-retail-sample", "online_retail_rows_500000_541908.csv")
_UCI_CANDIDATES = [Path(p) for p in [os.environ.get("FLASHFEED_UCI_SAMPLE")] if p] + [
    Path(__file__).resolve().parents[2] / _UCI_RELATIVE, Path("/work") / _UCI_RELATIVE]
UCI_SAMPLE = next((c for c in _UCI_CANDIDATES if c.is_file()), _UCI_CANDIDATES[0])


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; see start_on_free_port for the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_on_free_port(home: Path) -> str:
    """Start the local DynamoDB for `home` on a free port; retried because another process
    may take the port between picking it and dynalite listening on it."""
    from flashfeed import local_dynamodb

    for attempt in range(PORT_ATTEMPTS):
        try:
            return local_dynamodb.start(home=home, port=free_port())
        except local_dynamodb.LocalDynamoDBError:
            if attempt == PORT_ATTEMPTS - 1:
                raise


@pytest.fixture(scope="session")
def dynamodb_endpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    from flashfeed import local_dynamodb

    home: Path = tmp_path_factory.mktemp("dynamodb-home")
    endpoint = start_on_free_port(home)
    try:
        yield endpoint
    finally:
        local_dynamodb.stop(home=home)
