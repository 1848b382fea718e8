"""An RDS Proxy in front of an Aurora cluster (DBClusterIdentifiers): it reaches the writer, keeps its endpoint when
the cluster fails over (the writer endpoint's DNS flip does not matter to its clients), and follows the new writer;
a writer crash is followed too."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg

from faults.aurora import kill_writer
from harness.dns.resolver import ResolverHook
from harness.plugin.aurora import AuroraHandle
from harness.wait import wait_until
from tests.rds.pgkit import Deadline

Make = Callable[..., AuroraHandle]


def proxy_for(db: AuroraHandle, aws: Any, name: str) -> dict[str, Any]:
    secret = aws.client("secretsmanager").create_secret(
        Name=f"{name}-login", SecretString=json.dumps({"username": db.user, "password": db.password}))["ARN"]
    subnets = [s["SubnetId"] for s in aws.client("ec2").describe_subnets()["Subnets"][:2]]
    db.client.create_db_proxy(DBProxyName=name, EngineFamily="POSTGRESQL", RoleArn="arn:aws:iam::123456789012:role/p",
                              Auth=[{"AuthScheme": "SECRETS", "SecretArn": secret, "IAMAuth": "DISABLED"}],
                              VpcSubnetIds=subnets)
    db.client.register_db_proxy_targets(DBProxyName=name, DBClusterIdentifiers=[db.identifier])

    def ready() -> dict[str, Any] | None:
        desc: dict[str, Any] = db.client.describe_db_proxies(DBProxyName=name)["DBProxies"][0]
        targets = db.client.describe_db_proxy_targets(DBProxyName=name)["Targets"]
        healthy = any(t.get("TargetHealth", {}).get("State") == "AVAILABLE" for t in targets)
        return desc if desc["Status"] == "available" and healthy else None

    found: dict[str, Any] = wait_until(ready, 60, interval=0.05, what=f"RDS Proxy {name} to be available")
    return found


def through(db: AuroraHandle, endpoint: str, **kw: Any) -> Any:
    return psycopg.connect(db.dsn(), host=endpoint, autocommit=True, prepare_threshold=None,
                           **{"connect_timeout": 5, **kw})


def writes_again(db: AuroraHandle, endpoint: str, timeout: float = 30.0) -> float:
    """Seconds until a write through ``endpoint`` succeeds (each try a fresh connection with 2 s timeouts)."""
    t0 = time.monotonic()

    def write() -> bool:
        try:
            with through(db, endpoint, connect_timeout=2) as conn, Deadline(conn, 2.0):
                conn.execute("INSERT INTO t VALUES (DEFAULT)")
            return True
        except psycopg.Error:
            return False

    wait_until(write, timeout, interval=0.01, what=f"a write through {endpoint}")
    return time.monotonic() - t0


def server_of(db: AuroraHandle, endpoint: str) -> str:
    with through(db, endpoint) as conn:
        return str(conn.execute("SELECT current_setting('cluster_name')").fetchone()[0])


def test_proxy_keeps_its_endpoint_and_follows_the_new_writer(aurora_cluster: Make, aws: Any,
                                                             dns_resolver: ResolverHook) -> None:
    db = aurora_cluster("shop", readers=2)
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id serial PRIMARY KEY)")
    proxy = proxy_for(db, aws, "shop-proxy")
    endpoint = proxy["Endpoint"]
    cluster = db.cluster
    assert server_of(db, endpoint) == cluster.members["shop-1"].host.cluster.name
    held = through(db, endpoint)
    held.execute("INSERT INTO t VALUES (DEFAULT)")
    db.client.failover_db_cluster(DBClusterIdentifier="shop", TargetDBInstanceIdentifier="shop-3")
    assert writes_again(db, endpoint) < 5
    assert server_of(db, endpoint) == cluster.members["shop-3"].host.cluster.name
    # The client that stayed connected to the proxy goes on on the same connection.
    with Deadline(held, 5.0):
        held.execute("INSERT INTO t VALUES (DEFAULT)")
    held.close()
    assert db.client.describe_db_proxies(DBProxyName="shop-proxy")["DBProxies"][0]["Endpoint"] == endpoint


def test_proxy_follows_a_crash_failover(aurora_cluster: Make, aws: Any, dns_resolver: ResolverHook) -> None:
    db = aurora_cluster("crash", readers=1)
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (id serial PRIMARY KEY)")
    db.wait_replicated()  # the reader has the table before the writer dies
    endpoint = proxy_for(db, aws, "crash-proxy")["Endpoint"]
    with kill_writer(db):
        wait_until(lambda: db.writer() == "crash-2", 30, what="the automatic failover")
        assert writes_again(db, endpoint) < 10
    assert server_of(db, endpoint) == db.cluster.members["crash-2"].host.cluster.name
