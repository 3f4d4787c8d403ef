"""`make airflow`: the UI and scheduler start on 127.0.0.1 only, list both DAGs, and stop cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from flashfeed.local.env import project_env
from tests.conftest import LOOPBACK_HEX, free_port, listening_ports

pytestmark = pytest.mark.e2e
START_TIMEOUT_S = 180


def test_ui_listens_on_loopback_only_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = project_env({"PATH": os.environ["PATH"], "FLASHFEED_HOME": str(tmp_path),
                       "AIRFLOW__API__PORT": str(port)})
    before = set(listening_ports())
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
        opened = {p: addrs for p, addrs in listening_ports().items() if p not in before}
        assert port in opened
        assert all(addrs <= LOOPBACK_HEX for addrs in opened.values()), f"listening beyond loopback: {opened}"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    time.sleep(1)
    assert port not in listening_ports()
