"""Shared test fixtures, and the test tiers.

Tiers (markers registered in pyproject.toml): every test under tests/e2e is marked `e2e` here,
by its folder; a slower test elsewhere is marked `slow` in its own module. `make test-fast`
runs `-m "not e2e and not slow"` (unit tests, DAG integrity, Spark transforms on tiny frames);
`make test` runs everything (what CI runs).

`dynamodb_endpoint`: a real DynamoDB (the project's dynalite, `npm ci` first) for the whole
test session, on a free 127.0.0.1 port with its data in a temporary folder; stopped by its
PID at the end (`dynamodb_server` also gives its folder). Tests isolate themselves with their
own table prefix.
`alert_inbox`: a webhook on 127.0.0.1 to point FLASHFEED_ALERT_WEBHOOK at.
`pinned_environment`, `installed_flashfeed`: fresh venvs outside the checkout, the pinned set
without and with the wheel, built once per session (tests/installed_package.py).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest

PORT_ATTEMPTS = 3
E2E = Path(__file__).resolve().parent / "e2e"


# The modules that take longest, longest first (BENCHMARKS.md, "The deployable stack"): with the
# tests in two processes (`make test`, pytest-xdist --dist loadfile --no-loadscope-reorder), a
# long module started last would run alone at the end.
LONGEST_FIRST = ("e2e/test_backfill.py", "e2e/test_pipeline.py", "e2e/test_s3_lake.py", "e2e/test_spark_cluster.py",
                 "e2e/test_evaluate_and_tune.py", "e2e/test_quality_gate.py", "e2e/test_airflow_ui.py",
                 "e2e/test_faults.py", "test_installed_package.py")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)
    rank = {TESTS / name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.resolve(), len(rank)))    # stable: the rest keep their order


# The UCI Online Retail sample (CC BY 4.0) ships next to the project's checkout, in
# ../shared/data/; FLASHFEED_UCI_SAMPLE points elsewhere (e.g. for a clone in another folder).
_UCI_RELATIVE = Path("shared", "data", "uci-online-retail-sample", "online_retail_rows_500000_541908.csv")
_UCI_CANDIDATES = [Path(p) for p in [os.environ.get("FLASHFEED_UCI_SAMPLE")] if p] + [
    Path(__file__).resolve().parents[2] / _UCI_RELATIVE, Path("/work") / _UCI_RELATIVE]
UCI_SAMPLE = next((c for c in _UCI_CANDIDATES if c.is_file()), _UCI_CANDIDATES[0])


# 127.0.0.1 as /proc/net/tcp{,6} spell it: IPv4, IPv6 ::1, and IPv4-mapped IPv6.
LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def listening_ports(pid: int | None = None) -> dict[int, set[str]]:
    """Listening TCP sockets from /proc (IPv4 and IPv6): port -> local addresses (hex, see
    LOOPBACK_HEX); only those of process `pid` when given. Needs no `ss` or `netstat`."""
    inodes = None
    if pid is not None:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:   # closed meanwhile
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and (inodes is None or fields[9] in inodes):  # 0A = LISTEN
                    address, port = fields[1].split(":")
                    listening.setdefault(int(port, 16), set()).add(address)
    return listening


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; see start_on_free_port for the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_on_free_port(home: Path) -> str:
    """Start the local DynamoDB for `home` on a free port; retried because another process
    may take the port between picking it and dynalite listening on it."""
    from flashfeed.local import dynamodb as local_dynamodb

    for attempt in range(PORT_ATTEMPTS):
        try:
            return local_dynamodb.start(home=home, port=free_port())
        except local_dynamodb.LocalDynamoDBError:
            if attempt == PORT_ATTEMPTS - 1:
                raise


@contextlib.contextmanager
def server_home():
    """A FLASHFEED_HOME for a local PostgreSQL, outside pytest's own temporary folder: under root
    the server runs as its own user, which must reach its data folder, and pytest keeps its
    folder private (it resets its mode at the start of every session, e.g. a parallel one)."""
    home = Path(tempfile.mkdtemp(prefix="flashfeed-postgres-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def config_with_table_prefix(folder: Path, prefix: str, replacements: dict[str, str] | None = None) -> Path:
    """A copy of include/flashfeed.yaml whose DynamoDB tables start with `prefix`, so a test has
    its own served version on the session's shared DynamoDB (plus any other exact replacements)."""
    text = (Path(__file__).resolve().parents[1] / "include" / "flashfeed.yaml").read_text()
    for old, new in {"table_prefix: flashfeed-": f"table_prefix: {prefix}", **(replacements or {})}.items():
        assert old in text, f"{old!r} is not in include/flashfeed.yaml"
        text = text.replace(old, new)
    path = folder / "flashfeed.yaml"
    path.write_text(text)
    return path


class AlertInbox:
    """A webhook receiver on 127.0.0.1 (stands in for Slack/Teams): keeps the JSON bodies posted."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.alerts: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                inbox.alerts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def alert_inbox():
    inbox = AlertInbox()
    try:
        yield inbox
    finally:
        inbox.close()


class DynaliteServer(NamedTuple):
    endpoint: str
    home: Path

    def require_running(self) -> None:
        """Fail with the server's own last words when it has gone away, instead of a
        connection refused in every later test."""
        from flashfeed.local import dynamodb as local_dynamodb
        from flashfeed.local.daemons import log_tail

        if not local_dynamodb.status(self.home).running:
            pytest.fail(f"the session's dynalite ({self.endpoint}) is not running any more; "
                        f"its log ends:\n{log_tail(local_dynamodb.log_file(self.home))}")


@pytest.fixture(scope="session")
def dynamodb_server(tmp_path_factory: pytest.TempPathFactory) -> DynaliteServer:
    from flashfeed.local import dynamodb as local_dynamodb

    home: Path = tmp_path_factory.mktemp("dynamodb-home")
    endpoint = start_on_free_port(home)
    try:
        yield DynaliteServer(endpoint, home)
    finally:
        local_dynamodb.stop(home=home)


@pytest.fixture(scope="session")
def dynamodb_endpoint(dynamodb_server: DynaliteServer) -> str:
    return dynamodb_server.endpoint


@pytest.fixture(scope="session")
def pinned_environment(tmp_path_factory):
    """A venv with requirements.txt's pinned set and no flashfeed, as a Spark worker has it
    (tests/installed_package.py)."""
    from tests import installed_package

    return installed_package.pinned_environment(tmp_path_factory.mktemp("pinned") / "venv")


@pytest.fixture(scope="session")
def installed_flashfeed(tmp_path_factory):
    """A venv with the pinned set and the wheel built from this checkout, as an Airflow worker
    has it (tests/installed_package.py); built once per session."""
    from tests import installed_package

    work = tmp_path_factory.mktemp("wheel")
    return installed_package.installed_environment(work / "venv", installed_package.build_wheel(work))
