"""Multi-AZ failover on real PostgreSQL: no acknowledged write lost, DNS flips to the new primary, the old one is
fenced (blackholed), AZs swap in describe; the stale-DNS bug; crash and AZ-outage failovers; fence; fail back;
AWS-profile timing."""
from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from faults.database import az_outage, fence, force_failover, kill_primary
from harness.dns.resolver import ResolverHook
from harness.dns.server import DnsServer
from harness.plugin.rds import PostgresInstance
from harness.rds.reconciler import TIMINGS, RdsReconciler
from harness.wait import wait_until
from tests.rds.pgkit import Deadline, Writer

Make = Callable[..., PostgresInstance]


def resolve(name: str) -> str:
    return str(socket.getaddrinfo(name, 5432, type=socket.SOCK_STREAM)[0][4][0])


def rows(db: PostgresInstance) -> set[int]:
    with db.connect() as conn:
        return {r[0] for r in conn.execute("SELECT id FROM t")}


@pytest.fixture
def multi_az(postgres_instance: Make) -> PostgresInstance:
    db = postgres_instance("ha", multi_az=True)
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    return db


def writer_for(db: PostgresInstance) -> Writer:
    return Writer(lambda: db.connect(connect_timeout=2), op_timeout=2.0)


def test_failover_loses_no_acknowledged_write_and_flips_dns(multi_az: PostgresInstance, rds: RdsReconciler,
                                                            dns_resolver: ResolverHook,
                                                            record_property: Callable[[str, Any], None]) -> None:
    db = multi_az
    before = db.describe()
    assert before["MultiAZ"] is True
    assert (before["AvailabilityZone"], before["SecondaryAvailabilityZone"]) == ("us-east-1a", "us-east-1b")
    inst = db.instance
    old, new = inst.primary, inst.standby
    assert new is not None and resolve(db.address) == old.address
    writer = writer_for(db).start()
    wait_until(lambda: len(writer.acked) >= 200, 30, what="writes before the failover")
    t0 = time.monotonic()
    answer = db.client.reboot_db_instance(DBInstanceIdentifier=db.identifier, ForceFailover=True)
    assert answer["DBInstance"]["DBInstanceStatus"] == "rebooting"
    wait_until(lambda: writer.acked_at and writer.acked_at[-1] > t0 + 0.05, 60, what="writes after the failover")
    writer.finish()
    recovered = next(at for at in writer.acked_at if at > t0) - t0
    record_property("client_recovery_s", round(recovered, 3))
    present = rows(db)
    lost = set(writer.acked) - present
    assert not lost, f"{len(lost)} acknowledged writes lost: {sorted(lost)[:10]}"
    assert len(writer.acked) > 200
    after = db.describe()
    assert (after["AvailabilityZone"], after["SecondaryAvailabilityZone"]) == ("us-east-1b", "us-east-1a")
    assert after["DBInstanceStatus"] == "available"
    dns_resolver.flush()
    assert resolve(db.address) == new.address != old.address
    assert inst.primary is new and rds.fleet.is_cut(old.proxy)
    messages = [e["Message"] for e in db.client.describe_events(SourceIdentifier=db.identifier,
                                                                 SourceType="db-instance")["Events"]]
    assert messages.index("Multi-AZ instance failover started.") < messages.index(
        "Multi-AZ instance failover completed.")


def test_stale_dns_cache_keeps_hitting_the_fenced_primary(multi_az: PostgresInstance, dns: DnsServer,
                                                          rds: RdsReconciler) -> None:
    """The classic bug: an app that caches DNS far beyond the TTL keeps connecting to the old primary, which
    is blackholed: it times out (no error, no reset), while a fresh lookup reaches the new primary."""
    db = multi_az
    old = db.instance.primary
    stale = ResolverHook(dns, min_ttl=300)
    with stale:
        assert resolve(db.address) == old.address
        held = db.connect()
        held.execute("INSERT INTO t VALUES (1)")
    rds.force_failover(db.identifier)
    with stale:
        assert stale.cached(db.address) == (old.address,)
        t0 = time.perf_counter()
        with pytest.raises(psycopg.OperationalError):
            db.connect(connect_timeout=2)
        waited = time.perf_counter() - t0
        assert waited >= 1.9, f"refused after {waited:.2f}s: a fenced host blackholes, it does not refuse"
    # A connection made before the failover hangs: no answer, no reset.
    done = threading.Event()

    def query() -> None:
        with Deadline(held, 3.0), contextlib.suppress(psycopg.Error):
            held.execute("SELECT 1")
        done.set()

    t = threading.Thread(target=query, daemon=True)
    t.start()
    assert not done.wait(1.0), "a query on the fenced primary answered"
    assert done.wait(10)
    held.close()
    with ResolverHook(dns):
        assert resolve(db.address) == db.instance.primary.address
        with db.connect() as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
            conn.execute("INSERT INTO t VALUES (2)")


