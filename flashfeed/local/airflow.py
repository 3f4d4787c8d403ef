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

from flashfeed.local import postgres

log = logging.getLogger("flashfeed.airflow")
STOP_TIMEOUT_S = 30
POLL_S = 1.0
LIGHT_TASK_SLOTS = 2


def components(port: str) -> dict[str, list[str]]:
    return {
        "api-server": ["airflow", "api-server", "--host", "127.0.0.1", "--port", port],
        "scheduler": ["airflow", "scheduler", "--skip-serve-logs"],
        "dag-processor": ["airflow", "dag-processor"],
        "triggerer": ["airflow", "triggerer", "--skip-serve-logs"],
    }


class AirflowComponents:
    """The components of `components(port)`, each in its own process group, started with `env`
    (default: this process's) and writing to `log_dir/<name>.log` when given (else to this
    process's output); `stop()` ends each by its own process group."""

    def __init__(self, port: str, env: dict[str, str] | None = None, log_dir: Path | None = None):
        self.port, self.env, self.log_dir = port, env, log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AirflowComponents:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, cmd in components(self.port).items():
            output = None
            if self.log_dir is not None:
                output = open(self.log_dir / f"{name}.log", "ab")   # noqa: SIM115 - the child keeps it
            try:
                self.processes[name] = subprocess.Popen(cmd, env=self.env, start_new_session=True,
                                                        stdout=output, stderr=subprocess.STDOUT if output else None)
            finally:
                if output is not None:
                    output.close()
            log.info("started %s (pid %d)", name, self.processes[name].pid)
        return self

    def stopped(self) -> str | None:
        """The name of a component that has exited, with its exit code, if any."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                return f"{name} (exit {proc.returncode})"
        return None

    def stop(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is None:
                log.info("stopping %s (pid %d)", name, proc.pid)
                os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def scheduler_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The components' environment: the LocalExecutor runs as many task processes at once as the
    Spark pool has slots plus LIGHT_TASK_SLOTS for sensors, planning and DynamoDB tasks (a Spark
    task's process waits for its spark-submit, so it is light too; the pool bounds the JVMs)."""
    from flashfeed.core.config import load_config

    env = dict(os.environ if base is None else base)
    env.setdefault("AIRFLOW__CORE__PARALLELISM",
                   str(load_config()["airflow"]["spark_pool_slots"] + LIGHT_TASK_SLOTS))
    return env


def init_airflow() -> None:
    """`flashfeed airflow-init`: what Airflow needs before the DAGs can run, idempotent.

    Starts the project's PostgreSQL when it is Airflow's database (flashfeed/local/postgres.py),
    migrates the metadata database and creates (or resizes) the pool that bounds concurrent
    Spark applications; tasks of a pool that does not exist are never scheduled.
    """
    from flashfeed.core.config import load_config
    from flashfeed_airflow.schedules import SPARK_POOL

    slots = load_config()["airflow"]["spark_pool_slots"]
    database = postgres.ensure_running()
    if database:
        log.info("Airflow's database: %s", database)
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
    airflow = AirflowComponents(port, scheduler_environment())

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Also SIGINT: a shell starting us in the background would otherwise leave it ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        airflow.start()
        log.info("Airflow UI: %s (no login locally); Ctrl-C stops it", airflow.url)
        while True:
            stopped = airflow.stopped()
            if stopped:
                log.error("%s exited; stopping the others", stopped)
                return 1
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        return 0
    finally:
        airflow.stop()


if __name__ == "__main__":
    sys.exit(main())
