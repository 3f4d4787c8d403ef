"""Airflow as `make airflow` runs it (`flashfeed airflow-ui`: api-server, scheduler,
dag-processor, triggerer, all on 127.0.0.1), for end-to-end tests that need a real scheduler."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60
POLL_S = 2


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def api_get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.load(response)


def api_post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


@contextlib.contextmanager
def running_airflow(env: dict[str, str], log_path: Path, dag_ids) -> Iterator[str]:
    """Start `flashfeed airflow-ui` with `env` (its AIRFLOW__API__PORT), wait until the API lists
    `dag_ids`, yield the UI's URL; stop every component by its own PID at the end."""
    url = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["flashfeed", "airflow-ui"], env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"flashfeed airflow-ui exited early:\n{tail(log_path)}"
            try:
                if set(dag_ids) <= {d["dag_id"] for d in api_get(url, "/api/v2/dags")["dags"]}:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"Airflow did not list the DAGs in time:\n{tail(log_path)}"
            time.sleep(POLL_S)
        yield url
    finally:
        # airflow-ui stops its components (each in its own process group) on SIGTERM.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
