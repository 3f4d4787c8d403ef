"""A Spark standalone cluster on this machine: one master and one worker, on 127.0.0.1 only.

Why: every Spark job of the DAGs is submitted through the Airflow connection `spark_default`,
which is `local[*]` by default (flashfeed/local/env.py). Pointing that connection at a standalone
master (`spark://HOST:PORT`) runs the same jobs in cluster mode: the driver stays in the
Airflow task, the work runs in executor JVMs that a worker starts, as on a real cluster.
This module is that cluster on a laptop. tests/e2e/test_spark_cluster.py uses it to prove that
the DAGs need nothing but another connection, and users use it to try cluster mode before
they have a cluster:

    flashfeed spark-cluster start [--port 7077] [--webui-port 8081] [--worker-cores N] [--worker-memory 4g]
    flashfeed spark-cluster status
    flashfeed spark-cluster stop

(or `python -m flashfeed.local.spark_standalone ...`). `start` prints the master URL and the
AIRFLOW_CONN_SPARK_DEFAULT value that points the DAGs at it.

How:
- The daemons come from the pyspark distribution installed in this environment (SPARK_HOME =
  the pyspark package folder): the pip wheel has no start-master.sh, so they are started with
  its `sbin/spark-daemon.sh start org.apache.spark.deploy.master.Master|...worker.Worker`.
- Everything listens on 127.0.0.1: the daemons get `--host 127.0.0.1` and SPARK_LOCAL_IP, which
  also binds their web UIs (and the executors the worker starts) to loopback. The master's
  REST submission server (port 6066 by default) is switched off: spark-submit in client mode,
  which the DAGs use, does not need it. `spark.port.maxRetries=0`: a taken port is an error,
  not a silent move to the next port.
- All state lives under the caller's folder (default `<FLASHFEED_HOME>/spark-standalone/`):
  `logs/` (SPARK_LOG_DIR: the daemons' `.out` logs), `pids/` (SPARK_PID_DIR), `work/`
  (SPARK_WORKER_DIR: `app-*/<executor>/stdout|stderr` of every application), `conf/` (the
  daemons' SPARK_CONF_DIR: empty = Spark's defaults, INFO logs; put a spark-env.sh or
  spark-defaults.conf there to tune them) and `cluster.json` (URLs, ports and PIDs).
- `start` returns once the worker has registered with the master (the master web UI's
  `/json/` says `aliveworkers >= 1`); on a timeout or an early exit the error names the log
  file and shows its tail, and whatever was started is stopped again.
- `stop` ends the worker, the executors it started and the master by their own PIDs (the pid
  files of spark-daemon.sh, checked against the process's command line and SPARK_PID_DIR, so
  a reused PID is never signalled), SIGTERM then SIGKILL, and waits until they are gone.

Executors run the job's Python with the driver's PYSPARK_PYTHON (flashfeed/local/env.py sets it to
this environment's python), so they import the same pyspark, flashfeed and spark_jobs.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from flashfeed.core.config import load_config
from flashfeed.local.daemons import exclusive, log_tail, pid_alive, port_in_use, write_atomically

HOST = "127.0.0.1"                       # never listen on other interfaces
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
IDENT = "flashfeed"                      # SPARK_IDENT_STRING: fixes the pid and log file names
INSTANCE = "1"
DEFAULT_PORT = 7077                      # Spark's default master port
DEFAULT_WEBUI_PORT = 8081                # Spark's default (8080) is the Airflow UI's
DEFAULT_WORKER_WEBUI_PORT = 8082
WORKER_MEMORY_SLACK_MB = 1024            # the worker offers one executor of config spark.executor_memory plus this:
                                         # a worker offering less than an executor asks for never runs it
START_TIMEOUT_SECONDS = 120.0            # two JVM start-ups on a busy 2-core machine
STOP_TIMEOUT_SECONDS = 20.0              # grace period after SIGTERM before SIGKILL
POLL_SECONDS = 0.25
PROBE_TIMEOUT_SECONDS = 2.0


class SparkStandaloneError(RuntimeError):
    """The standalone cluster could not be started, reached or stopped; the message says why."""


# --- locations -------------------------------------------------------------------------------

def default_home() -> Path:
    from flashfeed.core.config import flashfeed_home

    return flashfeed_home() / "spark-standalone"


def spark_home() -> Path:
    """The pyspark package folder: it holds bin/, sbin/ and jars/ of a full Spark."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise SparkStandaloneError("pyspark is not installed in this Python environment")
    home = Path(next(iter(spec.submodule_search_locations)))
    if not (home / "sbin" / "spark-daemon.sh").exists():
        raise SparkStandaloneError(f"{home / 'sbin' / 'spark-daemon.sh'} is missing: reinstall pyspark")
    return home


