"""Airflow's local PostgreSQL (flashfeed/local/postgres.py): a real server from the pinned wheel,
on 127.0.0.1 only, password protected, idempotent start, one database per name, data kept
across restarts, stopped by its own PID."""
from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import psycopg2
import pytest

from flashfeed.local import postgres
from flashfeed.local.daemons import pid_alive
from tests.conftest import LOOPBACK_HEX, free_port, listening_ports, server_home


@pytest.fixture(scope="module")
def server():
    with server_home() as home:
        port = free_port()
        url = postgres.start(home, port)
        try:
            yield {"home": home, "port": port, "url": url}
        finally:
            postgres.stop(home)


@pytest.fixture
def own_home():
    with server_home() as home:
        yield home


def connect(server, database="airflow", **extra):
    return psycopg2.connect(host="127.0.0.1", port=server["port"], user=postgres.SUPERUSER, dbname=database,
                            connect_timeout=5, **extra)


def test_it_listens_on_loopback_only_and_asks_for_a_password(server):
    record = json.loads(postgres.pid_file(server["home"]).read_text())
    ports = listening_ports(record["pid"])
    assert set(ports) == {server["port"]} and ports[server["port"]] <= LOOPBACK_HEX
    assert not list(postgres.data_dir(server["home"]).glob(".s.PGSQL.*"))         # no Unix socket either
    assert server["url"] == f"postgresql+psycopg2://flashfeed@127.0.0.1:{server['port']}/airflow"
    with pytest.raises(psycopg2.OperationalError, match="password"):
        connect(server, passfile="/nonexistent")
    pgpass = postgres.password_file(server["home"])
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    with connect(server, passfile=str(pgpass)) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        assert cursor.fetchone()[0].startswith("18.")   # Airflow 3.3 supports PostgreSQL 14 to 18


def test_start_again_returns_the_running_server_and_adds_databases(server):
    pid = json.loads(postgres.pid_file(server["home"]).read_text())["pid"]
    assert postgres.start(server["home"], server["port"]) == server["url"]
    url = postgres.start(server["home"], server["port"], database="airflow_other_home")
    assert url.endswith("/airflow_other_home")
    assert json.loads(postgres.pid_file(server["home"]).read_text())["pid"] == pid
    with connect(server, "airflow_other_home", passfile=str(postgres.password_file(server["home"]))):
        pass
    with pytest.raises(postgres.LocalPostgresError, match="already runs on port"):
        postgres.start(server["home"], free_port())


def test_a_port_taken_by_another_process_is_a_clear_error(own_home):
    tmp_path = own_home
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(postgres.LocalPostgresError, match="already in use.*FLASHFEED_POSTGRES_PORT"):
            postgres.start(tmp_path, other.getsockname()[1])
    assert not postgres.pid_file(tmp_path).exists()


def test_ensure_running_uses_the_server_the_environment_names_and_leaves_other_databases_alone(server, tmp_path):
    env = {"FLASHFEED_HOME": str(tmp_path), postgres.PORT_ENV: str(server["port"]),
           "PGPASSFILE": str(postgres.password_file(server["home"])), "FLASHFEED_POSTGRES_DATABASE": "airflow_ensure"}
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = postgres.sqlalchemy_url(server["port"], "airflow_ensure")
    assert postgres.ensure_running(env) == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert not postgres.postgres_dir(tmp_path).exists()          # no second server for this home
    with connect(server, "airflow_ensure", passfile=env["PGPASSFILE"]):
        pass
    deployment = {**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow@db.internal/airflow"}
    assert postgres.ensure_running(deployment) is None


def test_data_survives_a_restart_and_stop_ends_the_server_by_its_pid(own_home):
    tmp_path = own_home
    port = free_port()
    postgres.start(tmp_path, port)
    pid = json.loads(postgres.pid_file(tmp_path).read_text())["pid"]
    passfile = str(postgres.password_file(tmp_path))
    server = {"port": port}
    with connect(server, passfile=passfile) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    assert postgres.stop(tmp_path) is True
    assert not pid_alive(pid) and not postgres.pid_file(tmp_path).exists()
    assert postgres.status(tmp_path).running is False
    assert postgres.stop(tmp_path) is False
    postgres.start(tmp_path, port)
    try:
        with connect(server, passfile=passfile) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT x FROM kept")
            assert cursor.fetchone() == (42,)
        assert postgres.status(tmp_path).running is True
    finally:
        postgres.stop(tmp_path)


def test_a_stale_pid_file_is_not_trusted(tmp_path):
    postgres.postgres_dir(tmp_path).mkdir(parents=True)
    postgres.pid_file(tmp_path).write_text(json.dumps({"pid": 2 ** 22 + 1, "port": 1}))
    assert postgres.stop(tmp_path) is False
    assert not postgres.pid_file(tmp_path).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs the server's own OS user")
def test_under_root_the_server_runs_as_its_own_unprivileged_user(server):
    pid = json.loads(postgres.pid_file(server["home"]).read_text())["pid"]
    assert Path(f"/proc/{pid}").stat().st_uid != 0
    assert postgres.data_dir(server["home"]).stat().st_uid != 0
