"""Aurora PostgreSQL clusters through the RDS API on real PostgreSQL: endpoint names and DNS (TTL 5 s), writer and
readers, the reader endpoint spreading over readers, custom endpoints, parameter groups, members added and removed,
and the errors a user can cause."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from harness.clock import Clock
from harness.dns.resolver import ResolverHook
from harness.dns.server import DnsServer
from harness.plugin.aurora import AuroraHandle
from harness.wait import wait_until

Make = Callable[..., AuroraHandle]


def server_of(conn: Any) -> str:
    """The PostgreSQL server a connection reached (its cluster_name, unique per server)."""
    return str(conn.execute("SELECT current_setting('cluster_name')").fetchone()[0])


def names(handle: AuroraHandle) -> dict[str, str]:
    """member identifier -> its current server's cluster_name."""
    return {m.identifier: m.host.cluster.name for m in handle.cluster.members.values() if m.host is not None}


def test_cluster_has_aws_shaped_endpoints_served_with_ttl_5(aurora_cluster: Make, dns: DnsServer,
                                                             rds: Any) -> None:
    db = aurora_cluster("orders")
    desc = db.describe()
    assert re.fullmatch(r"orders\.cluster-[a-z0-9]+\.us-east-1\.rds\.amazonaws\.com", desc["Endpoint"])
    url_id = desc["Endpoint"].split(".")[1].removeprefix("cluster-")
    assert desc["ReaderEndpoint"] == f"orders.cluster-ro-{url_id}.us-east-1.rds.amazonaws.com"
    assert (desc["Status"], desc["Engine"]) == ("available", "aurora-postgresql")
    assert desc["EngineVersion"] == rds.engine.bins.version
    members = {m["DBInstanceIdentifier"]: m["IsClusterWriter"] for m in desc["DBClusterMembers"]}
    assert members == {"orders-1": True, "orders-2": False, "orders-3": False}
    cluster = db.cluster
    writer = dns.answer(db.writer_endpoint, "A")
    assert writer.values("A") == [cluster.members["orders-1"].host.address]
    assert {ttl for _, _, ttl, _ in writer.records} == {5}
    reader = dns.answer(db.reader_endpoint, "A")
    assert reader.records[0][1] == "CNAME" and reader.records[0][2] == 5
    instances = db.client.describe_db_instances(Filters=[{"Name": "db-cluster-id", "Values": ["orders"]}])
    for inst in instances["DBInstances"]:
        assert inst["DBInstanceStatus"] == "available"
        address = inst["Endpoint"]["Address"]
        assert dns.answer(address, "A").values("A") == [cluster.members[inst["DBInstanceIdentifier"]].host.address]


def test_writer_takes_writes_and_readers_serve_them_read_only(aurora_cluster: Make) -> None:
    db = aurora_cluster()
    with db.connect() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
    for reader in db.instances[1:]:
        with db.connect(reader) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            wait_until(lambda c=conn: c.execute("SELECT count(*) FROM t").fetchone() == (100,), 10,  # type: ignore[misc]
                       what=f"the rows on {reader}", ignore=(psycopg.errors.UndefinedTable,))
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO t VALUES (101)")


def test_reader_endpoint_spreads_over_the_readers_not_the_writer(aurora_cluster: Make, clock: Clock,
                                                                  dns_resolver: ResolverHook) -> None:
    db = aurora_cluster(readers=2)
    servers = names(db)
    reached = []
    for _ in range(6):
        with db.connect("reader") as conn:
            reached.append(server_of(conn))
        clock.advance(6)  # the 5 s TTL of the cached answer runs out: the next connect asks DNS again
    assert set(reached) == {servers[db.instances[1]], servers[db.instances[2]]}
    assert servers[db.instances[0]] not in reached
    # Within the TTL a client keeps the answer it has: the same reader every time.
    sticky = set()
    for _ in range(4):
        with db.connect("reader") as conn:
            sticky.add(server_of(conn))
    assert len(sticky) == 1


