"""`make airflow`: the UI and scheduler start on 127.0.0.1 only, list both DAGs, and stop cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from flashfeed.env import project_env
from tests.conftest import free_port

pytestmark = pytest.mark.e2e
START_TIMEOUT_S = 180


def _listening_ports() -> dict[int, set[str]]:
    """Local listening TCP sockets from /proc (IPv4 and IPv6): port -> addresses."""
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    address, port = fields[1].split(":")
                    listening.setdefault(int(port, 16), set()).add(address)
    return listening


def test_ui_listens_on_loopback_only_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = project_env({"PATH": os.environ["PATH"], "FLASHFEED_HOME": str(tmp_path),
                       "AIRFLOW__API__PORT": str(port)})
    before = set(_listening_ports())
    proc = subprocess.Popen(["flashfeed", "airflow-ui"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, "flashfeed airflow-ui exited early"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/dags", timeout=5) as response:
                    dags = {d["dag_id"] for d in json.load(response)["dags"]}
                if {"flashfeed_daily_model", "flashfeed_launch_feeds"} <= dags:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the Airflow UI did not list both DAGs in time"
            time.sleep(2)
        opened = {p: addrs for p, addrs in _listening_ports().items() if p not in before}
        loopback = {"0100007F", "00000000000000000000000001000000"}
        assert port in opened
        assert all(addrs <= loopback for addrs in opened.values()), f"listening beyond loopback: {opened}"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    time.sleep(1)
    assert port not in _listening_ports()
