"""Aurora global databases: a secondary cluster in another region serves the primary's writes read-only within a
second; the global writer endpoint names the primary's writer; a switchover makes the secondary the primary with no
acknowledged write lost and the old primary a secondary; a failover with AllowDataLoss during a region outage
promotes the secondary at once, the old primary acknowledges nothing more and rejoins as a secondary after the
outage; the primary's own failover is followed by its secondaries."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from faults.aurora import kill_writer
from faults.outage import region_outage
from harness.clock import Clock
from harness.plugin.aurora import AuroraHandle
from harness.rds.reconciler import RdsReconciler
from harness.wait import wait_until
from tests.rds.pgkit import Writer, resolve

Make = Callable[..., AuroraHandle]
PASSWORD = "global-pass-1"


def connect(host: str, **kw: Any) -> Any:
    return psycopg.connect(host=host, port=5432, user="master", password=PASSWORD, dbname="app", autocommit=True,
                           connect_timeout=kw.pop("connect_timeout", 5), **kw)


class Globe:
    """A global database made through the RDS API: ``primary`` in us-east-1 (writer + 1 reader), ``secondary``
    in us-west-2 (2 instances)."""

    def __init__(self, aws: Any) -> None:
        self.east, self.west = aws.client("rds", region="us-east-1"), aws.client("rds", region="us-west-2")
        primary = self.east.create_db_cluster(DBClusterIdentifier="orders", Engine="aurora-postgresql",
                                              MasterUsername="master", MasterUserPassword=PASSWORD,
                                              DatabaseName="app")["DBCluster"]
        for name in ("orders-1", "orders-2"):
            self.east.create_db_instance(DBInstanceIdentifier=name, DBClusterIdentifier="orders",
                                         Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")
        self.wait("orders", self.east)
        self.global_cluster = self.east.create_global_cluster(
            GlobalClusterIdentifier="orders-global", SourceDBClusterIdentifier=primary["DBClusterArn"])["GlobalCluster"]
        secondary = self.west.create_db_cluster(DBClusterIdentifier="orders-dr", Engine="aurora-postgresql",
                                                GlobalClusterIdentifier="orders-global")["DBCluster"]
        for name in ("orders-dr-1", "orders-dr-2"):
            self.west.create_db_instance(DBInstanceIdentifier=name, DBClusterIdentifier="orders-dr",
                                         Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")
        self.wait("orders-dr", self.west)
        self.primary, self.secondary = primary, secondary
        with connect(primary["Endpoint"]) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY)")

    @staticmethod
    def wait(cluster: str, client: Any) -> None:
        def up() -> bool:
            found = client.describe_db_instances(Filters=[{"Name": "db-cluster-id", "Values": [cluster]}])
            return all(i["DBInstanceStatus"] == "available" for i in found["DBInstances"])

        wait_until(up, 60, what=f"{cluster}'s instances")

    def arn(self, which: str) -> str:
        return str((self.primary if which == "orders" else self.secondary)["DBClusterArn"])

    def writers(self) -> dict[str, bool]:
        found = self.east.describe_global_clusters(GlobalClusterIdentifier="orders-global")["GlobalClusters"][0]
        return {m["DBClusterArn"].rsplit(":", 1)[1]: m["IsWriter"] for m in found["GlobalClusterMembers"]}


@pytest.fixture
def globe(rds: RdsReconciler, aws: Any, dns_resolver: Any) -> Globe:
    return Globe(aws)


def count(host: str) -> int:
    with connect(host) as conn:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


def test_the_secondary_serves_the_primarys_writes_read_only(globe: Globe, clock: Clock) -> None:
    with connect(globe.primary["Endpoint"]) as conn:
        for i in range(1, 101):
            conn.execute("INSERT INTO t VALUES (%s)", (i,))
    wait_until(lambda: count(globe.secondary["ReaderEndpoint"]) == 100, 5, what="replication to us-west-2")
    with connect(globe.secondary["Endpoint"]) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO t VALUES (1000)")
    assert globe.writers() == {"orders": True, "orders-dr": False}
    endpoint = globe.global_cluster["Endpoint"]
    assert resolve(endpoint) == resolve(globe.primary["Endpoint"])
    with pytest.raises(ClientError, match="secondary cluster"):
        globe.west.failover_db_cluster(DBClusterIdentifier="orders-dr")


def test_switchover_loses_nothing_and_demotes_the_old_primary(globe: Globe, clock: Clock) -> None:
    writer = Writer(lambda: connect(globe.global_cluster["Endpoint"], connect_timeout=1), op_timeout=1.0).start()
    wait_until(lambda: len(writer.acked) >= 200, 30, what="writes before the switchover")
    answer = globe.east.switchover_global_cluster(GlobalClusterIdentifier="orders-global",
                                                  TargetDbClusterIdentifier=globe.arn("orders-dr"))
    assert answer["GlobalCluster"]["GlobalClusterIdentifier"] == "orders-global"
    assert globe.writers() == {"orders": False, "orders-dr": True}
    clock.advance(6)  # the endpoints' 5 s TTL
    assert resolve(globe.global_cluster["Endpoint"]) == resolve(globe.secondary["Endpoint"])
    t0 = time.monotonic()
    wait_until(lambda: writer.acked_at and writer.acked_at[-1] > t0, 30, what="writes after the switchover")
    writer.finish()
    with connect(globe.secondary["Endpoint"]) as conn:
        present = {r[0] for r in conn.execute("SELECT id FROM t")}
    lost = set(writer.acked) - present
    assert not lost, f"{len(lost)} acknowledged writes lost in a switchover: {sorted(lost)[:10]}"
    # The old primary is a secondary now: read-only, streaming from us-west-2.
    wait_until(lambda: count(globe.primary["ReaderEndpoint"]) == len(present), 30, what="us-east-1 to follow")
    with connect(globe.primary["Endpoint"]) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO t VALUES (-1)")
    with pytest.raises(ClientError, match="already the primary"):
        globe.east.switchover_global_cluster(GlobalClusterIdentifier="orders-global",
                                             TargetDbClusterIdentifier=globe.arn("orders-dr"))


def test_failover_in_a_region_outage_then_the_old_primary_rejoins(globe: Globe, rds: RdsReconciler,
                                                                  clock: Clock) -> None:
    with connect(globe.primary["Endpoint"]) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    wait_until(lambda: count(globe.secondary["ReaderEndpoint"]) == 1, 5, what="replication")
    old_writer = resolve(globe.primary["Endpoint"])
    with region_outage("us-east-1", reconciler=rds):
        with pytest.raises(ClientError, match="AllowDataLoss"):
            globe.west.failover_global_cluster(GlobalClusterIdentifier="orders-global",
                                               TargetDbClusterIdentifier=globe.arn("orders-dr"))
        globe.west.failover_global_cluster(GlobalClusterIdentifier="orders-global",
                                           TargetDbClusterIdentifier=globe.arn("orders-dr"), AllowDataLoss=True)
        clock.advance(6)
        with connect(globe.secondary["Endpoint"]) as conn:
            conn.execute("INSERT INTO t VALUES (2)")
    # The region is back (the heal waited for the clusters): the old writer rejoined as a replica of the new
    # primary; it never again acknowledges a write.
    assert not rds_rebuilding(rds)
    with connect(old_writer) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        wait_until(lambda: conn.execute("SELECT count(*) FROM t").fetchone() == (2,), 30, what="the old writer")
    clock.advance(6)
    wait_until(lambda: count(globe.primary["Endpoint"]) == 2, 30, what="us-east-1 to follow us-west-2")
    with connect(globe.primary["Endpoint"]) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO t VALUES (3)")


def rds_rebuilding(rds: RdsReconciler) -> set[str]:
    from harness.rds.aurora import aurora

    return set(aurora(rds).cluster("orders", "us-east-1").rebuild)


def test_the_secondary_follows_a_failover_of_the_primary(globe: Globe, clock: Clock) -> None:
    from harness.rds.aurora import aurora
    from harness.rds.reconciler import current_reconciler

    ext = aurora(current_reconciler())
    with kill_writer("orders", region="us-east-1"):
        pass
    clock.advance(6)
    with connect(globe.primary["Endpoint"]) as conn:
        conn.execute("INSERT INTO t VALUES (7)")
    assert ext.cluster("orders", "us-east-1").writer.identifier == "orders-2"  # type: ignore[union-attr]
    wait_until(lambda: count(globe.secondary["ReaderEndpoint"]) == 1, 30, what="us-west-2 to follow the new writer")


def test_a_switchover_that_cannot_run_changes_nothing(globe: Globe, rds: RdsReconciler, clock: Clock) -> None:
    with region_outage("us-east-1", reconciler=rds), pytest.raises(ClientError, match="reachable"):
        globe.west.switchover_global_cluster(GlobalClusterIdentifier="orders-global",
                                             TargetDbClusterIdentifier=globe.arn("orders-dr"))
    assert globe.writers() == {"orders": True, "orders-dr": False}
    with connect(globe.primary["Endpoint"]) as conn:  # not left fenced
        conn.execute("INSERT INTO t VALUES (1)")
    wait_until(lambda: count(globe.secondary["ReaderEndpoint"]) == 1, 10, what="replication")