def log_dir(home: Path) -> Path:
    return Path(home) / "logs"


def pid_dir(home: Path) -> Path:
    return Path(home) / "pids"


def work_dir(home: Path) -> Path:
    return Path(home) / "work"


def conf_dir(home: Path) -> Path:
    return Path(home) / "conf"


def state_file(home: Path) -> Path:
    return Path(home) / "cluster.json"


def _lock_file(home: Path) -> Path:
    """Held while a cluster of `home` starts or stops (see local_daemons.exclusive)."""
    return home / ".lock"


def pid_file(home: Path, daemon_class: str) -> Path:
    """spark-daemon.sh's name for it: spark-<ident>-<class>-<instance>.pid."""
    return pid_dir(home) / f"spark-{IDENT}-{daemon_class}-{INSTANCE}.pid"


def log_file(home: Path, daemon_class: str) -> Path:
    """spark-daemon.sh's name for it: spark-<ident>-<class>-<instance>-<hostname>.out."""
    return log_dir(home) / f"spark-{IDENT}-{daemon_class}-{INSTANCE}-{socket.gethostname()}.out"


def master_url(port: int) -> str:
    return f"spark://{HOST}:{port}"


def spark_connection(port: int) -> str:
    """AIRFLOW_CONN_SPARK_DEFAULT for this master, in Airflow's JSON form. The Spark provider
    uses a host containing `://` as the master URL and appends `:port` to it."""
    return json.dumps({"conn_type": "spark", "host": f"spark://{HOST}", "port": port})


# --- probes ----------------------------------------------------------------------------------

def master_json(webui_port: int) -> dict | None:
    """The master web UI's `/json/` (workers, apps, status), or None when it does not answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(f"http://{HOST}:{webui_port}/json/", timeout=PROBE_TIMEOUT_SECONDS) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_daemon(pid: int, daemon_class: str, home: Path) -> bool:
    """Guards against PID reuse and other clusters: the process must run `daemon_class`
    with this home's SPARK_PID_DIR (where /proc tells)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return pid_alive(pid)                      # no /proc: trust the pid file
    except OSError:
        return False
    if daemon_class.encode() not in cmdline.split(b"\0"):
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return True
    return f"SPARK_PID_DIR={pid_dir(home)}".encode() in environ


def _running_pid(home: Path, daemon_class: str) -> int | None:
    pid = _read_pid(pid_file(home, daemon_class))
    if pid is not None and pid_alive(pid) and _is_our_daemon(pid, daemon_class, home):
        return pid
    return None


