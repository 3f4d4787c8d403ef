"""The project's local DynamoDB (dynalite): idempotent start, loopback only, data on disk, stop by PID."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flashfeed.local import dynamodb as local
from flashfeed.local.daemons import pid_alive
from flashfeed.serving import payloads, tables
from tests.conftest import free_port, listening_ports, start_on_free_port


def start_free(home: Path) -> tuple[str, int]:
    endpoint = start_on_free_port(home)
    return endpoint, int(endpoint.rsplit(":", 1)[1])


def dynalite_pids_for(data_dir: Path) -> list[int]:
    """Every running dynalite process serving `data_dir` (from /proc, not from our pid file)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(b"dynalite" in arg for arg in argv) and str(data_dir).encode() in argv:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def home(tmp_path):
    yield tmp_path
    local.stop(home=tmp_path)          # never leave a server behind, even when a test fails


def test_start_twice_returns_the_same_endpoint_and_one_process(home):
    endpoint, port = start_free(home)
    assert endpoint == f"http://127.0.0.1:{port}"
    pid = json.loads(local.pid_file(home).read_text())["pid"]

    assert local.start(home=home) == endpoint                  # no port asked: the running one
    assert local.start(home=home, port=port) == endpoint
    assert json.loads(local.pid_file(home).read_text())["pid"] == pid
    assert dynalite_pids_for(local.data_dir(home)) == [pid]

    state = local.status(home)
    assert state.running and state.pid == pid and state.endpoint == endpoint

    with pytest.raises(local.LocalDynamoDBError, match="already runs on port"):
        local.start(home=home, port=free_port())


def test_listens_on_loopback_only(home):
    _, port = start_free(home)
    assert listening_ports()[port] == {"0100007F"}             # 127.0.0.1, little-endian hex


def test_data_survives_stop_and_start(home):
    endpoint, _ = start_free(home)
    client = tables.dynamodb_client(endpoint)
    table = "flashfeed-feeds-20261122t1100"
    tables.ensure_feeds_table(client, table)
    client.put_item(TableName=table, Item={"member_id": {"S": "m-1"}, "feed": {"S": "brands#card"},
                                           "payload": {"S": '{"member_id": "m-1"}'}})
    assert local.stop(home=home)

    # A fresh port: the old one may be taken by any process in between; the data is what matters.
    client = tables.dynamodb_client(start_free(home)[0])
    assert payloads.get_payload(client, table, "m-1", "brands", "card") == '{"member_id": "m-1"}'
    assert any(local.data_dir(home).iterdir())                 # the LevelDB files are on disk


def test_stop_kills_by_pid_and_cleans_up(home):
    start_free(home)
    pid = json.loads(local.pid_file(home).read_text())["pid"]
    assert local.stop(home=home) is True
    assert not local.pid_file(home).exists()
    assert dynalite_pids_for(local.data_dir(home)) == []
    assert not pid_alive(pid)     # gone, or a zombie that PID 1 has not reaped yet
    assert local.status(home).running is False
    assert local.stop(home=home) is False                      # stopping twice is harmless


def test_a_client_gone_mid_request_does_not_end_the_server(home):
    """A load task killed in the middle of a batch write: dynalite's own CLI died of it."""
    endpoint, port = start_free(home)
    with socket.create_connection(("127.0.0.1", port)) as half_sent:
        half_sent.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/x-amz-json-1.0\r\n"
                          b"X-Amz-Target: DynamoDB_20120810.BatchWriteItem\r\n"
                          b"Content-Length: 1000\r\n\r\n{\"RequestItems\": ")
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while "request dropped" not in local.log_file(home).read_text():
        assert time.monotonic() < deadline, local.log_file(home).read_text()
        time.sleep(0.1)
    assert local.status(home).running
    assert "TableNames" in tables.dynamodb_client(endpoint).list_tables()


def test_stale_pid_file_is_cleaned(home):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    local.dynamodb_dir(home).mkdir(parents=True)
    local.pid_file(home).write_text(json.dumps({"pid": dead_pid, "port": 1}))
    assert local.status(home).running is False
    endpoint, port = start_free(home)
    assert endpoint == f"http://127.0.0.1:{port}"
    assert json.loads(local.pid_file(home).read_text())["pid"] != dead_pid


def test_server_outlives_its_starter_and_cli_controls_it(home):
    """Started from a separate command (new session), it keeps running after that command exits."""
    port = free_port()
    command = [sys.executable, "-m", "flashfeed.local.dynamodb", "--home", str(home)]
    started = subprocess.run(command + ["start", "--port", str(port)], capture_output=True, text=True,
                             cwd=local.REPO_ROOT, timeout=60)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == f"http://127.0.0.1:{port}"
    assert local.status(home).running                          # the starter has exited by now

    running = subprocess.run(command + ["status"], capture_output=True, text=True, cwd=local.REPO_ROOT)
    assert running.returncode == 0 and "running: pid" in running.stdout
    stopped = subprocess.run(command + ["stop"], capture_output=True, text=True, cwd=local.REPO_ROOT)
    assert stopped.stdout.strip() == "stopped"
    after = subprocess.run(command + ["status"], capture_output=True, text=True, cwd=local.REPO_ROOT)
    assert after.returncode == 3


def test_port_in_use_by_someone_else_is_a_clear_error(home):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(local.LocalDynamoDBError, match=f"port {port} .* already in use"):
            local.start(home=home, port=port)


def test_missing_dynalite_says_run_npm_ci(home, monkeypatch):
    monkeypatch.setattr(local, "DYNALITE_PACKAGE", home / "node_modules" / "dynalite" / "package.json")
    with pytest.raises(local.LocalDynamoDBError, match="Run `npm ci`"):
        local.start(home=home, port=free_port())


def test_port_comes_from_environment(home, monkeypatch):
    port = free_port()
    monkeypatch.setenv(local.PORT_ENV, str(port))
    assert local.start(home=home) == f"http://127.0.0.1:{port}"
