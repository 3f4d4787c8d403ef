"""`make airflow`: Airflow's UI and scheduler on this machine, listening on 127.0.0.1 only.

Like `airflow standalone`, but every component is started so that nothing listens beyond
loopback: the API server (UI) binds 127.0.0.1, and the scheduler and triggerer do not start
their log servers (with the LocalExecutor the UI reads task logs from the local log folder).
Ctrl-C (or SIGTERM) stops every component by its own process group.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("flashfeed.airflow")
STOP_TIMEOUT_S = 30
POLL_S = 1.0


def components(port: str) -> dict[str, list[str]]:
    return {
        "api-server": ["airflow", "api-server", "--host", "127.0.0.1", "--port", port],
        "scheduler": ["airflow", "scheduler", "--skip-serve-logs"],
        "dag-processor": ["airflow", "dag-processor"],
        "triggerer": ["airflow", "triggerer", "--skip-serve-logs"],
    }


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    for name, proc in processes.items():
        if proc.poll() is None:
            log.info("stopping %s (pid %d)", name, proc.pid)
            os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in processes.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def init_airflow() -> None:
    """`flashfeed airflow-init`: what Airflow needs before the DAGs can run, idempotent.

    Migrates the metadata database and creates (or resizes) the pool that bounds concurrent
    Spark applications; tasks of a pool that does not exist are never scheduled.
    """
    from flashfeed.core.config import load_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    from flashfeed_airflow.schedules import SPARK_POOL

    slots = load_config()["airflow"]["spark_pool_slots"]
    subprocess.run(["airflow", "db", "migrate"], check=True)
    subprocess.run(["airflow", "pools", "set", SPARK_POOL, str(slots),
                    "Concurrent flashfeed Spark applications (config airflow.spark_pool_slots)"],
                   check=True, stdout=subprocess.DEVNULL)
    log.info("Airflow database ready; pool %s has %d slots", SPARK_POOL, slots)


def init_main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="flashfeed airflow-init", description=init_airflow.__doc__.splitlines()[0]
                            ).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    init_airflow()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    port = os.environ.get("AIRFLOW__API__PORT", "8080")
    init_airflow()
    processes: dict[str, subprocess.Popen] = {}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Also SIGINT: a shell starting us in the background would otherwise leave it ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for name, cmd in components(port).items():
            processes[name] = subprocess.Popen(cmd, start_new_session=True)
            log.info("started %s (pid %d)", name, processes[name].pid)
        log.info("Airflow UI: http://127.0.0.1:%s (no login locally); Ctrl-C stops it", port)
        while True:
            for name, proc in processes.items():
                if proc.poll() is not None:
                    log.error("%s exited with %s; stopping the others", name, proc.returncode)
                    return 1
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(processes)


if __name__ == "__main__":
    sys.exit(main())