def _descendants(pid: int) -> list[int]:
    """PIDs of `pid`'s children, grandchildren ... (the worker's executors and their Python)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# --- start -----------------------------------------------------------------------------------

def _daemon_env(home: Path, base: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.pop("SPARK_NO_DAEMONIZE", None)            # spark-daemon.sh must fork and write pid files
    env.update({
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": HOST,                    # web UIs and executors bind loopback too
        "SPARK_LOG_DIR": str(log_dir(home)),
        "SPARK_PID_DIR": str(pid_dir(home)),
        "SPARK_WORKER_DIR": str(work_dir(home)),
        "SPARK_CONF_DIR": str(conf_dir(home)),     # not the jobs' include/spark-conf
        "SPARK_IDENT_STRING": IDENT,
        "SPARK_DAEMON_JAVA_OPTS": " ".join(filter(None, [
            env.get("SPARK_DAEMON_JAVA_OPTS", ""), "-Dspark.port.maxRetries=0"])),
        "SPARK_MASTER_OPTS": " ".join(filter(None, [
            env.get("SPARK_MASTER_OPTS", ""), "-Dspark.master.rest.enabled=false"])),
        "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON") or sys.executable,
    })
    # spark-class and the executors' Python come from this environment.
    venv_bin = str(Path(sys.executable).parent)
    if not env.get("PATH", "").startswith(venv_bin):
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def _spark_daemon(home: Path, env: dict[str, str], *args: str) -> None:
    command = [str(Path(env["SPARK_HOME"]) / "sbin" / "spark-daemon.sh"), *args]
    result = subprocess.run(command, check=False, env=env, cwd=str(home), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60,
                            start_new_session=True)   # the daemon outlives this command
    if result.returncode != 0:
        raise SparkStandaloneError(f"{' '.join(command)} failed ({result.returncode}):\n"
                                   f"{result.stdout}{result.stderr}")


def _wait(home: Path, daemon_class: str, what: str, ready, timeout: float) -> dict:
    """Poll until `ready(json)` or fail naming the daemon's log; returns the master's /json/."""
    log = log_file(home, daemon_class)
    deadline = time.monotonic() + timeout
    while True:
        pid = _read_pid(pid_file(home, daemon_class))
        if pid is None or not pid_alive(pid):
            raise SparkStandaloneError(
                f"the Spark {what} (pid {pid}) exited before it was ready; see {log}. "
                f"Last lines:\n{log_tail(log)}")
        state = ready()
        if state is not None:
            return state
        if time.monotonic() > deadline:
            raise SparkStandaloneError(
                f"the Spark {what} (pid {pid}) was not ready within {timeout:.0f} s; see {log}. "
                f"Last lines:\n{log_tail(log)}")
        time.sleep(POLL_SECONDS)


def memory_mb(size: str) -> int:
    """A JVM/Spark memory size ("3g", "512m", "1t") in MiB."""
    text = size.strip().lower().rstrip("b")
    number, unit = text[:-1], text[-1:]
    scale = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    if unit not in scale or not number.isdigit():
        raise ValueError(f"not a memory size: {size!r} (examples: 512m, 3g)")
    return int(int(number) * scale[unit])


def default_worker_memory(config: dict | None = None) -> str:
    """What the worker offers by default: one executor of `spark.executor_memory` plus slack."""
    executor = memory_mb(str((config or load_config())["spark"]["executor_memory"]))
    return f"{executor + WORKER_MEMORY_SLACK_MB}m"


def start(home: Path | str | None = None, port: int = DEFAULT_PORT, webui_port: int = DEFAULT_WEBUI_PORT,
          worker_cores: int | None = None, worker_memory: str | None = None, *,
          worker_webui_port: int = DEFAULT_WORKER_WEBUI_PORT, env: dict[str, str] | None = None,
          timeout: float = START_TIMEOUT_SECONDS) -> str:
    """Start a master and one worker for `home` on 127.0.0.1; return the master URL once the
    worker is registered. Idempotent when the same cluster already runs; `worker_webui_port`
    0 lets the OS pick; `env` is the daemons' base environment (default: this process's)."""
    home = Path(home or default_home()).resolve()
    worker_cores = worker_cores or os.cpu_count() or 1
    worker_memory = worker_memory or default_worker_memory()
    with exclusive(_lock_file(home)):
        if _already_running(home, port):
            return master_url(port)
        busy = [p for p in (port, webui_port, worker_webui_port)
                if p and port_in_use(HOST, p, PROBE_TIMEOUT_SECONDS)]
        if busy:
            raise SparkStandaloneError(f"port(s) {busy} on {HOST} are already in use by another process; "
                                       "pick free ports (--port, --webui-port, --worker-webui-port)")
        for folder in (log_dir(home), pid_dir(home), work_dir(home), conf_dir(home)):
            folder.mkdir(parents=True, exist_ok=True)
        for daemon_class in (MASTER_CLASS, WORKER_CLASS):     # stale: spark-daemon.sh would trust them
            pid_file(home, daemon_class).unlink(missing_ok=True)
        daemon_env = _daemon_env(home, env)
        url = master_url(port)
        try:
            _start_master(home, daemon_env, port, webui_port, timeout)
            state = _start_worker(home, daemon_env, url, webui_port, worker_webui_port, worker_cores, worker_memory,
                                  timeout)
        except BaseException:
            _stop_locked(home)
            raise
        worker = state["workers"][0]
        _write_state(home, {
            "master_url": url, "port": port, "webui_port": webui_port,
            "webui_url": f"http://{HOST}:{webui_port}", "worker_webui_url": worker.get("webuiaddress"),
            "worker_cores": worker.get("cores"), "worker_memory_mb": worker.get("memory"),
            "master_pid": _read_pid(pid_file(home, MASTER_CLASS)),
            "worker_pid": _read_pid(pid_file(home, WORKER_CLASS)),
            "spark_home": daemon_env["SPARK_HOME"], "work_dir": str(work_dir(home)),
            "log_dir": str(log_dir(home)),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        return url


def _already_running(home: Path, port: int) -> bool:
    """True when this home's cluster already runs on `port` with a worker; an error for any other of its daemons."""
    master_pid = _running_pid(home, MASTER_CLASS)
    worker_pid = _running_pid(home, WORKER_CLASS)
    if not (master_pid or worker_pid):
        return False
    state = _read_state(home)
    if (master_pid and worker_pid and state.get("port") == port
            and (master_json(state.get("webui_port", -1)) or {}).get("aliveworkers", 0) >= 1):
        return True
    raise SparkStandaloneError(
        f"a Spark standalone cluster for {home} already runs (master pid {master_pid}, "
        f"worker pid {worker_pid}, {state.get('master_url', 'unknown URL')}); stop it first")


