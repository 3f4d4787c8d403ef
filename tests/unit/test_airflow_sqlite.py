"""Airflow's SQLite connect args: the backfill-creation pattern survives a concurrent writer.

Airflow creates each backfill run in `session.begin_nested()`: a SAVEPOINT, a read, then a
write. A CI run failed `airflow backfill create` with "database is locked" when the scheduler
wrote between that read and that write. These tests run the same pattern through SQLAlchemy,
as Airflow does (WAL journal, as Airflow sets it), with another connection writing in between.
"""
from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from flashfeed.local.airflow_sqlite import CONNECT_ARGS

OTHER_WRITER_WAIT_S = 2


def _engine(path, connect_args):
    engine = create_engine(f"sqlite:///{path}", connect_args=connect_args)
    event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA journal_mode=WAL"))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE dag_run (id INTEGER PRIMARY KEY)"))
    return engine


def _other_writer(path, rows: list):
    """The scheduler: one committed write, waiting for the lock as long as it must."""
    def write():
        other = sqlite3.connect(path, timeout=60)
        other.execute("INSERT INTO dag_run VALUES (100)")
        other.commit()
        other.close()
        rows.append(100)
    thread = threading.Thread(target=write)
    thread.start()
    thread.join(OTHER_WRITER_WAIT_S)
    return thread, thread.is_alive()


def _create_runs_like_a_backfill(engine, path):
    """Commit one row, then per run: SAVEPOINT, read, (another process writes), insert."""
    others: list = []
    with Session(engine) as session:
        session.execute(text("INSERT INTO dag_run VALUES (1)"))
        session.commit()
        with session.begin_nested():
            session.execute(text("SELECT count(*) FROM dag_run")).scalar()
            writer, waited = _other_writer(path, others)
            session.execute(text("INSERT INTO dag_run VALUES (2)"))
        session.commit()
    return writer, waited, others


def test_plain_sqlite3_refuses_the_write_at_once(tmp_path):
    """What Airflow does without flashfeed's connect args: the write fails, whatever the timeout."""
    path = tmp_path / "airflow.db"
    with pytest.raises(OperationalError, match="database is locked"):
        _create_runs_like_a_backfill(_engine(path, {"timeout": 60}), path)


def test_the_savepoint_transaction_takes_the_lock_first_and_the_other_writer_waits(tmp_path):
    path = tmp_path / "airflow.db"
    engine = _engine(path, CONNECT_ARGS)
    writer, waited, others = _create_runs_like_a_backfill(engine, path)
    assert waited, "the other writer was not held back by the backfill's transaction"
    writer.join(30)
    assert others == [100]   # the scheduler's write went through, after the backfill's commit
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM dag_run ORDER BY id")).scalars().all() == [1, 2, 100]


@pytest.mark.parametrize("connect_args, rows_left", [({"timeout": 60}, 1), (CONNECT_ARGS, 0)],
                         ids=["plain-sqlite3", "flashfeed"])
def test_rolling_back_undoes_what_the_released_savepoint_wrote(tmp_path, connect_args, rows_left):
    """Plain sqlite3 commits on RELEASE of a savepoint that began the transaction, so a failed
    backfill's runs would stay behind; with the transaction begun first they roll back."""
    path = tmp_path / "airflow.db"
    with Session(_engine(path, connect_args)) as session:
        with session.begin_nested():
            session.execute(text("INSERT INTO dag_run VALUES (7)"))
        session.rollback()
        assert session.execute(text("SELECT count(*) FROM dag_run")).scalar() == rows_left
