"""Commits wait for every reachable reader (so no crash failover loses an acknowledged write, as Aurora's shared
storage loses none), and Aurora clusters in AZ and region outages: losing the writer's AZ fails the cluster over to
a reader in another AZ (the writer endpoint flips, no acknowledged write is lost, the lost members leave the reader
endpoint) and the old writer rejoins as a reader when the AZ is back; losing a reader's AZ keeps the writer
serving; a region outage makes the whole cluster unreachable with no failover, and it streams again after the
heal."""
from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from faults.aurora import kill_writer
from faults.outage import az_outage, region_outage
from harness.clock import Clock
from harness.dns.resolver import ResolverHook
from harness.plugin.aurora import AuroraHandle
from harness.rds import replication as repl
from harness.rds.reconciler import RdsReconciler
from harness.wait import wait_until
from tests.rds.pgkit import Deadline, Writer, resolve


def address(db: AuroraHandle, member: str) -> str:
    host = db.cluster.members[member].host
    assert host is not None
    return host.address


def reader_addresses(db: AuroraHandle, clock: Clock, lookups: int = 8) -> set[str]:
    """Addresses the reader endpoint hands out over several lookups (each after its 5 s TTL)."""
    seen = set()
    for _ in range(lookups):
        clock.advance(6)
        seen.add(resolve(db.reader_endpoint))
    return seen


def sync_names(db: AuroraHandle) -> str:
    with db.connect() as conn:
        return str(conn.execute("SHOW synchronous_standby_names").fetchone()[0])


def test_commits_wait_for_every_reachable_reader_and_a_crash_loses_nothing(orders: AuroraHandle, clock: Clock,
                                                                           dns_resolver: ResolverHook) -> None:
    db = orders
    readers = [m.host.cluster.name for m in db.cluster.readers if m.host is not None]
    wait_until(lambda: sync_names(db).startswith("ANY 2 "), 10, what="the commit quorum of both readers")
    assert all(f'"{name}"' in sync_names(db) for name in readers)
    writer = Writer(lambda: db.connect(connect_timeout=1), op_timeout=1.0).start()
    wait_until(lambda: len(writer.acked) >= 300, 30, what="writes before the crash")
    with kill_writer(db) as fault:  # no wait for replication: every acknowledged commit is on both readers
        wait_until(lambda: db.writer() != fault.killed, 30, what="the automatic failover")
        clock.advance(6)
        t0 = time.monotonic()
        wait_until(lambda: writer.acked_at and writer.acked_at[-1] > t0, 30, what="writes after the failover")
    writer.finish()
    with db.connect() as conn:
        present = {r[0] for r in conn.execute("SELECT id FROM t")}
    lost = set(writer.acked) - present
    assert not lost, f"{len(lost)} acknowledged writes lost in a crash failover: {sorted(lost)[:10]}"
    # The new writer's commits wait for the other reader and, once rejoined, the old writer.
    db.wait_available(60)
    wait_until(lambda: sync_names(db).startswith("ANY 2 "), 20, what="the new writer's commit quorum")


def test_losing_the_writers_az_fails_over_to_another_az_and_loses_no_acknowledged_write(
        orders: AuroraHandle, clock: Clock, dns_resolver: ResolverHook) -> None:
    db = orders
    old = db.writer()
    az = db.cluster.members[old].az
    old_address = address(db, old)
    writer = Writer(lambda: db.connect(connect_timeout=1), op_timeout=1.0).start()
    wait_until(lambda: len(writer.acked) >= 200, 30, what="writes before the outage")
    with az_outage(az):
        new = db.writer()
        assert new != old
        assert db.cluster.members[new].az != az
        clock.advance(6)  # the writer endpoint's TTL passes
        assert resolve(db.writer_endpoint) == address(db, new)
        t0 = time.monotonic()
        wait_until(lambda: writer.acked_at and writer.acked_at[-1] > t0, 30, what="writes after the failover")
        # The lost AZ's members are out of the reader endpoint; the old writer is a blackhole.
        assert old_address not in reader_addresses(db, clock)
        t1 = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host=old_address, port=db.port, user=db.user, password=db.password, dbname=db.dbname,
                            connect_timeout=1).close()
        assert time.monotonic() - t1 >= 0.9, "a lost AZ answers nothing: connects time out, not refused"
        during = len(writer.acked)
    writer.finish()
    assert len(writer.acked) >= during
    db.wait_available(60)
    with db.connect() as conn:
        present = {r[0] for r in conn.execute("SELECT id FROM t")}
    lost = set(writer.acked) - present
    assert not lost, f"{len(lost)} acknowledged writes lost (Aurora's shared storage loses none): {sorted(lost)[:10]}"
    # The old writer rejoined as a reader, streaming from the new writer, back in the reader endpoint.
    desc = db.describe()
    assert {m["DBInstanceIdentifier"]: m["IsClusterWriter"] for m in desc["DBClusterMembers"]}[old] is False
    with db.connect(old) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    assert address(db, old) in reader_addresses(db, clock, lookups=12)


