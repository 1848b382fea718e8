"""The resolver hook: getaddrinfo / gethostbyname(_ex) in this process resolve served names through the DNS
server (psycopg, requests, asyncio), the TTL cache, exact restore, errors like the C resolver, threads, and
a Python program started next to the server."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import requests
from dns_kit import HttpTarget, TcpTarget

from harness.clock import Clock
from harness.dns import ResolverHook, dns_exports
from harness.dns.resolver import installed_hooks
from harness.dns.server import DnsServer
from harness.errors import HarnessError
from harness.wait import wait_until

RDS = "mydb.aaaaaaaaaa.us-east-1.rds.amazonaws.com"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_getaddrinfo_answers_like_the_c_resolver(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    dns.set_record(RDS, "A", ["127.40.0.1"])
    got = socket.getaddrinfo(RDS, 5432, proto=socket.IPPROTO_TCP, type=socket.SOCK_STREAM)
    assert got == [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.40.0.1", 5432))]
    assert dns_resolver.queries(RDS) == 2, "A and AAAA, as glibc asks for AF_UNSPEC"
    all_types = socket.getaddrinfo(RDS, "5432", socket.AF_INET)
    assert {(t, p) for _f, t, p, _c, _a in all_types} == {
        (socket.SOCK_STREAM, socket.IPPROTO_TCP), (socket.SOCK_DGRAM, socket.IPPROTO_UDP), (socket.SOCK_RAW, 0)}
    [named] = socket.getaddrinfo(RDS, "postgresql", socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
    assert named[3] == RDS and named[4] == ("127.40.0.1", 5432)
    assert socket.gethostbyname(RDS) == "127.40.0.1"


def test_cname_chain_shows_in_gethostbyname_ex(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    base = "cluster-abc.us-east-1.rds.amazonaws.com"
    dns.set_record(f"inst-1.{base}", "A", ["127.40.1.1"])
    dns.set_record(f"mycluster.{base}", "CNAME", [f"inst-1.{base}"])
    assert socket.gethostbyname_ex(f"mycluster.{base}") == (f"inst-1.{base}", [f"mycluster.{base}"], ["127.40.1.1"])
    [entry] = socket.getaddrinfo(f"mycluster.{base}", 5432, socket.AF_INET, socket.SOCK_STREAM, 0,
                                 socket.AI_CANONNAME)
    assert entry[3] == f"inst-1.{base}"


def test_psycopg_resolves_and_connects_through_our_dns(dns: DnsServer, dns_resolver: ResolverHook,
                                                       tcp_target: Callable[[], TcpTarget]) -> None:
    from psycopg._conninfo_attempts import conninfo_attempts

    server = tcp_target()
    dns.set_record(RDS, "A", [server.host])
    [attempt] = conninfo_attempts({"host": RDS, "port": str(server.port), "dbname": "app"})
    assert attempt["hostaddr"] == server.host
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=RDS, port=server.port, dbname="app", user="app", connect_timeout=5)
    assert server.accepted, "psycopg reached the address our DNS gave"


def test_requests_reaches_a_loopback_http_server_by_a_route53_name(
        dns: DnsServer, dns_resolver: ResolverHook, zone: Callable[..., str], upsert: Callable[..., None],
        http_target: Callable[[], HttpTarget]) -> None:
    web = http_target()
    web.body = b"hello from the app"
    upsert(zone("example.com"), "api.example.com", "A", [web.host], ttl=5)
    resp = requests.get(f"http://api.example.com:{web.port}/", timeout=10)
    assert resp.status_code == 200 and resp.text == "hello from the app"
    assert web.hosts == [f"api.example.com:{web.port}"]


def test_asyncio_getaddrinfo_goes_through_the_hook(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    dns.set_record(RDS, "A", ["127.40.2.2"])

    async def lookup() -> Any:
        return await asyncio.get_running_loop().getaddrinfo(RDS, 5432, type=socket.SOCK_STREAM)

    assert [a[4][0] for a in asyncio.run(lookup())] == ["127.40.2.2"]


def test_names_not_served_fall_through_unchanged(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    before = dns.queries()
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    assert socket.getaddrinfo("127.0.0.1", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4] == ("127.0.0.1", 80)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("no-such-host.invalid", 80)
    assert dns_resolver.queries() == 0 and dns.queries() == before


def test_errors_look_like_the_c_resolver(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    dns.set_record(RDS, "A", ["127.40.0.1"])
    with pytest.raises(socket.gaierror) as nx:
        socket.getaddrinfo("other.aaaaaaaaaa.us-east-1.rds.amazonaws.com", 5432)
    assert nx.value.errno == socket.EAI_NONAME
    with pytest.raises(socket.gaierror) as nodata:
        socket.getaddrinfo(RDS, 5432, socket.AF_INET6)
    assert nodata.value.errno == getattr(socket, "EAI_NODATA", socket.EAI_NONAME)
    with pytest.raises(socket.gaierror) as nx_name:
        socket.gethostbyname("other.aaaaaaaaaa.us-east-1.rds.amazonaws.com")
    assert nx_name.value.errno == socket.EAI_NONAME


def test_cache_honours_the_ttl(dns: DnsServer) -> None:
    clock = FakeTime()
    dns.set_record(RDS, "A", ["127.40.3.1"], ttl=5)
    with ResolverHook(dns, time_fn=clock) as hook:
        assert socket.gethostbyname(RDS) == "127.40.3.1"
        dns.set_record(RDS, "A", ["127.40.3.2"], ttl=5)
        clock.now += 4.9
        assert socket.gethostbyname(RDS) == "127.40.3.1" and hook.queries(RDS) == 1
        assert hook.stats["hits"] == 1
        clock.now += 0.2
        assert socket.gethostbyname(RDS) == "127.40.3.2" and hook.queries(RDS) == 2
        hook.flush()
        assert socket.gethostbyname(RDS) == "127.40.3.2" and hook.queries(RDS) == 3


def test_cache_expires_in_real_time(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    dns.set_record(RDS, "A", ["127.40.4.1"], ttl=1)
    assert socket.gethostbyname(RDS) == "127.40.4.1"
    dns.set_record(RDS, "A", ["127.40.4.2"], ttl=1)
    assert socket.gethostbyname(RDS) == "127.40.4.1"
    wait_until(lambda: socket.gethostbyname(RDS) == "127.40.4.2", 5, interval=0.1, what="the 1 s TTL to lapse")
    assert 2 <= dns_resolver.queries(RDS) <= 3


def test_the_fixture_cache_follows_the_stack_clock(dns: DnsServer, dns_resolver: ResolverHook, clock: Clock) -> None:
    dns.set_record(RDS, "A", ["127.40.3.5"], ttl=60)
    assert socket.gethostbyname(RDS) == "127.40.3.5"
    dns.set_record(RDS, "A", ["127.40.3.6"], ttl=60)
    clock.advance(59)
    assert socket.gethostbyname(RDS) == "127.40.3.5"
    clock.advance(1.5)
    assert socket.gethostbyname(RDS) == "127.40.3.6" and dns_resolver.queries(RDS) == 2


def test_ttl_cap_override_and_minimum(dns: DnsServer) -> None:
    clock = FakeTime()
    dns.set_record(RDS, "A", ["127.40.5.1"], ttl=300)
    hook = ResolverHook(dns, time_fn=clock, ttl_cap=2)
    assert hook.effective_ttl(300) == 2 and hook.effective_ttl(1) == 1
    hook.ttl_override = 10
    assert hook.effective_ttl(300) == 10 and hook.effective_ttl(1) == 10
    hook.ttl_override, hook.min_ttl = None, 60
    assert hook.effective_ttl(1) == 60
    with pytest.raises(HarnessError, match="min_ttl must be >= 0"):
        ResolverHook(dns, min_ttl=-1)
    hook.min_ttl = 0
    with hook:
        socket.gethostbyname(RDS)
        clock.now += 2.5
        assert hook.cached(RDS) is None
        socket.gethostbyname(RDS)
    assert hook.queries(RDS) == 2


def test_uninstall_restores_the_exact_functions_and_hooks_nest(dns: DnsServer) -> None:
    originals = (socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex)
    dns.set_record(RDS, "A", ["127.40.6.1"])
    outer, inner = ResolverHook(dns), ResolverHook(dns)
    with outer:
        assert socket.getaddrinfo is not originals[0]
        with inner:
            socket.gethostbyname(RDS)
            assert installed_hooks() == [outer, inner]
        socket.gethostbyname(RDS)
        assert (inner.queries(), outer.queries()) == (1, 1)
        with pytest.raises(HarnessError, match="already installed"):
            outer.install()
    assert (socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex) == originals
    assert not outer.installed


def test_uninstalled_after_an_exception(dns: DnsServer) -> None:
    original = socket.getaddrinfo
    with pytest.raises(RuntimeError), ResolverHook(dns):
        raise RuntimeError("app crashed")
    assert socket.getaddrinfo is original and installed_hooks() == []


def test_threads_share_one_cache_safely(dns: DnsServer, dns_resolver: ResolverHook) -> None:
    dns.set_record(RDS, "A", ["127.40.7.1"], ttl=30)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                results.append(socket.gethostbyname(RDS))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and results == ["127.40.7.1"] * 400
    assert 1 <= dns_resolver.queries(RDS) <= 8, "at most one miss per thread before the cache is filled"


def test_a_hook_on_an_address_only_asks_and_falls_through_on_refused(dns: DnsServer) -> None:
    dns.set_record(RDS, "A", ["127.40.8.1"])
    host, port = dns.address
    with ResolverHook(f"{host}:{port}") as hook:
        assert socket.gethostbyname(RDS) == "127.40.8.1"
        assert socket.gethostbyname("localhost") == "127.0.0.1"
        with pytest.raises(socket.gaierror):
            socket.gethostbyname("not-ours.invalid")
        assert hook.queries("not-ours.invalid") == 1
        with pytest.raises(socket.gaierror):
            socket.gethostbyname("not-ours.invalid")
        assert hook.queries("not-ours.invalid") == 1, "a refused name is remembered for a moment"
    with pytest.raises(HarnessError, match="expected HOST:PORT"):
        ResolverHook("127.0.0.1")


def test_a_python_program_next_to_the_server_uses_the_hook_from_env(dns: DnsServer) -> None:
    dns.set_record(RDS, "A", ["127.40.9.1"])
    code = ("import socket\n"
            "from harness.dns.resolver import ResolverHook\n"
            "with ResolverHook.from_env():\n"
            f"    print(socket.getaddrinfo({RDS!r}, 5432, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])\n")
    env = {**os.environ, **dns_exports(dns)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "127.40.9.1"
