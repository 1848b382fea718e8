"""Drill: a Lambda-style connection storm against an RDS instance with a small max_connections. The drill's own
direct storm proves the limit bites (``too many clients``); the app's storm through the RDS Proxy must succeed
whole; then a Multi-AZ failover during a steady stream of invocations through the proxy: the app's writes must
resume within the RTO limit and sooner than a reference client that reaches the instance by its DNS name, and no
acknowledged write may be lost.

Point it at your Lambda's database connect by overriding ``proxy_drill_connect`` in your conftest.py::

    @pytest.fixture
    def proxy_drill_connect():
        from myapp.db import connect      # called once per invocation with the proxy endpoint
        return lambda host, port, user, password, dbname: connect(host, port, user, password, dbname)
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from suites.checkers import recovery
from suites.history import History
from suites.pgclient import deadline, default_connect
from suites.results import CheckResult, Violation
from suites.thresholds import COUNT, SECONDS, Thresholds, _limit, register

pytestmark = pytest.mark.dbdrill_drill("rds_proxy_storm", kind="rds-proxy-storm")

INSTANCE = "drill-storm"
PROXY = "drill-storm-proxy"
TABLE = "dbdrill_storm"
MAX_CONNECTIONS = 20
STORM = 100  # concurrent invocations
HOLD_S = 0.3  # each invocation's query keeps its session this long
STATEMENT_S = 2.0
EXHAUSTED = ("too many clients already", "remaining connection slots are reserved")


@register
@dataclass(frozen=True)
class ProxyStormThresholds(Thresholds):
    """RDS Proxy under a connection storm and a failover: every invocation through the proxy succeeds; after a
    failover the proxy's clients recover quickly (no DNS propagation to wait for)."""

    drill_kind: ClassVar[str] = "rds-proxy-storm"
    max_rto: float | None = _limit(SECONDS, 120.0, "failover start -> first write through the proxy")
    max_storm_failures: int = _limit(COUNT, 0, "storm invocations through the proxy that failed")


def invoke(history: History, connect: Callable[..., Any], target: tuple[str, int, str, str, str], process: Any,
           value: int, *, f: str = "write", hold: float = 0.0) -> None:
    """One Lambda invocation: connect, one INSERT (holding the session ``hold`` s), disconnect; recorded on
    ``history`` (a refused connect: fail; an error after the statement was sent: info, it may have happened)."""
    host, port, user, password, dbname = target
    with history.op(process, f, value=value, endpoint=host) as op:
        try:
            conn = connect(host, port, user, password, dbname)
        except Exception as exc:
            op.fail(exc)
            return
        try:
            with deadline(conn, STATEMENT_S + hold):
                conn.execute(f"INSERT INTO {TABLE} (id, via, slept) VALUES (%s, %s, pg_sleep(%s) IS NULL)",
                             (value, f, hold))
        finally:
            conn.close()


def storm(history: History, connect: Callable[..., Any], target: tuple[str, int, str, str, str], *, f: str,
          first: int) -> list[Any]:
    """``STORM`` invocations started together; their operations."""
    gate = threading.Barrier(STORM, timeout=60)

    def one(i: int) -> None:
        gate.wait()
        invoke(history, connect, target, f"{f}-{i}", first + i, f=f, hold=HOLD_S)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(STORM)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return [o for o in history.operations(f) if first <= o.invoke_value < first + STORM]


def exhausted(op: Any) -> bool:
    return any(text in (op.error or "") for text in EXHAUSTED)


