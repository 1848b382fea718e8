"""dbdrill pytest fixtures for DNS: the stack's DNS server (static records and fault rules a test adds are
removed after it) and a resolver hook that sends this process's name lookups to it."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.config import Settings
    from harness.dns.resolver import ResolverHook
    from harness.dns.server import DnsServer
    from harness.stack import Stack


@pytest.fixture(scope="session")
def dns_server(dbdrill_stack: Stack) -> DnsServer:
    """The session's DNS server (not cleaned between tests: use ``dns`` for that)."""
    return dbdrill_stack.dns


@pytest.fixture
def dns(dns_server: DnsServer) -> Iterator[DnsServer]:
    """The DNS server. Static records and zones the test added, its fault rules and forced health-check states
    are removed after the test, pass or fail; records that existed before (the RDS endpoints) stay."""
    records = set(dns_server.records())
    zones = dns_server.static.zones()
    try:
        yield dns_server
    finally:
        for name, rtype in set(dns_server.records()) - records:
            dns_server.delete_record(name, rtype)
        for zone in dns_server.static.zones() - zones:
            dns_server.static.remove_zone(zone)
        dns_server.clear_rules()
        dns_server.health.unforce_all()


@pytest.fixture
def dns_resolver(dns: DnsServer, dbdrill_settings: Settings, dbdrill_stack: Stack) -> Iterator[ResolverHook]:
    """``socket.getaddrinfo``/``gethostbyname(_ex)`` resolve the names the DNS server serves through it (real
    queries, TTL cache capped by --dbdrill-dns-ttl-cap) for this test; removed after it, pass or fail. The cache
    runs on the stack's clock: ``clock.advance(60)`` ages every cached answer by a minute at once."""
    from harness.dns.resolver import ResolverHook

    hook = ResolverHook(dns, ttl_cap=dbdrill_settings.dns_ttl_cap, time_fn=dbdrill_stack.clock.monotonic).install()
    try:
        yield hook
    finally:
        hook.uninstall()
