"""Aurora failover on real PostgreSQL: the writer endpoint flips to the promoted reader and no acknowledged write is
lost; the old writer is a blackhole (connects time out, held connections hang) until it rejoins as a reader; a
client caching DNS too long keeps hitting it; a killed writer fails over by itself to the reader Aurora picks;
readers follow the new writer; reader lag; status transitions; FIS actions."""
from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from faults.aurora import kill_writer, reader_lag, writer_failover
from faults.fis import ExperimentRunner, Registry
from harness.clock import Clock
from harness.dns.resolver import ResolverHook
from harness.dns.server import DnsServer
from harness.plugin.aurora import AuroraHandle
from harness.rds.aurora import aurora
from harness.wait import wait_until
from tests.rds.pgkit import Deadline, Writer, resolve

Make = Callable[..., AuroraHandle]


def in_recovery(db: AuroraHandle, which: str) -> bool:
    with db.connect(which) as conn:
        return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])


def test_failover_flips_the_writer_endpoint_and_loses_no_acknowledged_write(orders: AuroraHandle, clock: Clock,
                                                                           dns_resolver: ResolverHook) -> None:
    db = orders
    old, target = db.instances[0], db.instances[2]
    old_address = db.cluster.members[old].host.address
    assert resolve(db.writer_endpoint) == old_address
    writer = Writer(lambda: db.connect(connect_timeout=2), op_timeout=2.0).start()
    wait_until(lambda: len(writer.acked) >= 200, 30, what="writes before the failover")
    answer = db.client.failover_db_cluster(DBClusterIdentifier=db.identifier, TargetDBInstanceIdentifier=target)
    assert answer["DBCluster"]["Status"] == "failing-over"
    clock.advance(6)  # the writer endpoint's 5 s TTL passes: clients ask DNS again
    t0 = time.monotonic()
    wait_until(lambda: writer.acked_at and writer.acked_at[-1] > t0, 30, what="writes after the failover")
    writer.finish()
    new_address = db.cluster.members[target].host.address
    assert resolve(db.writer_endpoint) == new_address != old_address
    with db.connect() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        present = {r[0] for r in conn.execute("SELECT id FROM t")}
    lost = set(writer.acked) - present
    assert not lost, f"{len(lost)} acknowledged writes lost: {sorted(lost)[:10]}"
    desc = db.describe()
    assert desc["Status"] == "available"
    assert {m["DBInstanceIdentifier"]: m["IsClusterWriter"] for m in desc["DBClusterMembers"]} == \
        {old: False, db.instances[1]: False, target: True}
    assert db.writer() == target


def test_old_writer_is_a_blackhole_until_it_rejoins_as_a_reader(orders: AuroraHandle, dns_resolver: ResolverHook,
                                                                 clock: Clock) -> None:
    db = orders
    old = db.instances[0]
    held = db.connect(old)
    held.execute("INSERT INTO t VALUES (1)")
    fault = writer_failover(db, hold_fence=True).start()
    assert fault.old_writer == old and fault.took is not None and fault.took < 5
    assert db.client.describe_db_instances(DBInstanceIdentifier=old)["DBInstances"][0]["DBInstanceStatus"] == \
        "rebooting"
    t0 = time.perf_counter()
    with pytest.raises(psycopg.OperationalError):
        db.connect(old, connect_timeout=2)
    waited = time.perf_counter() - t0
    assert waited >= 1.9, f"turned away after {waited:.2f}s: a fenced writer blackholes, it does not refuse"
    done = threading.Event()

    def query() -> None:
        with Deadline(held, 3.0), contextlib.suppress(psycopg.Error):
            held.execute("SELECT 1")
        done.set()

    threading.Thread(target=query, daemon=True).start()
    assert not done.wait(1.0), "a query on the fenced old writer answered"
    assert done.wait(10)
    held.close()
    # The reader endpoint never hands out the fenced member.
    fenced = db.cluster.members[old].dns_name
    for _ in range(4):
        assert fenced not in {str(v).rstrip(".") for v in db.reconciler.stack.dns.answer(db.reader_endpoint, "A")
                              .values("CNAME")}
    fault.stop()
    assert db.cluster.members[old].status == "available"
    assert in_recovery(db, old)
    with db.connect() as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    with db.connect(old) as conn:
        wait_until(lambda: conn.execute("SELECT count(*) FROM t").fetchone() == (2,), 10, what="the rejoined reader "
                   "to replay the new writer's rows")
    reached = set()
    for _ in range(8):
        with db.connect("reader") as conn:
            reached.add(conn.execute("SELECT current_setting('cluster_name')").fetchone()[0])
        clock.advance(6)
    assert db.cluster.members[old].host.cluster.name in reached


def test_a_client_caching_dns_too_long_keeps_hitting_the_fenced_old_writer(orders: AuroraHandle,
                                                                          dns: DnsServer) -> None:
    db = orders
    stale = ResolverHook(dns, min_ttl=300)
    with stale:
        old_address = resolve(db.writer_endpoint)
    with writer_failover(db, hold_fence=True):
        with stale:
            assert stale.cached(db.writer_endpoint) == (old_address,)
            t0 = time.perf_counter()
            with pytest.raises(psycopg.OperationalError):
                db.connect(connect_timeout=2)
            assert time.perf_counter() - t0 >= 1.9
        with ResolverHook(dns):
            with db.connect(connect_timeout=2) as conn:
                conn.execute("INSERT INTO t VALUES (1)")
                assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)


