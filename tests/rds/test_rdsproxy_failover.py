"""RDS Proxy across a Multi-AZ failover: the endpoint stays, the proxy follows the new writer, and a client through
the proxy recovers faster than the same client through the instance's DNS name (both measured in one run)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from harness.wait import wait_until
from suites.pgclient import deadline, default_connect

STATEMENT_TIMEOUT = 2.0  # the clients' own bound on one statement, as a careful app sets one


class Writer:
    """Inserts ids in a loop with its own connection; after an error it reconnects (resolving the name again).
    Keeps the time of every acknowledged write and every error."""

    def __init__(self, name: str, connect: Callable[[], Any]) -> None:
        self.name, self.connect = name, connect
        self.acked: list[tuple[float, int]] = []
        self.errors: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"writer-{name}", daemon=True)

    def run(self) -> None:
        conn = None
        for i in range(1, 1_000_000):
            if self.stop.is_set():
                break
            try:
                if conn is None:
                    conn = self.connect()
                with deadline(conn, STATEMENT_TIMEOUT):
                    conn.execute("INSERT INTO t (who, id) VALUES (%s, %s)", (self.name, i))
                self.acked.append((time.monotonic(), i))
            except Exception as exc:
                self.errors.append((time.monotonic(), type(exc).__name__))
                if conn is not None:
                    conn.close()
                conn = None
                self.stop.wait(0.01)
            self.stop.wait(0.005)
        if conn is not None:
            conn.close()

    def rto(self, since: float) -> float | None:
        """From ``since`` to the first write acknowledged after the first error that followed it."""
        first_error = next((t for t, _ in self.errors if t >= since), None)
        if first_error is None:
            return None
        ok = next((t for t, _ in self.acked if t > first_error), None)
        return None if ok is None else ok - since


def test_proxy_keeps_its_endpoint_and_recovers_faster_than_dns(postgres_instance: Any, rds: Any,
                                                                 rds_proxy: Any) -> None:
    db = postgres_instance("pxha", multi_az=True)
    proxy = rds_proxy(db)
    with db.connect() as conn:
        conn.execute("CREATE TABLE t (who text, id int, PRIMARY KEY (who, id))")
    endpoint, address = proxy.describe()["Endpoint"], proxy.running.address
    via_dns = Writer("dns", lambda: default_connect(db.address, db.port, db.user, db.password, db.dbname))
    via_proxy = Writer("proxy", lambda: default_connect(proxy.endpoint, proxy.port, proxy.user, proxy.password,
                                                        proxy.dbname))
    for w in (via_dns, via_proxy):
        w.thread.start()
    wait_until(lambda: len(via_dns.acked) > 20 and len(via_proxy.acked) > 20, 20, what="both writers writing")
    old = db.instance.primary
    t0 = time.monotonic()
    rds.force_failover(db.identifier)
    wait_until(lambda: via_dns.rto(t0) is not None and via_proxy.rto(t0) is not None, 30, interval=0.05,
               what="both writers to recover")
    for w in (via_dns, via_proxy):
        w.stop.set()
        w.thread.join(10)
    proxy_rto, dns_rto = via_proxy.rto(t0), via_dns.rto(t0)
    assert proxy_rto is not None and dns_rto is not None
    assert proxy_rto < dns_rto, (proxy_rto, dns_rto)
    assert dns_rto >= STATEMENT_TIMEOUT * 0.9  # the DNS client waited on the fenced writer until its own timeout
    assert db.instance.primary is not old
    assert proxy.describe()["Endpoint"] == endpoint and proxy.running.address == address
    assert proxy.running.writer == db.instance.primary.endpoint
    assert proxy.targets()[0]["TargetHealth"]["State"] == "AVAILABLE"
    with proxy.connect() as conn:  # every acknowledged write of both clients is on the new writer
        rows = set(conn.execute("SELECT who, id FROM t").fetchall())
    for w in (via_dns, via_proxy):
        assert {(w.name, i) for _, i in w.acked} <= rows  # (a write cut in flight may be there too: in doubt)
    print(f"RTO through the proxy {proxy_rto:.3f} s, via DNS {dns_rto:.3f} s")