def test_rds_proxy_storm(drill: Any, request: pytest.FixtureRequest, proxy_drill_connect: Any) -> None:
    from faults.database import force_failover
    from faults.schedule import Nemesis, Step
    from harness.rds.rdsproxy import set_max_connections
    from suites.workload import Workload, settle, writes_after

    if getattr(drill.settings, "time_profile", "fast") == "fast":
        drill.defaults(max_rto=2.0)
    rds = request.getfixturevalue("rds")
    db = request.getfixturevalue("postgres_instance")(INSTANCE, multi_az=True)
    set_max_connections(rds, INSTANCE, MAX_CONNECTIONS)
    proxy = request.getfixturevalue("rds_proxy")(db, name=PROXY)
    with proxy.connect() as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, via text, slept bool)")
    history = drill.history
    direct_target = (db.address, db.port, db.user, db.password, db.dbname)
    proxy_target = (proxy.endpoint, proxy.port, proxy.user, proxy.password, proxy.dbname)

    with drill.progress("storm"):
        direct = storm(history, default_connect, direct_target, f="direct-write", first=1_000_000)
        through = storm(history, proxy_drill_connect, proxy_target, f="write", first=0)

    failover = force_failover(db)
    counter = iter(range(10_000, 10_000_000))
    lock = threading.Lock()

    def work(process: int, i: int) -> None:
        with lock:
            value = next(counter)
        if process == 0:  # the drill's reference: the same invocation, by the instance's DNS name
            invoke(history, default_connect, direct_target, "dns", value, f="dns-write")
        else:
            invoke(history, proxy_drill_connect, proxy_target, process, value)

    with drill.progress("failover"), Workload(work, threads=4, interval=0.01, max_time=300):
        nemesis = Nemesis([Step(1.0, 0.5, failover, name="failover")], max_time=300).start()
        if not nemesis.wait(300):
            nemesis.stop()
            raise AssertionError("the failover did not finish within 300 s")
        nemesis.stop()
        nemesis.check()
        drill.schedule = nemesis.schedule()
        healed = time.monotonic()
        settle(lambda: writes_after(history, healed, 20)() and any(
            o.ok for o in history.operations("dns-write") if o.invoke_time > healed), drill.settle_s)
    final_read(history, proxy)
    dns = recovery(history, drill.timeline.to_list(), write="dns-write").numbers.get("rto_write_s_max")
    via_proxy = recovery(history, drill.timeline.to_list()).numbers.get("rto_write_s_max")
    drill.note(direct_exhausted=sum(map(exhausted, direct)), direct_ok=sum(o.ok for o in direct),
               proxy_storm_ok=sum(o.ok for o in through), rto_proxy_s=via_proxy, rto_dns_s=dns,
               failover_took_s=failover.took, max_connections=MAX_CONNECTIONS, storm=STORM)
    drill.finish(checks=["lost-writes", "recovery"],
                 extra_results=[storm_result(drill, direct, through), faster_than_dns(via_proxy, dns)])


def final_read(history: History, proxy: Any, attempts: int = 50) -> None:
    """Every id the app wrote through the proxy, read by the drill's own client (bounded retries); the drill's
    own direct and DNS writes are left out (they are not the app's)."""
    for _ in range(attempts):
        with history.op("final", "final-read", endpoint=proxy.endpoint) as op:
            with proxy.connect() as conn, deadline(conn, STATEMENT_S):
                ids = conn.execute(f"SELECT coalesce(array_agg(id), '{{}}') FROM {TABLE} WHERE via = 'write'"
                                   ).fetchone()[0]
            op.ok(set(ids))
            return
        time.sleep(0.1)
    raise AssertionError(f"no successful final read through {proxy.endpoint} in {attempts} attempts")


def storm_result(drill: Any, direct: list[Any], through: list[Any]) -> CheckResult:
    """The direct storm must hit the limit (else the drill proves nothing); the app's storm through the proxy
    may fail at most ``max_storm_failures`` times."""
    limit = drill.thresholds.max_storm_failures
    hit = sum(map(exhausted, direct))
    failed = [o for o in through if not o.ok]
    violations = [Violation("storm-failure", f"invocation through the proxy failed: {o.error}", o)
                  for o in failed[:20]] if len(failed) > limit else []
    if not hit:
        violations.append(Violation("storm-not-real", f"no direct connection was refused: {STORM} clients never "
                                    f"exhausted max_connections={MAX_CONNECTIONS}"))
    numbers = {"direct_exhausted": hit, "direct_ok": sum(o.ok for o in direct), "proxy_ok": len(through) - len(failed),
               "proxy_failed": len(failed), "proxy_exhausted": sum(map(exhausted, failed)), "clients": STORM}
    return CheckResult("connection-storm", not violations,
                       f"direct: {hit}/{STORM} refused (too many clients); through the proxy: "
                       f"{numbers['proxy_ok']}/{len(through)} ok (limit {limit} failures)", violations, numbers)


def faster_than_dns(via_proxy: float | None, dns: float | None) -> CheckResult:
    """After the failover the proxy's clients recover before a client that reaches the writer by DNS."""
    numbers = {"rto_proxy_s": via_proxy, "rto_dns_s": dns}
    if via_proxy is None or dns is None:
        what = "through the proxy" if via_proxy is None else "via DNS (the drill's reference client)"
        return CheckResult("proxy-vs-dns", False, f"no recovery {what}",
                           [Violation("no recovery", f"no successful write {what} after the failover")], numbers)
    ok = via_proxy < dns
    return CheckResult("proxy-vs-dns", ok, f"RTO {via_proxy:.3f} s through the proxy vs {dns:.3f} s via DNS",
                       [] if ok else [Violation("proxy-not-faster", f"through the proxy {via_proxy:.3f} s, via the "
                                                f"instance's DNS name {dns:.3f} s")], numbers)