def _start_master(home: Path, daemon_env: dict, port: int, webui_port: int, timeout: float) -> None:
    _spark_daemon(home, daemon_env, "start", MASTER_CLASS, INSTANCE,
                  "--host", HOST, "--port", str(port), "--webui-port", str(webui_port))

    def master_alive():
        state = master_json(webui_port)
        return state if state and state.get("status") == "ALIVE" else None

    state = _wait(home, MASTER_CLASS, "master", master_alive, timeout)
    if state.get("url") != master_url(port):
        raise SparkStandaloneError(f"the master on web UI port {webui_port} says it is "
                                   f"{state.get('url')}, not {master_url(port)}")


def _start_worker(home: Path, daemon_env: dict, url: str, webui_port: int, worker_webui_port: int,
                  cores: int, memory: str, timeout: float) -> dict:
    """Starts the worker; returns the master's state once the worker is registered."""
    _spark_daemon(home, daemon_env, "start", WORKER_CLASS, INSTANCE, url,
                  "--host", HOST, "--webui-port", str(worker_webui_port),
                  "--cores", str(cores), "--memory", memory, "--work-dir", str(work_dir(home)))

    def worker_registered():
        state = master_json(webui_port)
        return state if state and state.get("aliveworkers", 0) >= 1 else None

    return _wait(home, WORKER_CLASS, "worker", worker_registered, timeout)


