"""RDS Proxy pooling on real PostgreSQL and PgBouncer: a Lambda-style storm of short clients exhausts a small
max_connections directly and all succeed through the proxy; ConnectionBorrowTimeout and IdleClientTimeout are
seen by clients; modify_db_proxy / modify_db_proxy_target_group take effect on the running proxy."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from faults.network import latency
from harness.rds.rdsproxy import set_max_connections
from harness.wait import wait_until

CLIENTS = 100
# PostgreSQL's two ways of saying max_connections is used up (the second when only superuser slots are left).
EXHAUSTED = ("too many clients already", "remaining connection slots are reserved")


def storm(connect: Callable[[], Any], clients: int = CLIENTS, hold: float = 0.3) -> dict[str, int]:
    """``clients`` threads start together; each connects, runs one query holding its session ``hold`` s,
    disconnects (a Lambda invocation). Counts outcomes."""
    results: dict[str, int] = {"ok": 0, "too many clients": 0, "other": 0}
    lock = threading.Lock()
    start = threading.Barrier(clients, timeout=60)

    def one() -> None:
        start.wait()
        try:
            with connect() as conn:
                conn.execute("SELECT pg_sleep(%s)", (hold,))
            outcome = "ok"
        except psycopg.OperationalError as exc:
            outcome = "too many clients" if any(text in str(exc) for text in EXHAUSTED) else "other"
        with lock:
            results[outcome] += 1

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "storm clients still running after 120 s"
    return results


def test_storm_exhausts_max_connections_directly_and_passes_through_the_proxy(
        postgres_instance: Any, rds: Any, rds_proxy: Any) -> None:
    db = postgres_instance("storm")
    set_max_connections(rds, "storm", 20)
    proxy = rds_proxy(db)
    assert proxy.endpoint.startswith(f"{proxy.name}.proxy-") and proxy.endpoint.endswith(
        ".us-east-1.rds.amazonaws.com")
    pool = next(r for r in proxy.running.bouncer.show("CONFIG") if r["key"] == "default_pool_size")["value"]
    assert pool == 17  # MaxConnectionsPercent 100 of 20, less the 3 superuser_reserved_connections

    direct = storm(lambda: db.connect(connect_timeout=10))
    assert direct["too many clients"] >= 25 and direct["other"] == 0, direct  # FATAL: sorry, too many clients
    assert direct["ok"] < CLIENTS // 2, direct  # the slots freed by finished clients serve a few late ones

    through = storm(lambda: proxy.connect(connect_timeout=10))
    assert through == {"ok": CLIENTS, "too many clients": 0, "other": 0}, through
    servers = db.instance.primary.cluster.value(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (db.user,))
    assert servers <= 17


def test_borrow_timeout_fails_a_client_that_waits_too_long(postgres_instance: Any, rds_proxy: Any) -> None:
    db = postgres_instance("borrow")
    proxy = rds_proxy(db, pool={"MaxConnectionsPercent": 1, "ConnectionBorrowTimeout": 1})
    assert proxy.client.describe_db_proxy_target_groups(DBProxyName=proxy.name)["TargetGroups"][0][
        "ConnectionPoolConfig"]["ConnectionBorrowTimeout"] == 1
    with proxy.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")  # the pool's only database connection, held by an open transaction
        t0 = time.perf_counter()
        with pytest.raises(psycopg.OperationalError, match="query_wait_timeout"), proxy.connect() as waiter:
            waiter.execute("SELECT 1")
        waited = time.perf_counter() - t0
        assert 0.9 <= waited < 6, waited
        holder.execute("COMMIT")
    with proxy.connect() as again:
        assert again.execute("SELECT 1").fetchone() == (1,)
    # A longer borrow timeout, changed on the running proxy: the waiter now outlasts the holder.
    proxy.client.modify_db_proxy_target_group(DBProxyName=proxy.name, TargetGroupName="default",
                                              ConnectionPoolConfig={"MaxConnectionsPercent": 1,
                                                                    "ConnectionBorrowTimeout": 30})
    with proxy.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        release = threading.Timer(1.5, lambda: holder.execute("COMMIT"))
        release.start()
        t0 = time.perf_counter()
        with proxy.connect() as waiter:
            assert waiter.execute("SELECT 2").fetchone() == (2,)
        assert time.perf_counter() - t0 >= 1.2
        release.join(10)


def test_idle_client_timeout_closes_idle_clients(postgres_instance: Any, rds_proxy: Any) -> None:
    db = postgres_instance("idle")
    proxy = rds_proxy(db)  # IdleClientTimeout 1800 s: nothing is closed for a while
    conn = proxy.connect()
    conn.execute("SELECT 1")
    proxy.client.modify_db_proxy(DBProxyName=proxy.name, IdleClientTimeout=1)
    assert proxy.describe()["IdleClientTimeout"] == 1
    bouncer = proxy.running.bouncer
    t0 = time.perf_counter()

    def clients() -> int:
        return len([c for c in bouncer.show("CLIENTS") if c["database"] == proxy.dbname])

    assert clients() == 1
    wait_until(lambda: clients() == 0, 15, interval=0.1, what="the idle client to be closed by the proxy")
    assert 0.8 <= time.perf_counter() - t0 < 10
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    with proxy.connect() as busy:  # a client that keeps working is not idle
        for _ in range(3):
            busy.execute("SELECT pg_sleep(0.5)")
        assert busy.execute("SELECT 1").fetchone() == (1,)


def test_network_faults_hit_the_proxy_endpoint(postgres_instance: Any, rds_proxy: Any) -> None:
    db = postgres_instance("netpx")
    proxy = rds_proxy(db)
    with proxy.connect() as conn:
        conn.execute("SELECT 1")
        with latency(proxy.fault_proxy, 150):
            t0 = time.perf_counter()
            conn.execute("SELECT 1")
            took = time.perf_counter() - t0
        assert 0.14 <= took < 1.5, took
        quickest = float("inf")
        for _ in range(5):  # healed: round trips are back to sub-millisecond (the best of a few, on a busy box)
            t0 = time.perf_counter()
            conn.execute("SELECT 1")
            quickest = min(quickest, time.perf_counter() - t0)
        assert quickest < 0.1, quickest
