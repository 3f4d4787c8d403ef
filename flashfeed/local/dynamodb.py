"""A local, real DynamoDB for the default set-up: dynalite (LevelDB on disk), owned by the project.

    python -m flashfeed.local.dynamodb start     # prints the endpoint, e.g. http://127.0.0.1:8000
    python -m flashfeed.local.dynamodb status
    python -m flashfeed.local.dynamodb stop

Layout under `<FLASHFEED_HOME>/dynamodb/`: `data/` (the LevelDB store, survives restarts),
`dynalite.pid` (JSON: pid, port, endpoint), `dynalite.log` (the server's output).

- dynalite comes from the npm registry, pinned in `package.json` / `package-lock.json`:
  run `npm ci` at the repository root once (it installs into `./node_modules`).
  `flashfeed/local/dynalite_server.js` runs its server, which survives a client that disconnects
  in the middle of a request (dynalite's own CLI exits on that).
- It listens on 127.0.0.1 only, on `FLASHFEED_DYNAMODB_PORT` (default 8000).
- `start` is idempotent: when the pid file names a live dynalite whose port answers, it
  returns that endpoint instead of starting a second server on the same data.
- The server runs in its own session, so it outlives the command that started it; `stop`
  ends it by the PID in the pid file (SIGTERM, then SIGKILL after a timeout), never by name.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from flashfeed.core.config import REPO_ROOT, flashfeed_home
from flashfeed.local.daemons import exclusive, log_tail, pid_alive, port_in_use, stop_by_pid, write_atomically

HOST = "127.0.0.1"                 # never listen on other interfaces
DEFAULT_PORT = 8000
PORT_ENV = "FLASHFEED_DYNAMODB_PORT"
DYNALITE_PACKAGE = REPO_ROOT / "node_modules" / "dynalite" / "package.json"   # there once `npm ci` ran
# dynalite's server, kept alive when a client disconnects mid-request (see the script). Its
# name contains "dynalite", which is how _is_dynalite recognises the process.
SERVER_SCRIPT = Path(__file__).with_name("dynalite_server.js")
START_TIMEOUT_SECONDS = 30.0       # first start compiles nothing, but a cold disk can be slow
STOP_TIMEOUT_SECONDS = 10.0        # grace period after SIGTERM before SIGKILL
POLL_SECONDS = 0.1
PROBE_TIMEOUT_SECONDS = 1.0

# Our own child processes, kept so that `stop` in the same interpreter can reap them
# (otherwise they linger as zombies and look alive) and Python does not warn about them.
_CHILDREN: dict[int, subprocess.Popen] = {}


class LocalDynamoDBError(RuntimeError):
    """The local DynamoDB could not be started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class LocalDynamoDBStatus:
    running: bool
    pid: int | None
    port: int | None
    endpoint: str | None
    data_dir: str
    log_file: str
    pid_file: str


# --- locations -------------------------------------------------------------------------------

def dynamodb_dir(home: Path | None = None) -> Path:
    return Path(home or flashfeed_home()) / "dynamodb"


def data_dir(home: Path | None = None) -> Path:
    return dynamodb_dir(home) / "data"


def pid_file(home: Path | None = None) -> Path:
    return dynamodb_dir(home) / "dynalite.pid"


def log_file(home: Path | None = None) -> Path:
    return dynamodb_dir(home) / "dynalite.log"


def _lock_file(home: Path | None) -> Path:
    return dynamodb_dir(home) / ".lock"


def endpoint_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def configured_port() -> int | None:
    """The port asked for through the environment, or None when it is not set."""
    raw = os.environ.get(PORT_ENV)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise LocalDynamoDBError(f"{PORT_ENV}={raw!r} is not a port number") from None


# --- process and port probes -----------------------------------------------------------------

def _reap_if_child(pid: int) -> bool:
    """True when `pid` was our child and has exited (it is reaped here)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return True
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:      # not our child: someone else reaps it
        return False
    return done == pid


def _process_alive(pid: int) -> bool:
    return not _reap_if_child(pid) and pid_alive(pid)


def _is_dynalite(pid: int) -> bool:
    """Guards against PID reuse: the process must be a dynalite server (where /proc tells)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    try:
        return b"dynalite" in cmdline.read_bytes()
    except OSError:
        return False


def _port_answers(port: int) -> bool:
    """dynalite answers `GET /` with `healthy: …`; anything else is not our server."""
    # No proxy for a loopback probe, whatever HTTP_PROXY says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{endpoint_url(port)}/", timeout=PROBE_TIMEOUT_SECONDS) as response:
            return response.status == 200 and response.read(64).startswith(b"healthy")
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --- pid file --------------------------------------------------------------------------------

def _read_pid_file(home: Path | None) -> dict | None:
    try:
        record = json.loads(pid_file(home).read_text())
        return {"pid": int(record["pid"]), "port": int(record["port"])}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return {"pid": None, "port": None}   # unreadable: treated as stale


def _write_pid_file(home: Path | None, pid: int, port: int) -> None:
    record = {"pid": pid, "port": port, "endpoint": endpoint_url(port),
              "data": str(data_dir(home)), "started_at": _utc_now()}
    write_atomically(pid_file(home), json.dumps(record) + "\n")


def _remove_pid_file(home: Path | None) -> None:
    pid_file(home).unlink(missing_ok=True)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _live_record(home: Path | None) -> dict | None:
    """The pid file's record when it names a live dynalite; a stale pid file is removed."""
    record = _read_pid_file(home)
    if record is None:
        return None
    pid = record["pid"]
    if pid is not None and _process_alive(pid) and _is_dynalite(pid):
        return record
    _remove_pid_file(home)
    return None