def test_crash_of_the_primary_fails_over_by_itself(multi_az: PostgresInstance, dns_resolver: ResolverHook) -> None:
    db = multi_az
    old = db.instance.primary
    writer = writer_for(db).start()
    wait_until(lambda: len(writer.acked) >= 100, 30)
    with kill_primary(db) as fault:
        wait_until(lambda: db.instance.primary is not old, 30, what="the automatic failover")
        assert fault.describe()["killed_host"] == old.name
    n = len(writer.acked)
    wait_until(lambda: len(writer.acked) > n + 20, 60, what="writes after the crash")
    writer.finish()
    assert not set(writer.acked) - rows(db)
    desc = db.describe()
    assert (desc["AvailabilityZone"], desc["SecondaryAvailabilityZone"]) == ("us-east-1b", "us-east-1a")
    assert db.instance.standby is old and old.cluster.in_recovery()  # rebuilt as the new standby


def test_single_az_crash_restarts_with_committed_data(postgres_instance: Make) -> None:
    db = postgres_instance()
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
    with kill_primary(db):
        with pytest.raises(psycopg.OperationalError):
            db.connect(connect_timeout=2).execute("SELECT 1")
    assert rows(db) == set(range(1, 101))
    messages = [e["Message"] for e in db.client.describe_events(SourceIdentifier=db.identifier,
                                                                 SourceType="db-instance")["Events"]]
    assert messages[-2:] == ["DB instance shutdown", "DB instance restarted"]


def test_fence_blackholes_then_heals(postgres_instance: Make) -> None:
    db = postgres_instance()
    with fence(db):
        t0 = time.perf_counter()
        with pytest.raises(psycopg.OperationalError):
            db.connect(connect_timeout=2)
        assert time.perf_counter() - t0 >= 1.9
    with db.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_az_outage(postgres_instance: Make, multi_az: PostgresInstance, dns_resolver: ResolverHook) -> None:
    single_a = postgres_instance("solo-a", az="us-east-1a")
    single_b = postgres_instance("solo-b", az="us-east-1b")
    old = multi_az.instance.primary
    with multi_az.connect() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    with az_outage("us-east-1", "us-east-1a"):
        dns_resolver.flush()
        desc = multi_az.describe()
        assert desc["AvailabilityZone"] == "us-east-1b" and desc["SecondaryAvailabilityZone"] == "us-east-1a"
        with multi_az.connect() as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
            conn.execute("INSERT INTO t VALUES (2)")  # no standby to wait for: commits go on
        with pytest.raises(psycopg.OperationalError):
            single_a.connect(connect_timeout=2)
        with single_b.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    with single_a.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    standby = multi_az.instance.standby
    assert standby is old and standby.az == "us-east-1a" and standby.cluster.in_recovery()
    assert rows(multi_az) == {1, 2}


def test_fail_back(multi_az: PostgresInstance, dns_resolver: ResolverHook) -> None:
    db = multi_az
    with force_failover(db) as fault:
        pass
    assert fault.took is not None and fault.took < 5
    assert db.describe()["AvailabilityZone"] == "us-east-1b"
    with force_failover(db):
        pass
    desc = db.describe()
    assert (desc["AvailabilityZone"], desc["SecondaryAvailabilityZone"]) == ("us-east-1a", "us-east-1b")
    dns_resolver.flush()
    with db.connect() as conn:
        conn.execute("INSERT INTO t VALUES (1)")


@pytest.fixture
def aws_profile(rds: RdsReconciler) -> Iterator[RdsReconciler]:
    saved = rds.timings
    # The AWS profile with a short failover delay: calls return at once, the work runs in the background.
    rds.timings = dataclasses.replace(TIMINGS["aws"], failover_delay=2.0, monitor_interval=0.05)
    try:
        yield rds
    finally:
        rds.timings = saved


def test_aws_profile_shows_the_transitions(multi_az: PostgresInstance, aws_profile: RdsReconciler) -> None:
    db = multi_az
    t0 = time.perf_counter()
    db.client.reboot_db_instance(DBInstanceIdentifier=db.identifier, ForceFailover=True)
    assert time.perf_counter() - t0 < 1.5, "the API call waited for the failover"
    assert db.describe()["DBInstanceStatus"] == "rebooting"
    wait_until(lambda: db.describe()["DBInstanceStatus"] == "available", 30, interval=0.02)
    assert time.perf_counter() - t0 >= 2.0
    assert db.describe()["AvailabilityZone"] == "us-east-1b"
