"""Aurora benchmark: time to ready for a cluster (writer + 2 readers) through the RDS API; commit latency with the
commit quorum (every reader flushes before the ack) against a cluster without readers; failover RTO (fence +
catch-up + promotion + DNS flip, server side; and the write gap a client sees through the writer endpoint name and
through an RDS Proxy); RDS Proxy ready time in front of the cluster. Measured side by side in one run.

Run: python bench/bench_aurora.py [--clusters 3] [--failovers 5] [--rounds 15]   (loopback only, well under a minute)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.dns.resolver import ResolverHook  # noqa: E402
from harness.stack import Stack  # noqa: E402

PASSWORD = "bench-pass-1"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def create_cluster(client: Any, name: str, readers: int = 2) -> float:
    t0 = time.perf_counter()
    client.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql", MasterUsername="master",
                             MasterUserPassword=PASSWORD, DatabaseName="app")
    for i in range(readers + 1):
        client.create_db_instance(DBInstanceIdentifier=f"{name}-{i + 1}", DBClusterIdentifier=name,
                                  Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")
    took = time.perf_counter() - t0
    statuses = [i["DBInstanceStatus"] for i in client.describe_db_instances(
        Filters=[{"Name": "db-cluster-id", "Values": [name]}])["DBInstances"]]
    assert statuses == ["available"] * (readers + 1), statuses
    return took


def create_proxy(stack: Stack, client: Any, cluster: str) -> tuple[float, str]:
    aws = stack.aws
    secret = aws.client("secretsmanager").create_secret(
        Name=f"{cluster}-proxy", SecretString=json.dumps({"username": "master", "password": PASSWORD}))["ARN"]
    subnets = [s["SubnetId"] for s in aws.client("ec2").describe_subnets()["Subnets"][:2]]
    t0 = time.perf_counter()
    client.create_db_proxy(DBProxyName=f"{cluster}-proxy", EngineFamily="POSTGRESQL",
                           RoleArn="arn:aws:iam::123456789012:role/proxy", VpcSubnetIds=subnets,
                           Auth=[{"AuthScheme": "SECRETS", "SecretArn": secret, "IAMAuth": "DISABLED"}])
    client.register_db_proxy_targets(DBProxyName=f"{cluster}-proxy", DBClusterIdentifiers=[cluster])
    for _ in range(2000):
        targets = client.describe_db_proxy_targets(DBProxyName=f"{cluster}-proxy")["Targets"]
        if any(t.get("TargetHealth", {}).get("State") == "AVAILABLE" for t in targets):
            break
        time.sleep(0.01)
    took = time.perf_counter() - t0
    endpoint = client.describe_db_proxies(DBProxyName=f"{cluster}-proxy")["DBProxies"][0]["Endpoint"]
    return took, endpoint


def first_write(host: str, deadline: float) -> float | None:
    """When a fresh connection to ``host`` first takes a write (2 s connect timeout per try), or None."""
    import psycopg

    while time.perf_counter() < deadline:
        try:
            with psycopg.connect(host=host, port=5432, user="master", password=PASSWORD, dbname="app",
                                 autocommit=True, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("INSERT INTO t DEFAULT VALUES")
            return time.perf_counter()
        except psycopg.OperationalError:
            continue
    return None


def failover(stack: Stack, client: Any, name: str, proxy_endpoint: str) -> tuple[float, float, float]:
    """(API call, write gap through the writer endpoint name, write gap through the proxy) for one
    failover_db_cluster. The name's client honours DNS without caching (ttl cap 0)."""
    from harness.rds.aurora import aurora

    ext = aurora(stack.rds)
    cluster = ext.cluster(name)
    t0 = time.perf_counter()
    client.failover_db_cluster(DBClusterIdentifier=name, TargetDBInstanceIdentifier=cluster.readers[0].identifier)
    api = time.perf_counter() - t0
    with ResolverHook(stack.dns, ttl_cap=0), ThreadPoolExecutor(2) as pool:
        via_dns, via_proxy = pool.map(lambda host: first_write(host, t0 + 30), (cluster.writer_dns, proxy_endpoint))
    ext.wait_available(name, timeout=60)
    assert via_dns is not None and via_proxy is not None
    return api, via_dns - t0, via_proxy - t0


