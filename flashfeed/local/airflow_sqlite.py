"""Local Airflow's metadata database on SQLite: writers wait for each other instead of failing.

`make airflow`, `make demo` and the tests keep Airflow's metadata in SQLite, where the
scheduler, the API server and a CLI command such as `airflow backfill create` all write.
`flashfeed.local.env.project_env` points `[database] sql_alchemy_connect_args` at CONNECT_ARGS,
which fixes two ways a write fails with "database is locked" although waiting would work:

1. sqlite3 gives up on a held write lock after 5 s, which a busy scheduler on a small machine
   exceeds: wait up to a minute instead.
2. Airflow opens some transactions with a SAVEPOINT (`session.begin_nested()`, as backfill
   creation does for every run). Under Python's sqlite3 a SAVEPOINT outside a transaction
   starts a deferred one that first reads and later writes; if another process writes in
   between, SQLite refuses the write at once (waiting could deadlock, so no timeout helps),
   and RELEASE of that savepoint silently commits. Such a transaction is therefore begun with
   BEGIN IMMEDIATE: it takes the write lock first, waiting for it like any other write.
   (Upstream: apache/airflow#68699; Airflow's answer is "use PostgreSQL", as the compose
   stack does.)
"""
from __future__ import annotations

import sqlite3

WRITE_LOCK_WAIT_S = 60


class _Cursor(sqlite3.Cursor):
    def execute(self, sql, parameters=(), /):
        if not self.connection.in_transaction and sql.lstrip()[:9].upper() == "SAVEPOINT":
            super().execute("BEGIN IMMEDIATE")
        return super().execute(sql, parameters)


class SavepointWritesFirstConnection(sqlite3.Connection):
    """A sqlite3 connection whose SAVEPOINT outside a transaction begins it IMMEDIATE."""

    def cursor(self, factory=_Cursor):
        return super().cursor(factory)


CONNECT_ARGS = {"timeout": WRITE_LOCK_WAIT_S, "factory": SavepointWritesFirstConnection}
