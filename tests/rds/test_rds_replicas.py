"""Read replicas: real async streaming (same and another region) with measured lag, promotion to a standalone
writable primary, lost tail on promotion, replica-lag and paused-replication faults."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from faults.base import FaultError
from faults.database import pause_replication, replica_lag
from harness.plugin.rds import PostgresInstance
from harness.rds.reconciler import RdsReconciler
from harness.wait import WaitTimeout, wait_until
from tests.rds.pgkit import Writer

Make = Callable[..., PostgresInstance]


def ids(db: PostgresInstance) -> set[int]:
    with db.connect() as conn:
        return {r[0] for r in conn.execute("SELECT id FROM t")}


def has(db: PostgresInstance, i: int) -> bool:
    with db.connect() as conn:
        return conn.execute("SELECT 1 FROM t WHERE id = %s", (i,)).fetchone() is not None


def never(pred: Callable[[], bool], seconds: float) -> bool:
    """True if ``pred`` stays false for ``seconds`` (a deliberate observation window, not a sync sleep)."""
    try:
        wait_until(pred, seconds, interval=0.05)
        return False
    except WaitTimeout:
        return True


@pytest.fixture
def source(postgres_instance: Make) -> PostgresInstance:
    db = postgres_instance("src")
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    return db


def test_replica_gets_the_data_with_measured_lag(postgres_instance: Make, source: PostgresInstance,
                                                 record_property: Callable[[str, Any], None]) -> None:
    replica = postgres_instance("src-ro", source=source)
    desc = replica.describe()
    assert desc["ReadReplicaSourceDBInstanceIdentifier"] == "src"
    assert source.describe()["ReadReplicaDBInstanceIdentifiers"] == ["src-ro"]
    assert replica.address == "src-ro.aaaaaaaaaa.us-east-1.rds.amazonaws.com"
    lags = []
    with source.connect() as conn, replica.connect() as ro:
        for i in range(1, 31):
            conn.execute("INSERT INTO t VALUES (%s)", (i,))
            t0 = time.perf_counter()
            wait_until(lambda i=i: ro.execute("SELECT 1 FROM t WHERE id = %s", (i,)).fetchone(), 10,  # type: ignore[misc]
                       interval=0.001, what=f"row {i} on the replica")
            lags.append(time.perf_counter() - t0)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            ro.execute("INSERT INTO t VALUES (1000)")
    record_property("replica_lag_p50_ms", round(statistics.median(lags) * 1000, 2))
    record_property("replica_lag_max_ms", round(max(lags) * 1000, 2))
    assert ids(replica) == set(range(1, 31))
    assert max(lags) < 5


def test_cross_region_replica(postgres_instance: Make, source: PostgresInstance, aws: Any) -> None:
    replica = postgres_instance("src-west", source=source, region="us-west-2")
    desc = replica.describe()
    assert replica.address == "src-west.aaaaaaaaaa.us-west-2.rds.amazonaws.com"
    assert desc["AvailabilityZone"] == "us-west-2a"
    assert desc["ReadReplicaSourceDBInstanceIdentifier"].endswith(":db:src")
    with source.connect() as conn:
        conn.execute("INSERT INTO t SELECT generate_series(1, 50)")
    wait_until(lambda: len(ids(replica)) == 50, 10, what="rows in the other region")
    replica.client.delete_db_instance(DBInstanceIdentifier="src-west", SkipFinalSnapshot=True)
    assert source.describe()["ReadReplicaDBInstanceIdentifiers"] == []


def test_promoted_replica_is_writable_and_stops_following(postgres_instance: Make, source: PostgresInstance,
                                                          rds: RdsReconciler) -> None:
    replica = postgres_instance("src-ro", source=source)
    with source.connect() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    wait_until(lambda: has(replica, 1), 10)
    answer = replica.client.promote_read_replica(DBInstanceIdentifier="src-ro")
    assert answer["DBInstance"]["DBInstanceStatus"] == "modifying"
    desc = replica.describe()
    assert desc["DBInstanceStatus"] == "available" and "ReadReplicaSourceDBInstanceIdentifier" not in desc
    assert source.describe()["ReadReplicaDBInstanceIdentifiers"] == []
    with replica.connect() as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    with source.connect() as conn:
        conn.execute("INSERT INTO t VALUES (3)")
    assert never(lambda: has(replica, 3), 1.0), "the old source's writes still reach the promoted replica"
    assert ids(replica) == {1, 2} and ids(source) == {1, 3}
    assert rds.instance("src-ro").primary.link_proxy is None
    messages = [e["Message"] for e in replica.client.describe_events(SourceIdentifier="src-ro",
                                                                      SourceType="db-instance")["Events"]]
    assert any("promoted" in m for m in messages)


def test_async_promotion_can_lose_the_tail(postgres_instance: Make, source: PostgresInstance, rds: RdsReconciler,
                                           record_property: Callable[[str, Any], None]) -> None:
    """Promote a replica while the source takes writes: what had not reached the replica is gone from it."""
    replica = postgres_instance("src-ro", source=source)
    writer = Writer(source.connect).start()
    wait_until(lambda: len(writer.acked) >= 300, 30, what="writes on the source")
    cutoff = len(writer.acked)
    acked_before = set(writer.acked[:cutoff])
    replica.client.promote_read_replica(DBInstanceIdentifier="src-ro")
    writer.finish()
    on_replica = ids(replica)
    natural_loss = len(acked_before - on_replica)
    record_property("tail_lost_streaming", natural_loss)
    print(f"promotion under load: {natural_loss} of {len(acked_before)} acknowledged writes missing on the replica")
    assert on_replica <= set(writer.acked), "the replica has rows the source never acknowledged"

    # Made visible: a replica whose link is down loses everything written meanwhile.
    second = postgres_instance("src-ro2", source=source)
    wait_until(lambda: ids(second) == ids(source), 10, what="the second replica to catch up")
    before = ids(source)
    with pause_replication(second), source.connect() as conn:
        conn.execute("INSERT INTO t SELECT generate_series(1000001, 1000100)")
        second.client.promote_read_replica(DBInstanceIdentifier="src-ro2")
    lost = ids(source) - ids(second)
    record_property("tail_lost_paused", len(lost))
    print(f"promotion with the link down: {len(lost)} acknowledged writes lost")
    assert lost == set(range(1000001, 1000101)) and ids(second) == before


def test_replica_lag_fault_makes_reads_stale(postgres_instance: Make, source: PostgresInstance) -> None:
    replica = postgres_instance("src-ro", source=source)
    with replica_lag(replica, 1.5) as fault:
        assert fault.describe()["seconds"] == 1.5
        with source.connect() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
        t0 = time.perf_counter()
        wait_until(lambda: has(replica, 1), 10, interval=0.01)
        seen = time.perf_counter() - t0
        assert 1.4 <= seen < 6, seen
    with source.connect() as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    t0 = time.perf_counter()
    wait_until(lambda: has(replica, 2), 10, interval=0.01)
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(FaultError, match="not a read replica"), replica_lag(source, 1):
        pass
    with pytest.raises(FaultError, match="> 0"):
        replica_lag(replica, 0)


def test_paused_replication_then_catch_up(postgres_instance: Make, source: PostgresInstance) -> None:
    replica = postgres_instance("src-ro", source=source)
    with pause_replication(replica):
        with source.connect() as conn:
            conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
        assert never(lambda: has(replica, 1), 1.0), "rows arrived through a paused replication link"
        with replica.connect() as ro:  # still serving, just stale
            assert ro.execute("SELECT count(*) FROM t").fetchone() == (0,)
    wait_until(lambda: len(ids(replica)) == 100, 10, what="the replica to catch up after the pause")