def test_losing_a_readers_az_keeps_the_writer_and_the_reader_catches_up(
        orders: AuroraHandle, clock: Clock, dns_resolver: ResolverHook) -> None:
    db = orders
    writer_id = db.writer()
    reader = next(i for i in db.instances if i != writer_id)
    az = db.cluster.members[reader].az
    assert az != db.cluster.members[writer_id].az
    with az_outage(az):
        assert db.writer() == writer_id
        assert address(db, reader) not in reader_addresses(db, clock)
        assert sync_names(db).startswith("ANY 1 ")
        with db.connect() as conn:  # commits do not wait for the lost reader
            for i in range(1, 51):
                with Deadline(conn, 5.0):
                    conn.execute("INSERT INTO t (id) VALUES (%s)", (i,))
    db.wait_replicated(30)
    with db.connect(reader) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (50,)
    assert address(db, reader) in reader_addresses(db, clock, lookups=12)


def test_region_outage_cuts_the_whole_cluster_without_failover(orders: AuroraHandle, rds: RdsReconciler,
                                                               clock: Clock, dns_resolver: ResolverHook) -> None:
    db = orders
    writer_id = db.writer()
    with db.connect() as conn:
        conn.execute("INSERT INTO t (id) VALUES (1)")
    outage = region_outage(db.region, reconciler=rds)
    assert any(p.kind == "aurora_region_outage" for p in outage.parts)
    with outage:
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host=address(db, writer_id), port=db.port, user=db.user, password=db.password,
                            dbname=db.dbname, connect_timeout=1).close()
        assert time.monotonic() - t0 >= 0.9
        cluster = db.cluster  # (the region's RDS API is down too)
        assert cluster.writer is not None and cluster.writer.identifier == writer_id, "nowhere to fail over to"
        assert all(m.host is not None and m.host.net_cuts for m in db.cluster.members.values())
    assert db.writer() == writer_id
    with db.connect() as conn:
        conn.execute("INSERT INTO t (id) VALUES (2)")
    writer_host = db.cluster.members[writer_id].host
    assert writer_host is not None
    for member in db.cluster.readers:
        assert member.host is not None
        repl.wait_caught_up(writer_host.cluster, member.host.cluster, 30)
        with db.connect(member.identifier) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_an_fis_experiment_started_through_the_api_cuts_the_writers_az(orders: AuroraHandle, aws: Any,
                                                                       clock: Clock) -> None:
    """StartExperiment with aws:network:disrupt-connectivity (scope availability-zone) on a subnet of the writer's
    AZ: the cluster fails over to another AZ while the experiment runs and is whole again once it completes."""
    db = orders
    old = db.writer()
    az = db.cluster.members[old].az
    ec2, fis = aws.client("ec2"), aws.client("fis")
    subnet = next(s for s in ec2.describe_subnets()["Subnets"] if s["AvailabilityZone"] == az)
    ec2.create_tags(Resources=[subnet["SubnetId"]], Tags=[{"Key": "drill", "Value": "az"}])
    template = fis.create_experiment_template(
        clientToken="az", description="lose the writer's AZ", roleArn="arn:aws:iam::123456789012:role/fis",
        stopConditions=[{"source": "none"}],
        targets={"subnets": {"resourceType": "aws:ec2:subnet", "resourceTags": {"drill": "az"},
                             "selectionMode": "ALL"}},
        actions={"cut": {"actionId": "aws:network:disrupt-connectivity", "targets": {"Subnets": "subnets"},
                         "parameters": {"scope": "availability-zone", "duration": "PT2M"}}})["experimentTemplate"]
    experiment_id = fis.start_experiment(experimentTemplateId=template["id"])["experiment"]["id"]
    wait_until(lambda: db.writer() != old, 30, what="the failover to another AZ")
    assert db.cluster.members[db.writer()].az != az
    wait_until(lambda: fis.get_experiment(id=experiment_id)["experiment"]["state"]["status"] == "completed", 60,
               what="the experiment to complete (PT2M at the fast time scale: 1.2 s)")
    db.wait_available(60)
    with db.connect(old) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