def test_reader_endpoint_answers_the_writer_when_there_are_no_readers(aurora_cluster: Make) -> None:
    db = aurora_cluster(readers=0)
    with db.connect("reader") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)


def test_custom_endpoints(aurora_cluster: Make, dns: DnsServer, clock: Clock, dns_resolver: ResolverHook) -> None:
    db = aurora_cluster("shop", readers=2)
    client, (w, r1, r2) = db.client, db.instances
    made = client.create_db_cluster_endpoint(DBClusterIdentifier="shop", DBClusterEndpointIdentifier="analytics",
                                             EndpointType="READER", StaticMembers=[r2])
    url_id = db.writer_endpoint.split(".")[1].removeprefix("cluster-")
    assert made["Endpoint"] == f"analytics.cluster-custom-{url_id}.us-east-1.rds.amazonaws.com"
    assert (made["EndpointType"], made["CustomEndpointType"], made["StaticMembers"]) == ("CUSTOM", "READER", [r2])
    servers = names(db)
    seen = set()
    for _ in range(4):
        with psycopg.connect(db.dsn(), host=made["Endpoint"], autocommit=True, connect_timeout=5) as conn:
            seen.add(server_of(conn))
        clock.advance(6)
    assert seen == {servers[r2]}
    listed = client.describe_db_cluster_endpoints(DBClusterIdentifier="shop")["DBClusterEndpoints"]
    assert sorted(e["EndpointType"] for e in listed) == ["CUSTOM", "READER", "WRITER"]
    changed = client.modify_db_cluster_endpoint(DBClusterEndpointIdentifier="analytics", EndpointType="ANY",
                                                StaticMembers=[], ExcludedMembers=[r1])
    assert (changed["CustomEndpointType"], changed["ExcludedMembers"]) == ("ANY", [r1])
    targets = {str(v).rstrip(".") for v in dns.static.records()[(made["Endpoint"], "CNAME")][0]}
    cluster = db.cluster
    assert targets == {cluster.members[w].dns_name, cluster.members[r2].dns_name}
    with pytest.raises(ClientError, match="READER or ANY"):
        client.create_db_cluster_endpoint(DBClusterIdentifier="shop", DBClusterEndpointIdentifier="bad",
                                          EndpointType="WRITER")
    with pytest.raises(ClientError, match="not in cluster shop"):
        client.create_db_cluster_endpoint(DBClusterIdentifier="shop", DBClusterEndpointIdentifier="bad",
                                          EndpointType="ANY", StaticMembers=["nope"])
    with pytest.raises(ClientError) as exc:
        client.create_db_cluster_endpoint(DBClusterIdentifier="shop", DBClusterEndpointIdentifier="analytics",
                                          EndpointType="ANY")
    assert exc.value.response["Error"]["Code"] == "DBClusterEndpointAlreadyExistsFault"
    client.delete_db_cluster_endpoint(DBClusterEndpointIdentifier="analytics")
    assert dns.answer(made["Endpoint"], "A").rcode == "NXDOMAIN"
    assert [e["EndpointType"] for e in client.describe_db_cluster_endpoints(
        DBClusterIdentifier="shop")["DBClusterEndpoints"]] == ["WRITER", "READER"]


def test_cluster_parameter_group_reaches_every_server(aurora_cluster: Make) -> None:
    db = aurora_cluster(parameters={"max_connections": "20", "statement_timeout": "5000"})
    for member in db.instances:
        with db.connect(member) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("20",)
            assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)


