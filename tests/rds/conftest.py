"""Fixtures for the RDS/PostgreSQL tests: a session engine and per-test clusters removed after each test."""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.rds.postgres import PgCluster, PgEngine
from tests.rds.pgkit import DB, MASTER, PASSWORD, next_name


@pytest.fixture(scope="session")
def engine() -> Iterator[PgEngine]:
    from harness.rds.pgbin import find_pg_bin
    from harness.rds.storage import data_base_dir
    from harness.runtime import get_runtime
    from harness.state import state_root

    rt = get_runtime()
    base = data_base_dir(state_root(), rt.run.path, "rds-tests")
    eng = PgEngine(find_pg_bin(), base, rt.hosts.allocate, template_root=state_root() / "pg-templates")
    yield eng
    eng.stop_all()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def new_cluster(engine: PgEngine) -> Iterator[Callable[..., PgCluster]]:
    """``new_cluster(**kw)``: a started primary with the master user and database ``app``."""
    made: list[PgCluster] = []

    def make(**kw: Any) -> PgCluster:
        c = engine.create_cluster(next_name(), **kw)
        made.append(c)
        c.create_master(MASTER, PASSWORD, DB)
        return c

    yield make
    for c in made:
        engine.drop(c)


@pytest.fixture
def track(engine: PgEngine) -> Iterator[Callable[[PgCluster], PgCluster]]:
    """Register clusters made by other means (standbys) for removal after the test."""
    made: list[PgCluster] = []

    def add(c: PgCluster) -> PgCluster:
        made.append(c)
        return c

    yield add
    for c in made:
        engine.drop(c)


@pytest.fixture
def orders(aurora_cluster: Callable[..., Any]) -> Any:
    """An Aurora cluster "orders" (writer and two readers) with a table ``t (id int PRIMARY KEY)``."""
    db = aurora_cluster("orders", readers=2)
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    return db
