"""RDS benchmark: time to ready for a primary + read replica (each behind its proxy, named in DNS) through the
RDS API — the first pair and extra pairs from the template — and Multi-AZ failover RTO (fence + promotion +
DNS flip, server side and as a client writing through the endpoint name sees it), measured in one run.

Run: python bench/bench_rds.py [--pairs 5] [--failovers 5]   (loopback only, well under a minute)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.dns.resolver import ResolverHook  # noqa: E402
from harness.stack import Stack  # noqa: E402

PASSWORD = "bench-pass-1"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def create_pair(client: Any, name: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    client.create_db_instance(DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t3.micro",
                              MasterUsername="master", MasterUserPassword=PASSWORD, DBName="app")
    t1 = time.perf_counter()
    client.create_db_instance_read_replica(DBInstanceIdentifier=f"{name}-ro", SourceDBInstanceIdentifier=name)
    t2 = time.perf_counter()
    for ident in (name, f"{name}-ro"):
        desc = client.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
        assert desc["DBInstanceStatus"] == "available", desc["DBInstanceStatus"]
    return t1 - t0, t2 - t1


def client_rto(stack: Stack, client: Any, name: str) -> tuple[float, float, float]:
    """Failover under a writer connected by endpoint name: (server fence-to-DNS-flip, API call, client gap
    from the last write before to the first write after)."""
    import psycopg

    rec = stack.rds
    hook = ResolverHook(stack.dns, ttl_cap=0)  # a client honouring DNS, caching nothing
    dns_name = rec.instance(name).dns_name
    with hook:
        conn = psycopg.connect(host=dns_name, port=5432, user="master", password=PASSWORD, dbname="app",
                               autocommit=True, connect_timeout=2)
        conn.execute("CREATE TABLE IF NOT EXISTS t (id serial PRIMARY KEY)")
        conn.execute("INSERT INTO t DEFAULT VALUES")
        last_ok = time.perf_counter()
        t0 = time.perf_counter()
        took = rec.force_failover(name)
        api = time.perf_counter() - t0
        conn.close()  # its host is fenced: a client would time out on it; this one reconnects at once
        first_ok = None
        for _ in range(1000):
            try:
                with psycopg.connect(host=dns_name, port=5432, user="master", password=PASSWORD, dbname="app",
                                     autocommit=True, connect_timeout=2) as c2:
                    c2.execute("INSERT INTO t DEFAULT VALUES")
                first_ok = time.perf_counter()
                break
            except psycopg.OperationalError:
                continue
        rec.wait_available(name, timeout=60)
    assert first_ok is not None
    return took, api, first_ok - last_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="extra primary+replica pairs after the first")
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {}
    with Stack() as stack:
        t0 = time.perf_counter()
        stack.rds  # noqa: B018 - starts AWS endpoint, DNS, proxy and the reconciler
        results["stack_start_s"] = time.perf_counter() - t0
        client = stack.aws.client("rds")
        first = create_pair(client, "first")
        results["first_primary_s"], results["first_replica_s"] = first
        pairs = [create_pair(client, f"pair{i}") for i in range(args.pairs)]
        results["pair_s"] = [p + r for p, r in pairs]
        results["extra_primary_s"] = statistics.median(p for p, _ in pairs)
        results["extra_replica_s"] = statistics.median(r for _, r in pairs)
        client.create_db_instance(DBInstanceIdentifier="ha", Engine="postgres", DBInstanceClass="db.t3.micro",
                                  MasterUsername="master", MasterUserPassword=PASSWORD, DBName="app", MultiAZ=True)
        rtos = [client_rto(stack, client, "ha") for _ in range(args.failovers)]
        results["failover_server_s"] = [r[0] for r in rtos]
        results["failover_api_s"] = [r[1] for r in rtos]
        results["failover_client_gap_s"] = [r[2] for r in rtos]

    pair = statistics.median(results["pair_s"])
    load = os.getloadavg()[0]
    print(f"RDS on real PostgreSQL (profile fast), one run; machine load {load:.2f} on {os.cpu_count()} cores")
    print(f"  stack start (AWS endpoint, DNS, proxy, reconciler) {ms(results['stack_start_s'])}")
    print(f"  first primary (incl. moto's first-use setup)       {ms(results['first_primary_s'])}")
    print(f"  first read replica                                 {ms(results['first_replica_s'])}")
    print(f"  first pair total                                   {ms(sum(first))}   target <= 2000 ms")
    print(f"  extra pair, median of {args.pairs}                            {ms(pair)}   target <= 300 ms")
    print(f"    of which primary {ms(results['extra_primary_s'])}, replica {ms(results['extra_replica_s'])}")
    print(f"  failover fence->promote->DNS flip, median of {args.failovers}     "
          f"{ms(statistics.median(results['failover_server_s']))}   target <= 1000 ms")
    api, gap = (statistics.median(results[k]) for k in ("failover_api_s", "failover_client_gap_s"))
    print(f"  failover API call (reboot ForceFailover), median   {ms(api)}")
    print(f"  client write gap through the endpoint name, median {ms(gap)}")
    print(f"  ratio extra pair / first pair: {pair / sum(first):.2f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
