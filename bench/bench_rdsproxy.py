"""RDS Proxy benchmark: time until a proxy is ready (create_db_proxy + register target + target AVAILABLE),
connect + query latency directly vs through the proxy (a Lambda's connect-query-close, and a query on an open
connection), and Multi-AZ failover recovery of a writer through the proxy vs one through the instance's DNS name,
side by side in one run.

Run: python bench/bench_rdsproxy.py [--proxies 5] [--queries 200] [--failovers 3]   (loopback only, about a minute)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.dns.resolver import ResolverHook  # noqa: E402
from harness.rds.rdsproxy_client import make_proxy  # noqa: E402
from harness.stack import Stack  # noqa: E402
from suites.pgclient import deadline, default_connect  # noqa: E402

PASSWORD = "bench-pass-1"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def latencies(connect: Callable[[], Any], n: int) -> tuple[list[float], list[float]]:
    """(connect + SELECT 1 + close, SELECT 1 on an open connection), ``n`` of each."""
    fresh, open_ = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        with connect() as conn:
            conn.execute("SELECT 1").fetchone()
        fresh.append(time.perf_counter() - t0)
    with connect() as conn:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            open_.append(time.perf_counter() - t0)
    return fresh, open_


class Writer(threading.Thread):
    """Inserts in a loop with a 2 s statement bound, reconnecting (resolving again) after an error."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.connect = connect
        self.acked: list[float] = []
        self.errors: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        conn = None
        for _ in range(1_000_000):
            if self.halt.is_set():
                break
            try:
                conn = conn or self.connect()
                with deadline(conn, 2.0):
                    conn.execute("INSERT INTO t DEFAULT VALUES")
                self.acked.append(time.monotonic())
            except Exception:
                self.errors.append(time.monotonic())
                if conn is not None:
                    conn.close()
                conn = None
            self.halt.wait(0.005)
        if conn is not None:
            conn.close()

    def rto(self, since: float) -> float | None:
        first_error = next((t for t in self.errors if t >= since), None)
        ok = next((t for t in self.acked if first_error is not None and t > first_error), None)
        return None if ok is None else ok - since


def failover_rtos(stack: Stack, db: dict[str, Any], proxy: Any) -> tuple[float, float]:
    """One failover with a writer through the proxy and one through the instance's DNS name."""
    via_dns = Writer(lambda: default_connect(db["host"], 5432, "master", PASSWORD, "app"))
    via_proxy = Writer(lambda: default_connect(proxy.endpoint, 5432, "master", PASSWORD, "app"))
    for w in (via_dns, via_proxy):
        w.start()
    end = time.monotonic() + 30
    while time.monotonic() < end and (len(via_dns.acked) < 20 or len(via_proxy.acked) < 20):
        time.sleep(0.01)
    t0 = time.monotonic()
    stack.rds.force_failover("pxbench")
    while time.monotonic() < t0 + 30 and (via_dns.rto(t0) is None or via_proxy.rto(t0) is None):
        time.sleep(0.01)
    for w in (via_dns, via_proxy):
        w.halt.set()
        w.join(10)
    stack.rds.wait_available("pxbench", timeout=60)
    end = time.monotonic() + 60
    while stack.rds.instance("pxbench").standby is None and time.monotonic() < end:
        time.sleep(0.05)  # the old primary is rebuilt as the standby before the next failover
    rp, rd = via_proxy.rto(t0), via_dns.rto(t0)
    assert rp is not None and rd is not None, "a writer never recovered"
    return rp, rd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=5, help="proxies made (and deleted) for the ready time")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {}
    with Stack() as stack:
        rec, aws = stack.rds, stack.aws
        client = aws.client("rds")
        client.create_db_instance(DBInstanceIdentifier="pxbench", Engine="postgres", DBInstanceClass="db.t3.micro",
                                  MasterUsername="master", MasterUserPassword=PASSWORD, DBName="app", MultiAZ=True)
        host = client.describe_db_instances(DBInstanceIdentifier="pxbench")["DBInstances"][0]["Endpoint"]["Address"]
        ready = []
        for i in range(args.proxies):
            t0 = time.perf_counter()
            made = make_proxy(aws, rec, "pxbench", name=f"ready-{i}")
            ready.append(time.perf_counter() - t0)
            client.delete_db_proxy(DBProxyName=made.name)
        results["proxy_ready_s"] = ready
        proxy = make_proxy(aws, rec, "pxbench", name="bench")
        with ResolverHook(stack.dns):
            direct = latencies(lambda: default_connect(host, 5432, "master", PASSWORD, "app"), args.queries)
            through = latencies(lambda: default_connect(proxy.endpoint, 5432, "master", PASSWORD, "app"),
                                args.queries)
            with default_connect(host, 5432, "master", PASSWORD, "app") as conn:
                conn.execute("CREATE TABLE t (id serial PRIMARY KEY)")
            rtos = [failover_rtos(stack, {"host": host}, proxy) for _ in range(args.failovers)]
        results.update(direct_connect_query_s=direct[0], proxy_connect_query_s=through[0],
                       direct_query_s=direct[1], proxy_query_s=through[1],
                       failover_rto_proxy_s=[r[0] for r in rtos], failover_rto_dns_s=[r[1] for r in rtos])

    med = statistics.median
    print(f"RDS Proxy (PgBouncer 1.18 on real PostgreSQL, profile fast), one run; machine load "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"  proxy ready (create + register + target AVAILABLE), median of {args.proxies}: "
          f"{ms(med(results['proxy_ready_s']))}  (max {ms(max(results['proxy_ready_s']))})")
    for label, key in (("connect + SELECT 1 + close", "connect_query_s"), ("SELECT 1 on an open connection",
                                                                         "query_s")):
        d, p = results[f"direct_{key}"], results[f"proxy_{key}"]
        print(f"  {label:32s} direct p50 {ms(med(d))} p95 {ms(p95(d))} | proxy p50 {ms(med(p))} "
              f"p95 {ms(p95(p))} | proxy/direct p50 {med(p) / med(d):.2f}")
    rp, rd = med(results["failover_rto_proxy_s"]), med(results["failover_rto_dns_s"])
    print(f"  failover RTO (first write after), median of {args.failovers}: through the proxy {ms(rp)} | via DNS "
          f"{ms(rd)} | DNS/proxy {rd / rp:.1f}x")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
