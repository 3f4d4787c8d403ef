"""Local Airflow on SQLite: a CLI write waits for a busy scheduler's lock instead of failing.

A CI run once failed `airflow backfill create` with "database is locked": sqlite3 gives up
after 5 s, and a scheduler on a two-core machine held the write lock longer than that. (The
other cause, a write refused at once inside a savepoint, is covered in
tests/unit/test_airflow_sqlite.py.)
"""
from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from flashfeed.local.airflow_sqlite import WRITE_LOCK_WAIT_S
from tests.e2e.helpers import e2e_env

# Longer than sqlite3's own 5 s plus the CLI's start-up, shorter than flashfeed's wait.
LOCK_HELD_S = 25


def test_airflow_cli_write_waits_for_a_held_sqlite_lock(tmp_path):
    assert WRITE_LOCK_WAIT_S > LOCK_HELD_S
    env = e2e_env(tmp_path)
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True)

    holder = sqlite3.connect(Path(env["AIRFLOW_HOME"], "airflow.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")   # the write lock, as a scheduler's transaction holds it
    started = time.monotonic()
    writer = subprocess.Popen(["airflow", "pools", "set", "waited_for_lock", "1", "written after the lock"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(LOCK_HELD_S)
    assert writer.poll() is None, f"the CLI did not wait for the lock:\n{writer.communicate()[0][-2000:]}"
    holder.execute("ROLLBACK")
    output = writer.communicate(timeout=120)[0]
    holder.close()

    assert writer.returncode == 0, output[-2000:]
    assert time.monotonic() - started >= LOCK_HELD_S
    pools = sqlite3.connect(Path(env["AIRFLOW_HOME"], "airflow.db"))
    assert pools.execute("SELECT slots FROM slot_pool WHERE pool = 'waited_for_lock'").fetchone() == (1,)
    pools.close()