def test_a_killed_writer_fails_over_to_the_reader_aurora_picks(aurora_cluster: Make, dns_resolver: ResolverHook,
                                                               clock: Clock) -> None:
    db = aurora_cluster("crashy", readers=2, tiers=[5, 0])  # crashy-3 has the better promotion tier
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 50)")
    with db.connect("crashy-3") as conn:
        wait_until(lambda: conn.execute("SELECT count(*) FROM t").fetchone() == (50,), 10, what="replication",
                   ignore=(psycopg.errors.UndefinedTable,))
    with kill_writer(db) as fault:
        assert fault.killed == "crashy-1"
        wait_until(lambda: db.writer() == "crashy-3", 30, what="the automatic failover")
    clock.advance(6)
    with db.connect() as conn:
        conn.execute("INSERT INTO t VALUES (51)")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (51,)
    assert db.cluster.members["crashy-1"].status == "available" and in_recovery(db, "crashy-1")
    # The reader that was not promoted streams from the new writer.
    with db.connect("crashy-2") as conn:
        wait_until(lambda: conn.execute("SELECT count(*) FROM t").fetchone() == (51,), 15,
                   what="crashy-2 to follow the new writer")


def test_a_lone_writer_that_crashes_is_restarted(aurora_cluster: Make) -> None:
    db = aurora_cluster(readers=0)
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (1)")
    with kill_writer(db):
        pass
    assert db.writer() == db.instances[0]
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_reader_lag_serves_stale_reads_until_healed(orders: AuroraHandle) -> None:
    db = orders
    lagging, fresh = db.instances[1], db.instances[2]
    with db.connect(lagging) as conn:  # the table itself has reached the reader before it starts lagging
        wait_until(lambda: conn.execute("SELECT to_regclass('t') IS NOT NULL").fetchone() == (True,), 10,
                   what="the table on the reader")
    with reader_lag(db, lagging, 30):
        with db.connect() as conn:
            conn.execute("INSERT INTO t VALUES (7)")
        with db.connect(fresh) as conn:
            wait_until(lambda: conn.execute("SELECT count(*) FROM t").fetchone() == (1,), 10, what="the fresh reader")
        with db.connect(lagging) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with db.connect(lagging) as conn:
        wait_until(lambda: conn.execute("SELECT count(*) FROM t").fetchone() == (1,), 10, what="catch-up after heal")


def test_a_failover_that_cannot_promote_leaves_the_old_writer_serving(orders: AuroraHandle,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    from harness.errors import ServiceError
    from harness.rds import aurora as aurora_module

    def broken(*args: Any, **kwargs: Any) -> float:
        raise ServiceError("promotion timed out (injected)")

    monkeypatch.setattr(aurora_module.repl, "promote", broken)
    with pytest.raises(ClientError, match="promotion timed out"):
        orders.client.failover_db_cluster(DBClusterIdentifier=orders.identifier)
    monkeypatch.undo()
    assert orders.describe()["Status"] == "available"
    assert orders.writer() == orders.instances[0]
    with orders.connect(connect_timeout=3) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    orders.client.failover_db_cluster(DBClusterIdentifier=orders.identifier)  # and a later one works
    assert orders.writer() != orders.instances[0]


@pytest.fixture
def slow_failover(rds: Any) -> Iterator[None]:
    """Aurora timings with a failover and a rejoin that take a second each, so the transitions can be seen."""
    ext = aurora(rds)
    saved = ext.timings
    ext.timings = dataclasses.replace(saved, failover_delay=1.0, rejoin_delay=1.0)
    yield
    ext.timings = saved


def test_describe_shows_the_status_transitions(orders: AuroraHandle, slow_failover: None) -> None:
    db = orders
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        for _ in range(2000):
            desc = db.describe()
            old = db.client.describe_db_instances(DBInstanceIdentifier=db.instances[0])["DBInstances"][0]
            state = (desc["Status"], old["DBInstanceStatus"])
            if not seen or seen[-1] != state:
                seen.append(state)
            if done.is_set() and state == ("available", "available"):
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_until(lambda: seen, 10, what="the first describe")
    db.client.failover_db_cluster(DBClusterIdentifier=db.identifier)
    db.wait_available(30)
    done.set()
    watcher.join(30)
    assert seen[0] == ("available", "available")
    assert ("failing-over", "available") in seen
    assert ("available", "rebooting") in seen
    assert seen[-1] == ("available", "available")
    assert seen.index(("failing-over", "available")) < seen.index(("available", "rebooting"))


def fis_registry() -> Registry:
    from faults.fis import default_registry
    from faults.fis_emulator import register_all

    reg = default_registry.copy()
    register_all(reg)
    return reg


def test_fis_failover_db_cluster_and_reboot_of_a_member(orders: AuroraHandle, aws: Any) -> None:
    db = orders
    tpl = {"description": "aurora drill", "stopConditions": [{"source": "none"}],
           "roleArn": "arn:aws:iam::123456789012:role/fis",
           "targets": {"cluster": {"resourceType": "aws:rds:cluster", "resourceArns": [db.arn],
                                   "selectionMode": "ALL"},
                       "reader": {"resourceType": "aws:rds:db", "selectionMode": "ALL",
                                  "resourceArns": [db.cluster.members[db.instances[2]].arn]}},
           "actions": {"failover": {"actionId": "aws:rds:failover-db-cluster", "targets": {"Clusters": "cluster"}},
                       "reboot": {"actionId": "aws:rds:reboot-db-instances", "targets": {"DBInstances": "reader"},
                                  "startAfter": ["failover"]}}}
    before = db.writer()
    record = ExperimentRunner(tpl, registry=fis_registry(), extra={"endpoint": aws}).run()
    assert record.state == "completed", record.reason
    assert db.writer() != before
    db.wait_available(30)
    assert all(m.status == "available" for m in db.cluster.members.values())
