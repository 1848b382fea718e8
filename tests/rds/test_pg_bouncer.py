"""PgBouncer primitive: config from parameters, pooling limits, timeouts, auth, retarget by RELOAD, stop."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from harness.errors import HarnessError
from harness.rds.pgbouncer import PgBouncer, PgBouncerConfig
from harness.rds.postgres import PgCluster
from harness.runtime import get_runtime
from harness.wait import wait_until
from tests.rds.pgkit import DB, MASTER, PASSWORD, connect, next_name


@pytest.fixture
def bouncer() -> Iterator[Callable[..., PgBouncer]]:
    made: list[PgBouncer] = []

    def make(target: PgCluster, **kw: Any) -> PgBouncer:
        rt = get_runtime()
        name = next_name()
        config = PgBouncerConfig(listen_host=rt.hosts.allocate(), listen_port=6432, target_host=target.host,
                                 target_port=target.port, users={MASTER: PASSWORD}, **kw)
        b = PgBouncer(name, config, rt.run.subdir(f"bouncer-{name}"))
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.stop()


def via(b: PgBouncer, password: str = PASSWORD, **kw: Any) -> psycopg.Connection[Any]:
    host, port = b.listen
    return psycopg.connect(host=host, port=port, user=MASTER, password=password, dbname=DB, autocommit=True,
                           prepare_threshold=None, connect_timeout=5, **kw)


def labelled(c: PgCluster, label: str) -> PgCluster:
    with connect(c) as conn:
        conn.execute("CREATE TABLE who (name text)")
        conn.execute("INSERT INTO who VALUES (%s)", (label,))
    return c


def test_many_clients_share_a_small_pool(new_cluster: Callable[..., PgCluster],
                                         bouncer: Callable[..., PgBouncer]) -> None:
    c = labelled(new_cluster(), "a")
    b = bouncer(c, default_pool_size=2, pool_mode="transaction")
    clients = [via(b) for _ in range(20)]
    try:
        for conn in clients:
            assert conn.execute("SELECT name FROM who").fetchone() == ("a",)
        pools = [p for p in b.show("POOLS") if p["database"] == DB]
        assert pools and pools[0]["cl_active"] + pools[0]["cl_waiting"] == 20
        assert pools[0]["sv_active"] + pools[0]["sv_idle"] + pools[0]["sv_used"] <= 2
        servers = c.value("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (MASTER,))
        assert servers <= 2
    finally:
        for conn in clients:
            conn.close()


def test_query_wait_timeout_fails_a_waiting_client(new_cluster: Callable[..., PgCluster],
                                                   bouncer: Callable[..., PgBouncer]) -> None:
    c = labelled(new_cluster(), "a")
    b = bouncer(c, default_pool_size=1, query_wait_timeout=1)
    holder = via(b)
    holder.execute("BEGIN")
    holder.execute("SELECT 1")  # holds the only server connection in its transaction
    t0 = time.perf_counter()
    with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"), via(b) as waiter:
        waiter.execute("SELECT 1")
    waited = time.perf_counter() - t0
    assert 0.9 <= waited < 5, waited
    holder.execute("COMMIT")
    with via(b) as again:
        assert again.execute("SELECT 1").fetchone() == (1,)
    holder.close()


def test_max_client_conn_and_auth(new_cluster: Callable[..., PgCluster], bouncer: Callable[..., PgBouncer]) -> None:
    c = labelled(new_cluster(), "a")
    b = bouncer(c, max_client_conn=3)
    with pytest.raises(psycopg.OperationalError, match=r"password authentication failed|SASL authentication failed"):
        via(b, password="wrong")
    held = [via(b) for _ in range(3)]
    with pytest.raises(psycopg.OperationalError, match=r"no more connections allowed \(max_client_conn\)"):
        via(b)
    held.pop().close()
    wait_until(lambda: via(b).close() is None, 10, ignore=(psycopg.OperationalError,), what="a free client slot")
    for conn in held:
        conn.close()


def test_client_idle_timeout_closes_idle_clients(new_cluster: Callable[..., PgCluster],
                                                 bouncer: Callable[..., PgBouncer]) -> None:
    c = labelled(new_cluster(), "a")
    b = bouncer(c, client_idle_timeout=1)
    conn = via(b)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    t0 = time.perf_counter()

    def app_clients() -> int:
        return len([r for r in b.show("CLIENTS") if r["database"] == DB])

    assert app_clients() == 1
    # Watched from the admin console, so the client itself stays idle.
    wait_until(lambda: app_clients() == 0, 10, interval=0.1, what="the idle client to be closed")
    assert 0.9 <= time.perf_counter() - t0 < 8
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()


def test_retarget_moves_connected_clients_to_the_new_server(new_cluster: Callable[..., PgCluster],
                                                            bouncer: Callable[..., PgBouncer]) -> None:
    old = labelled(new_cluster(), "old")
    new = labelled(new_cluster(), "new")
    b = bouncer(old, default_pool_size=4)
    clients = [via(b) for _ in range(5)]
    for conn in clients:
        assert conn.execute("SELECT name FROM who").fetchone() == ("old",)
    b.retarget(new.host, new.port)
    assert b.config.target_host == new.host
    for conn in clients:
        assert conn.execute("SELECT name FROM who").fetchone() == ("new",)
        conn.close()


def test_retarget_while_a_writer_runs(new_cluster: Callable[..., PgCluster],
                                      bouncer: Callable[..., PgBouncer]) -> None:
    old = labelled(new_cluster(), "old")
    new = labelled(new_cluster(), "new")
    b = bouncer(old)
    seen: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        with via(b) as conn:
            while not stop.is_set() and len(seen) < 100_000:
                try:
                    seen.append(conn.execute("SELECT name FROM who").fetchone()[0])  # type: ignore[index]
                except psycopg.Error as exc:
                    errors.append(str(exc))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_until(lambda: len(seen) > 10, 10, what="reads through the bouncer")
    b.retarget(new.host, new.port)
    wait_until(lambda: seen[-1] == "new", 10, what="reads to reach the new target")
    stop.set()
    t.join(10)
    assert not errors, errors[:3]
    switch = seen.index("new")
    assert set(seen[:switch]) == {"old"} and set(seen[switch:]) == {"new"}


def test_bad_parameters_and_stop(new_cluster: Callable[..., PgCluster], bouncer: Callable[..., PgBouncer]) -> None:
    c = new_cluster()
    with pytest.raises(HarnessError, match="pool_mode"):
        bouncer(c, pool_mode="sometimes")
    with pytest.raises(HarnessError, match="query_wait_timeout"):
        bouncer(c, query_wait_timeout=-1)
    b = bouncer(c)
    with via(b) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(HarnessError, match="listen address"):
        b.update(listen_port=6433)
    b.update(default_pool_size=7)
    assert next(r for r in b.show("CONFIG") if r["key"] == "default_pool_size")["value"] == 7
    b.stop()
    assert not b.running()
    with pytest.raises(psycopg.OperationalError):
        via(b)
