"""Serving under faults, end to end: the read API as shipped (`python -m flashfeed.serving.api`, its
worker processes) over its own local DynamoDB, which is paused with SIGSTOP under concurrent
clients and resumed with SIGCONT: every answer comes within 4x the request budget, and reads
succeed again within 2 s of the resume."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flashfeed.core.config import REPO_ROOT, load_config
from flashfeed.local import dynamodb as local_dynamodb
from flashfeed.serving import control, loader, tables
from tests.conftest import config_with_table_prefix, free_port

pytestmark = pytest.mark.serial   # every answer within 4x the read budget: not beside other tests

VERSION = "20261122t1100"
MEMBERS = 40
CLIENTS = 8
BEFORE_S, STALL_S, AFTER_S = 2.0, 20.0, 4.0
RECOVERY_S = 2.0


def write_feeds(feeds_dir: Path) -> dict:
    """A served version of MEMBERS members' products cards plus the global fallback."""
    rows = {"products_card": [json.dumps({"member_id": f"m-{i:04d}", "feed": "products", "variant": "card",
                                          "version": VERSION, "groups": [{"key": "g", "styles": [f"s-{i}"]}]})
                              for i in range(MEMBERS)],
            "fallback": [json.dumps({"member_id": "__fallback__#all", "feed": "products", "variant": "card",
                                     "version": VERSION, "groups": [{"key": "popular", "styles": ["s-1"]}]})]}
    data_sets = {}
    for name, lines in rows.items():
        data = "".join(f"{line}\n" for line in lines).encode()
        (feeds_dir / name).mkdir(parents=True)
        (feeds_dir / name / "part-00000.json").write_bytes(data)
        data_sets[name] = {"payloads": len(lines), "files": [{"path": f"{name}/part-00000.json", "bytes": len(data),
                                                              "sha256": hashlib.sha256(data).hexdigest(),
                                                              "payloads": len(lines)}]}
    manifest = {"version": VERSION, "data_sets": data_sets, "members": MEMBERS,
                "total_payloads": sum(len(lines) for lines in rows.values())}
    (feeds_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.fixture
def served_api(tmp_path, monkeypatch):
    """Its own dynalite (it is paused) with a served version, and the read API in front of it."""
    home = tmp_path / "home"
    prefix = "stall-"
    config = config_with_table_prefix(tmp_path, prefix)
    monkeypatch.setenv("FLASHFEED_CONFIG", str(config))
    endpoint = local_dynamodb.start(home=home, port=free_port())
    api = None
    try:
        client = tables.dynamodb_client(endpoint)
        manifest = write_feeds(tmp_path / "feeds")
        result = loader.load_feeds(client, str(tmp_path / "feeds"), manifest, prefix)
        loader.verify_load(client, prefix, manifest, str(tmp_path / "feeds"), result.written)
        control.flip(client, prefix, VERSION, str(tmp_path / "feeds" / "manifest.json"), expected_version=None)
        port = free_port()
        log = open(tmp_path / "api.log", "wb")
        api = subprocess.Popen([sys.executable, "-m", "flashfeed.serving.api", "--port", str(port),
                                "--endpoint", endpoint], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "FLASHFEED_CONFIG": str(config), "FLASHFEED_HOME": str(home)})
        log.close()
        deadline = time.monotonic() + 60
        while get(port, "/v1/ready")[0] != 200:
            assert api.poll() is None and time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        yield port, local_dynamodb.status(home=home).pid, tmp_path / "api.log"
    finally:
        pid = local_dynamodb.status(home=home).pid
        if pid:
            os.kill(pid, signal.SIGCONT)                  # never leave it paused
        if api is not None:
            api.terminate()
            api.wait(30)
        local_dynamodb.stop(home=home)


def get(port: int, path: str, timeout: float = 30) -> tuple[int | str, float]:
    """(status or the error's name, seconds) of one GET on a new connection."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except OSError as error:
        return type(error).__name__, time.monotonic() - started
    finally:
        connection.close()


def test_a_paused_store_gets_fast_503s_and_reads_recover_within_2_s(served_api):
    port, dynalite_pid, api_log = served_api
    start = time.monotonic()
    pause_at, resume_at = start + BEFORE_S, start + BEFORE_S + STALL_S
    answers: list[tuple[int, float, int | str, float]] = []        # (client, sent relative to resume, status, s)
    lock = threading.Lock()

    def client(index: int) -> None:
        n = 0
        while time.monotonic() < resume_at + AFTER_S:
            sent = time.monotonic()
            status, seconds = get(port, f"/v1/members/m-{(index * 7 + n) % MEMBERS:04d}/feeds/products")
            with lock:
                answers.append((index, sent - resume_at, status, seconds))
            n += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(pause_at - time.monotonic())
    os.kill(dynalite_pid, signal.SIGSTOP)
    time.sleep(resume_at - time.monotonic())
    os.kill(dynalite_pid, signal.SIGCONT)
    for thread in threads:
        thread.join()

    stalled = [a for a in answers if -STALL_S <= a[1] < 0]
    assert len(stalled) >= CLIENTS * STALL_S / 1.0, "the clients were not answered quickly enough to keep asking"
    budget = load_config()["serving"]["api_request_budget_ms"] / 1000
    slowest = max(seconds for _, _, _, seconds in answers)
    assert slowest < 4 * budget, f"an answer took {slowest * 1000:.0f} ms, over 4x the {budget * 1000:.0f} ms budget"
    assert {status for _, _, status, _ in stalled} == {503}
    # Before the pause every read succeeds (but those in flight when it began).
    assert {status for _, sent, status, _ in answers if sent < -STALL_S - 4 * budget} == {200}
    for index in range(CLIENTS):
        after = [(sent, status) for i, sent, status, _ in answers if i == index and sent >= 0]
        late = [(sent, status) for sent, status in after if sent >= RECOVERY_S]
        assert late and all(status == 200 for _, status in late), (index, after[:20])
    log = api_log.read_text()
    assert "serving store request failed: ReadDeadlineExceeded" in log
