"""DNS faults seen by real clients: a stale cache keeps an app on the old address after a failover, SERVFAIL /
NXDOMAIN / no answer make getaddrinfo fail, latency slows lookups; healing restores each."""
from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

import pytest
from dns_kit import TcpTarget, ask, rcode

from faults.base import FaultError, current_timeline
from faults.dns import dns_latency, dns_timeout, nxdomain, servfail, stale_cache
from harness.dns import ResolverHook
from harness.dns.server import DnsServer
from harness.wait import wait_until

RDS = "mydb.aaaaaaaaaa.us-east-1.rds.amazonaws.com"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _connect(name: str, port: int) -> None:
    with socket.create_connection((name, port), timeout=5):
        pass


def test_stale_cache_keeps_the_app_on_the_old_address_after_a_failover(
        dns: DnsServer, tcp_target: Callable[[], TcpTarget], zone: Callable[..., str],
        upsert: Callable[..., None]) -> None:
    old, new = tcp_target(), tcp_target()
    new.stop()
    new.port = old.port
    new.start()
    clock = FakeTime()
    z = zone("example.com")
    upsert(z, "db.example.com", "A", [old.host], ttl=1)
    with ResolverHook(dns, time_fn=clock) as hook:
        with stale_cache(300):
            _connect("db.example.com", old.port)
            # The failover: automation UPSERTs the record to the new primary; the TTL (1 s) lapses many times.
            upsert(z, "db.example.com", "A", [new.host], ttl=1)
            for _ in range(10):
                clock.now += 29
                _connect("db.example.com", old.port)
            wait_until(lambda: len(old.accepted) == 11, 5, what="every connect to reach the old primary")
            assert not new.accepted and hook.queries("db.example.com") == 2
        clock.now += 0.5
        _connect("db.example.com", new.port)
        wait_until(lambda: new.accepted, 5, what="the connect after healing to reach the new primary")
        # A asked again; the AAAA "no data" answer stays cached for the zone SOA's 900 s (RFC 2308).
        assert hook.queries("db.example.com") == 3
    [event] = current_timeline().events
    assert event.kind == "dns_stale_cache" and event.params == {"seconds": 300.0} and event.end is not None


def test_without_the_fault_the_app_follows_the_failover_within_the_ttl(
        dns: DnsServer, dns_resolver: ResolverHook, zone: Callable[..., str], upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    upsert(z, "db.example.com", "A", ["127.41.0.1"], ttl=1)
    assert socket.gethostbyname("db.example.com") == "127.41.0.1"
    upsert(z, "db.example.com", "A", ["127.41.0.2"], ttl=1)
    t0 = time.monotonic()
    wait_until(lambda: socket.gethostbyname("db.example.com") == "127.41.0.2", 5, interval=0.05)
    assert time.monotonic() - t0 < 4, "the 1 s TTL, not minutes"


def test_stale_cache_needs_a_resolver_and_sane_seconds(dns: DnsServer) -> None:
    with pytest.raises(FaultError, match="seconds > 0"):
        stale_cache(0)
    with pytest.raises(FaultError, match="no resolver hook"):
        stale_cache(10).start()
    hook = ResolverHook(dns, min_ttl=2)
    with stale_cache(30, resolver=hook):
        assert hook.min_ttl == 30
    assert hook.min_ttl == 2


def test_servfail_makes_getaddrinfo_fail_until_healed(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    dns.set_record(RDS, "A", ["127.41.1.1"])
    dns.set_record("other.aaaaaaaaaa.us-east-1.rds.amazonaws.com", "A", ["127.41.1.2"])
    with servfail("mydb.*"):
        assert rcode(ask(dns, RDS)) == "SERVFAIL"
        with pytest.raises(socket.gaierror) as err:
            socket.getaddrinfo(RDS, 5432)
        assert err.value.errno == socket.EAI_AGAIN
        assert socket.gethostbyname("other.aaaaaaaaaa.us-east-1.rds.amazonaws.com") == "127.41.1.2"
    assert socket.gethostbyname(RDS) == "127.41.1.1"


@pytest.mark.parametrize("names", [RDS, [RDS, "x.example.com"], re.compile(r"^mydb\."), "*.rds.amazonaws.com", None])
def test_servfail_name_forms(dns: DnsServer, names: object) -> None:
    dns.set_record(RDS, "A", ["127.41.1.1"])
    with servfail(names):  # type: ignore[arg-type]
        assert rcode(ask(dns, RDS)) == "SERVFAIL"
    assert rcode(ask(dns, RDS)) == "NOERROR"


def test_nxdomain_fault(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    dns.set_record(RDS, "A", ["127.41.2.1"])
    with nxdomain(RDS):
        msg = ask(dns, RDS)
        assert rcode(msg) == "NXDOMAIN" and msg.authority
        with pytest.raises(socket.gaierror) as err:
            socket.gethostbyname(RDS)
        assert err.value.errno == socket.EAI_NONAME
    dns_resolver.flush()
    assert socket.gethostbyname(RDS) == "127.41.2.1"


def _lookup_time() -> float:
    t0 = time.monotonic()
    assert socket.gethostbyname(RDS) == "127.41.3.1"
    return time.monotonic() - t0


def test_dns_latency_slows_every_lookup(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    dns.set_record(RDS, "A", ["127.41.3.1"], ttl=0)
    # The best of a few uncached lookups: one slow scheduling moment on a busy machine proves nothing.
    assert min(_lookup_time() for _ in range(3)) < 0.145
    with dns_latency(150, RDS):
        slow = [_lookup_time() for _ in range(3)]
    assert all(0.145 <= t < 1.5 for t in slow), slow
    assert min(_lookup_time() for _ in range(3)) < 0.145
    assert dns_resolver.queries(RDS) == 9


def test_dns_timeout_fails_after_the_resolver_timeout(dns: DnsServer) -> None:
    dns.set_record(RDS, "A", ["127.41.4.1"])
    with ResolverHook(dns, timeout=0.6), dns_timeout(RDS):
        t0 = time.monotonic()
        with pytest.raises(socket.gaierror) as err:
            socket.getaddrinfo(RDS, 5432, socket.AF_INET)
        waited = time.monotonic() - t0
    assert err.value.errno == socket.EAI_AGAIN and 0.55 <= waited < 3
    with ResolverHook(dns):
        assert socket.gethostbyname(RDS) == "127.41.4.1"


def test_bad_fault_parameters_are_refused(dns: DnsServer) -> None:
    with pytest.raises(FaultError, match=r"0\.\.60000 ms"):
        dns_latency(-5)
    with pytest.raises(FaultError, match="names must be"):
        servfail([""])
    fault = servfail(RDS, server=dns)
    assert fault.describe() == {"names": RDS} and fault.target_label() == f"dns {RDS}"
    with fault:
        assert len(dns.rules()) == 1
    assert dns.rules() == []
