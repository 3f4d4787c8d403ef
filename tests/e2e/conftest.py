"""Session-wide fixtures of the end-to-end tests (every test here is marked `e2e` by
tests/conftest.py; the helpers they use are in tests/e2e/helpers.py).

`demo_world`: `demo_world(lake, members=, days=, end_date=, seed=)` puts the generated demo world
of those parameters into the folder `lake`. Each world is generated once per session (by the
generator `flashfeed demo-data` runs; its command line is tested in tests/unit/test_demo_data.py)
and copied to every test that asks for it: the lake is the test's own to write to, and the copy
is the same bytes as a fresh generation (the generator is deterministic for its parameters and
writes no absolute paths).
`airflow_postgres` (autouse): one PostgreSQL for the session, on a free 127.0.0.1 port, stopped
by its PID at the end; each test home gets its own Airflow database on it (tests/e2e/helpers.py
e2e_env), so tests do not see each other's runs and pay no server start-up each.
`uci_csv`: the UCI Online Retail sample converted by `flashfeed uci-to-csv`, once per session
(events.csv and items.csv); skipped where the sample is not on this machine.
"""
from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import UCI_SAMPLE, free_port, server_home
from tests.e2e import helpers
from tests.e2e.helpers import e2e_env, flashfeed


@pytest.fixture(scope="session", autouse=True)
def airflow_postgres():
    from flashfeed.local import postgres

    with server_home() as home:
        port = free_port()
        postgres.start(home, port)
        helpers.POSTGRES.update({postgres.PORT_ENV: str(port), "PGPASSFILE": str(postgres.password_file(home))})
        try:
            yield helpers.POSTGRES
        finally:
            helpers.POSTGRES.clear()
            postgres.stop(home)


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory):
    generated: dict[tuple, Path] = {}

    def copy_to(lake_root: str | Path, *, members: int, days: int, end_date: str, seed: int) -> str:
        key = (members, days, end_date, seed)
        if key not in generated:
            from flashfeed.demo import generator

            lake = tmp_path_factory.mktemp(f"demo-world-{members}-{days}-{end_date}-{seed}") / "lake"
            generator.generate(str(lake), members=members, days=days, end_date=date.fromisoformat(end_date), seed=seed)
            generated[key] = lake
        assert not Path(lake_root).exists(), f"{lake_root} exists already"
        shutil.copytree(generated[key], lake_root)
        return str(lake_root)

    return copy_to


@pytest.fixture(scope="session")
def uci_csv(tmp_path_factory) -> dict[str, Path]:
    if not UCI_SAMPLE.is_file():
        pytest.skip(f"the UCI sample is not at {UCI_SAMPLE}")
    folder = tmp_path_factory.mktemp("uci-csv")
    flashfeed(["uci-to-csv", "--csv", str(UCI_SAMPLE), "--out", str(folder / "csv")], e2e_env(folder / "home"))
    return {"events": folder / "csv" / "events.csv", "items": folder / "csv" / "items.csv"}