def _wait_until_answers(port: int, pid: int, home: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_answers(port):
            return
        if not _process_alive(pid):
            raise LocalDynamoDBError(
                f"dynalite (pid {pid}) exited before answering on {endpoint_url(port)}; "
                f"see {log_file(home)}. Last lines:\n{log_tail(log_file(home))}"
            )
        time.sleep(POLL_SECONDS)
    raise LocalDynamoDBError(
        f"dynalite (pid {pid}) did not answer on {endpoint_url(port)} within {timeout:.0f} s; "
        f"see {log_file(home)}. Last lines:\n{log_tail(log_file(home))}"
    )


# --- public API ------------------------------------------------------------------------------

def start(home: Path | None = None, port: int | None = None) -> str:
    """Start dynalite for `home` (default FLASHFEED_HOME) unless it already runs; return its endpoint."""
    requested_port = port if port is not None else configured_port()
    node = shutil.which("node")
    if not DYNALITE_PACKAGE.exists() or node is None:
        missing = "node is not on PATH" if node is None else f"{DYNALITE_PACKAGE} is missing"
        raise LocalDynamoDBError(
            f"cannot start the local DynamoDB: {missing}. Run `npm ci` in {REPO_ROOT} "
            "(Node.js >= 20 required) to install dynalite from package-lock.json."
        )

    with exclusive(_lock_file(home)):
        running = _live_record(home)
        if running is not None:
            if requested_port is not None and requested_port != running["port"]:
                raise LocalDynamoDBError(
                    f"the local DynamoDB for {dynamodb_dir(home)} already runs on port "
                    f"{running['port']} (pid {running['pid']}), not {requested_port}; "
                    "stop it first to change its port"
                )
            # A concurrent start may still be warming up: give it the usual time.
            _wait_until_answers(running["port"], running["pid"], home, START_TIMEOUT_SECONDS)
            return endpoint_url(running["port"])

        listen_port = requested_port if requested_port is not None else DEFAULT_PORT
        if port_in_use(HOST, listen_port, PROBE_TIMEOUT_SECONDS):
            raise LocalDynamoDBError(
                f"port {listen_port} on {HOST} is already in use by another process; "
                f"set {PORT_ENV} to a free port (or stop that process)"
            )
        data_dir(home).mkdir(parents=True, exist_ok=True)
        command = [node, str(SERVER_SCRIPT), "--host", HOST, "--port", str(listen_port),
                   "--path", str(data_dir(home))]
        with open(log_file(home), "ab") as log:
            log.write(f"--- {_utc_now()} starting: {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command, cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )
        _CHILDREN[process.pid] = process
        _write_pid_file(home, process.pid, listen_port)
        try:
            _wait_until_answers(listen_port, process.pid, home, START_TIMEOUT_SECONDS)
        except LocalDynamoDBError:
            _terminate(process.pid)
            _remove_pid_file(home)
            raise
        return endpoint_url(listen_port)


def _terminate(pid: int) -> None:
    """SIGTERM, wait up to STOP_TIMEOUT_SECONDS, then SIGKILL; returns once the process is gone."""
    if not stop_by_pid(pid, signal.SIGTERM, STOP_TIMEOUT_SECONDS, _process_alive):
        raise LocalDynamoDBError(f"dynalite (pid {pid}) did not exit after SIGKILL")


def stop(home: Path | None = None) -> bool:
    """Stop the local DynamoDB of `home` by its PID. True if one was running."""
    with exclusive(_lock_file(home)):
        running = _live_record(home)     # also cleans a stale pid file
        if running is None:
            return False
        _terminate(running["pid"])
        _remove_pid_file(home)
        return True


def status(home: Path | None = None) -> LocalDynamoDBStatus:
    """Whether the local DynamoDB of `home` runs (pid file + live dynalite + port answers)."""
    record = _read_pid_file(home)
    pid = port = None
    running = False
    if record is not None and record["pid"] is not None:
        pid, port = record["pid"], record["port"]
        running = _process_alive(pid) and _is_dynalite(pid) and _port_answers(port)
    return LocalDynamoDBStatus(
        running=running, pid=pid, port=port,
        endpoint=endpoint_url(port) if running and port else None,
        data_dir=str(data_dir(home)), log_file=str(log_file(home)), pid_file=str(pid_file(home)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flashfeed.local.dynamodb",
        description="Start, stop or inspect the project's local DynamoDB (dynalite, data on disk).",
    )
    parser.add_argument("--home", type=Path, default=None,
                        help="state folder (default: FLASHFEED_HOME or ./.flashfeed)")
    commands = parser.add_subparsers(dest="command", required=True)
    start_cmd = commands.add_parser("start", help="start it unless it runs; print the endpoint")
    start_cmd.add_argument("--port", type=int, default=None,
                           help=f"port on {HOST} (default: {PORT_ENV} or {DEFAULT_PORT})")
    commands.add_parser("stop", help="stop it by its PID")
    status_cmd = commands.add_parser("status", help="exit 0 when it runs, 3 when it does not")
    status_cmd.add_argument("--json", action="store_true", help="print the status as JSON")
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            print(start(args.home, args.port))
            return 0
        if args.command == "stop":
            stopped = stop(args.home)
            print("stopped" if stopped else "not running")
            return 0
        state = status(args.home)
        if args.json:
            print(json.dumps(asdict(state)))
        elif state.running:
            print(f"running: pid {state.pid}, {state.endpoint}, data {state.data_dir}")
        else:
            print(f"not running (data {state.data_dir}, log {state.log_file})")
        return 0 if state.running else 3
    except LocalDynamoDBError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