def test_members_come_and_go(aurora_cluster: Make, dns: DnsServer, dns_resolver: ResolverHook) -> None:
    db = aurora_cluster("pool", readers=1)
    added = db.add_reader("pool-extra", tier=0)
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (1)")
    with db.connect(added) as conn:
        wait_until(lambda: conn.execute("SELECT count(*) FROM t").fetchone() == (1,), 10, what="replication",
                   ignore=(psycopg.errors.UndefinedTable,))
    address = db.cluster.members["pool-2"].dns_name
    answer = db.client.delete_db_instance(DBInstanceIdentifier="pool-2", SkipFinalSnapshot=True)
    assert answer["DBInstance"]["DBInstanceStatus"] == "deleting"
    wait_until(lambda: "pool-2" not in db.cluster.members, 30, what="pool-2 to go")
    assert dns.answer(address, "A").rcode == "NXDOMAIN"
    # Deleting the writer fails over to a reader first, as Aurora does.
    db.client.delete_db_instance(DBInstanceIdentifier="pool-1", SkipFinalSnapshot=True)
    wait_until(lambda: "pool-1" not in db.cluster.members, 30, what="pool-1 to go")
    assert db.writer() == "pool-extra"
    dns_resolver.flush()
    with db.connect() as conn:
        conn.execute("INSERT INTO t VALUES (2)")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    with pytest.raises(ClientError, match="still contains DB instances"):
        db.client.delete_db_cluster(DBClusterIdentifier="pool", SkipFinalSnapshot=True)
    db.client.delete_db_instance(DBInstanceIdentifier="pool-extra", SkipFinalSnapshot=True)
    wait_until(lambda: not db.cluster.members, 30, what="the last member to go")
    assert db.client.delete_db_cluster(DBClusterIdentifier="pool", SkipFinalSnapshot=True)["DBCluster"]["Status"] \
        == "deleting"
    wait_until(lambda: dns.answer(db.writer_endpoint, "A").rcode == "NXDOMAIN", 10, what="the endpoint to go")


def test_reboot_of_a_reader_drops_its_connections_and_brings_it_back(aurora_cluster: Make) -> None:
    db = aurora_cluster(readers=1)
    reader = db.instances[1]
    conn = db.connect(reader)
    answer = db.client.reboot_db_instance(DBInstanceIdentifier=reader)
    assert answer["DBInstance"]["DBInstanceStatus"] == "rebooting"
    wait_until(lambda: db.cluster.members[reader].status == "available", 30, what="the reboot")
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    with db.connect(reader) as again:
        assert again.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_errors_a_user_can_cause(aurora_cluster: Make, aws: Any) -> None:
    client = aws.client("rds")
    with pytest.raises(ClientError) as exc:
        client.create_db_cluster(DBClusterIdentifier="my", Engine="aurora-mysql", MasterUsername="admin",
                                 MasterUserPassword="secret-pw-1")
    message = exc.value.response["Error"]["Message"]
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "aurora-mysql" in message and "Engine='aurora-postgresql'" in message
    with pytest.raises(ClientError, match="MasterUserPassword"):
        client.create_db_cluster(DBClusterIdentifier="nopw", Engine="aurora-postgresql", MasterUsername="admin")
    db = aurora_cluster("lone", readers=0)
    with pytest.raises(ClientError, match="master user name and password on the DB Cluster"):
        client.create_db_instance(DBInstanceIdentifier="lone-x", DBClusterIdentifier="lone",
                                  Engine="aurora-postgresql", DBInstanceClass="db.r6g.large", MasterUsername="admin",
                                  MasterUserPassword="pw-123456")
    with pytest.raises(ClientError, match="at least two database instances"):
        client.failover_db_cluster(DBClusterIdentifier="lone")
    with pytest.raises(ClientError, match="ForceFailover does not apply"):
        client.reboot_db_instance(DBInstanceIdentifier=db.instances[0], ForceFailover=True)
    db.add_reader("lone-2")
    with pytest.raises(ClientError, match="already the writer"):
        client.failover_db_cluster(DBClusterIdentifier="lone", TargetDBInstanceIdentifier=db.instances[0])
    with pytest.raises(ClientError, match="not a member of lone"):
        client.failover_db_cluster(DBClusterIdentifier="lone", TargetDBInstanceIdentifier="ghost")
    with pytest.raises(ClientError) as exc:
        client.describe_db_cluster_endpoints(DBClusterIdentifier="ghost")
    assert exc.value.response["Error"]["Code"] == "DBClusterNotFoundFault"