def commit_latency(stack: Stack, names: tuple[str, str], rounds: int) -> tuple[list[float], list[float]]:
    """Per-commit seconds of one-row autocommit INSERTs on two clusters' writers, alternating in batches of 20 so
    both see the same machine load."""
    import psycopg

    from harness.rds.aurora import aurora

    ext = aurora(stack.rds)
    samples: tuple[list[float], list[float]] = ([], [])
    with ResolverHook(stack.dns, ttl_cap=0):
        conns = [psycopg.connect(ext.cluster(n).dsn(), autocommit=True) for n in names]
        try:
            for conn in conns:
                conn.execute("CREATE TABLE IF NOT EXISTS lat (id serial PRIMARY KEY)")
            for _ in range(rounds):
                for conn, out in zip(conns, samples, strict=True):
                    for _ in range(20):
                        t0 = time.perf_counter()
                        conn.execute("INSERT INTO lat DEFAULT VALUES")
                        out.append(time.perf_counter() - t0)
        finally:
            for conn in conns:
                conn.close()
    return samples


def server_failover(stack: Stack, name: str) -> float:
    """Seconds from fence to DNS flip of one failover, as the emulator measures it."""
    from harness.rds.aurora import aurora

    ext = aurora(stack.rds)
    took = ext.failover(name)
    ext.wait_available(name, timeout=60)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=3, help="clusters created after the first")
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=15, help="batches of 20 commits per cluster")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {}
    with Stack() as stack:
        t0 = time.perf_counter()
        stack.rds  # noqa: B018 - starts AWS endpoint, DNS, proxy and the reconciler
        results["stack_start_s"] = time.perf_counter() - t0
        client = stack.aws.client("rds")
        results["first_cluster_s"] = create_cluster(client, "first")
        results["cluster_s"] = [create_cluster(client, f"c{i}") for i in range(args.clusters)]
        results["proxy_ready_s"], endpoint = create_proxy(stack, client, "first")
        create_cluster(client, "solo", readers=0)
        results["commit_quorum_s"], results["commit_solo_s"] = commit_latency(stack, ("c0", "solo"), args.rounds)
        import psycopg

        from harness.rds.aurora import aurora

        with ResolverHook(stack.dns, ttl_cap=0), psycopg.connect(
                aurora(stack.rds).cluster("first").dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id serial PRIMARY KEY)")
        results["failover_server_s"] = [server_failover(stack, "first") for _ in range(args.failovers)]
        client_side = [failover(stack, client, "first", endpoint) for _ in range(args.failovers)]
        results["failover_api_s"] = [c[0] for c in client_side]
        results["failover_gap_dns_s"] = [c[1] for c in client_side]
        results["failover_gap_proxy_s"] = [c[2] for c in client_side]

    med = statistics.median
    print(f"Aurora PostgreSQL on real PostgreSQL (profile fast), one run; machine load {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores")
    print(f"  stack start (AWS endpoint, DNS, proxy, reconciler)     {ms(results['stack_start_s'])}")
    print(f"  first cluster, writer + 2 readers (incl. first use)    {ms(results['first_cluster_s'])}")
    print(f"  cluster, writer + 2 readers, median of {args.clusters}              "
          f"{ms(med(results['cluster_s']))}")
    print(f"  RDS Proxy in front of it, create to target AVAILABLE   {ms(results['proxy_ready_s'])}")
    quorum, solo = results["commit_quorum_s"], results["commit_solo_s"]
    p99 = lambda xs: statistics.quantiles(xs, n=100)[98]  # noqa: E731
    print(f"  commit, writer waiting for 2 readers: p50 {ms(med(quorum))}, p99 {ms(p99(quorum))}")
    print(f"  commit, writer without readers:       p50 {ms(med(solo))}, p99 {ms(p99(solo))}   "
          f"ratio p50 {med(quorum) / med(solo):.2f}x")
    print(f"  failover fence->catch-up->promote->DNS flip, median    {ms(med(results['failover_server_s']))}   "
          "target <= 1000 ms")
    print(f"  failover_db_cluster API call, median                   {ms(med(results['failover_api_s']))}")
    dns, proxy = med(results["failover_gap_dns_s"]), med(results["failover_gap_proxy_s"])
    print(f"  first write after the call via the writer endpoint     {ms(dns)}   (client not caching DNS)")
    print(f"  first write after the call via the RDS Proxy           {ms(proxy)}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