def _read_state(home: Path) -> dict:
    try:
        return json.loads(state_file(home).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(home: Path, record: dict) -> None:
    write_atomically(state_file(home), json.dumps(record, indent=2) + "\n")


# --- stop ------------------------------------------------------------------------------------

def _terminate(pids: list[int]) -> None:
    """SIGTERM, wait up to STOP_TIMEOUT_SECONDS, then SIGKILL; returns once all are gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            pids = [pid for pid in pids if pid_alive(pid)]
            if not pids:
                return
            time.sleep(POLL_SECONDS)
    raise SparkStandaloneError(f"processes {pids} did not exit after SIGKILL")


def _stop_locked(home: Path) -> bool:
    stopped = False
    for daemon_class in (WORKER_CLASS, MASTER_CLASS):   # worker first: it ends its executors
        pid = _running_pid(home, daemon_class)
        if pid is not None:
            executors = _descendants(pid) if daemon_class == WORKER_CLASS else []
            _terminate([pid])
            _terminate([p for p in executors if pid_alive(p)])   # normally already ended by the worker
            stopped = True
        pid_file(home, daemon_class).unlink(missing_ok=True)
    state_file(home).unlink(missing_ok=True)
    return stopped


def stop(home: Path | str | None = None) -> bool:
    """Stop the worker (and its executors) and the master of `home` by their PIDs and wait
    until they are gone. True if anything was running."""
    home = Path(home or default_home()).resolve()
    with exclusive(_lock_file(home)):
        return _stop_locked(home)


def status(home: Path | str | None = None) -> dict:
    """`cluster.json` plus whether master and worker run and how many workers are registered."""
    home = Path(home or default_home()).resolve()
    state = _read_state(home)
    master_pid, worker_pid = _running_pid(home, MASTER_CLASS), _running_pid(home, WORKER_CLASS)
    answer = master_json(state["webui_port"]) if master_pid and "webui_port" in state else None
    return {**state, "home": str(home), "master_running": master_pid is not None,
            "worker_running": worker_pid is not None,
            "alive_workers": (answer or {}).get("aliveworkers", 0),
            "running": bool(master_pid and worker_pid and (answer or {}).get("aliveworkers", 0) >= 1)}


# --- command line ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flashfeed spark-cluster",
        description="Start, stop or inspect a Spark standalone master and one worker on 127.0.0.1 "
                    "(from the installed pyspark), to run the DAGs in cluster mode on this machine.",
    )
    parser.add_argument("--home", type=Path, default=None,
                        help="state folder: logs, pids, work, conf (default: FLASHFEED_HOME/spark-standalone)")
    commands = parser.add_subparsers(dest="command", required=True)
    start_cmd = commands.add_parser("start", help="start master and worker; print the master URL")
    start_cmd.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"master port (default {DEFAULT_PORT})")
    start_cmd.add_argument("--webui-port", type=int, default=DEFAULT_WEBUI_PORT,
                           help=f"master web UI port (default {DEFAULT_WEBUI_PORT}; Airflow has 8080)")
    start_cmd.add_argument("--worker-webui-port", type=int, default=DEFAULT_WORKER_WEBUI_PORT,
                           help=f"worker web UI port (default {DEFAULT_WORKER_WEBUI_PORT}; 0 = any free port)")
    start_cmd.add_argument("--worker-cores", type=int, default=None, help="cores the worker offers (default: all)")
    start_cmd.add_argument("--worker-memory", default=None,
                           help="memory the worker offers to executors (default: config spark.executor_memory "
                                f"+ {WORKER_MEMORY_SLACK_MB} MiB)")
    commands.add_parser("stop", help="stop worker, executors and master by their PIDs")
    status_cmd = commands.add_parser("status", help="exit 0 when the cluster runs, 3 when it does not")
    status_cmd.add_argument("--json", action="store_true", help="print the status as JSON")
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            url = start(args.home, args.port, args.webui_port, args.worker_cores, args.worker_memory,
                        worker_webui_port=args.worker_webui_port)
            print(url)
            print(f"master web UI: http://{HOST}:{args.webui_port}", file=sys.stderr)
            print("point the DAGs at it (in the environment of every Airflow component):\n"
                  f"  export AIRFLOW_CONN_SPARK_DEFAULT='{spark_connection(args.port)}'", file=sys.stderr)
            return 0
        if args.command == "stop":
            print("stopped" if stop(args.home) else "not running")
            return 0
        state = status(args.home)
        if args.json:
            print(json.dumps(state, indent=2))
        elif state["running"]:
            print(f"running: {state['master_url']}, web UI {state['webui_url']}, "
                  f"{state['alive_workers']} worker(s), state in {state['home']}")
        else:
            print(f"not running (state in {state['home']})")
        return 0 if state["running"] else 3
    except SparkStandaloneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
