"""Route53 health checks really probed: TCP and HTTP targets the test controls flip failover answers, with
FailureThreshold, Inverted, Disabled, CALCULATED, loopback-only targets and get_health_check_status."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from dns_kit import HttpTarget, TcpTarget, ask, values

from harness.dns.health import CheckConfig, HealthChecker
from harness.dns.server import DnsServer
from harness.wait import wait_until


def _check(route53: Any, ref: str, **config: Any) -> str:
    cfg = {"RequestInterval": 10, "FailureThreshold": 1, **config}
    check_id: str = route53.create_health_check(CallerReference=ref, HealthCheckConfig=cfg)["HealthCheck"]["Id"]
    return check_id


def _status(route53: Any, check_id: str) -> str:
    obs = route53.get_health_check_status(HealthCheckId=check_id)["HealthCheckObservations"]
    assert len(obs) == 1
    report: str = obs[0]["StatusReport"]["Status"]
    return report


def _probes(dns: DnsServer, check_id: str) -> int:
    st = dns.health.status(check_id)
    return 0 if st is None else st.probes


def test_tcp_check_flips_failover_when_the_target_goes_away_and_back(
        dns: DnsServer, route53: Any, zone: Callable[..., str], upsert: Callable[..., None],
        tcp_target: Callable[[], TcpTarget]) -> None:
    primary, secondary = tcp_target(), tcp_target()
    hc = _check(route53, "tcp", Type="TCP", IPAddress=primary.host, Port=primary.port, FailureThreshold=2)
    z = zone("example.com")
    upsert(z, "db.example.com", "A", [primary.host], ttl=1, SetIdentifier="p", Failover="PRIMARY", HealthCheckId=hc)
    upsert(z, "db.example.com", "A", [secondary.host], ttl=1, SetIdentifier="s", Failover="SECONDARY")
    wait_until(lambda: primary.accepted, 10, what="the first probe")
    assert values(ask(dns, "db.example.com")) == [primary.host]
    assert _status(route53, hc) == "Success: TCP connection established."
    primary.stop()
    t0 = time.monotonic()
    wait_until(lambda: values(ask(dns, "db.example.com")) == [secondary.host], 15, interval=0.05,
               what="failover to the secondary")
    # Fast profile: 10 s interval / 30 = 0.33 s per probe, two failures needed.
    assert 0.3 < time.monotonic() - t0 < 10
    assert _status(route53, hc).startswith("Failure: Connection refused")
    assert dns.health.status(hc).failures >= 2  # type: ignore[union-attr]
    primary.start()
    wait_until(lambda: values(ask(dns, "db.example.com")) == [primary.host], 15, interval=0.05,
               what="fail back to the primary")
    assert primary.accepted[-1][0] == dns.address[0], "probes come from the DNS server's own address"


def test_http_checks_status_code_and_search_string(dns: DnsServer, route53: Any,
                                                   http_target: Callable[[], HttpTarget]) -> None:
    web = http_target()
    dns.set_record("web.svc.internal", "A", [web.host])
    hc = _check(route53, "http", Type="HTTP", FullyQualifiedDomainName="web.svc.internal", Port=web.port,
                ResourcePath="/health")
    match = _check(route53, "str", Type="HTTP_STR_MATCH", IPAddress=web.host, Port=web.port, SearchString="READY")
    wait_until(lambda: _probes(dns, hc) > 0, 10, what="the first HTTP probe")
    assert dns.health.healthy(hc)
    assert _status(route53, hc) == "Success: HTTP Status Code 200, OK"
    assert "web.svc.internal" in web.hosts
    dns.health.wait(match, False, 10)
    assert "Search string (READY) not found" in _status(route53, match)
    web.body = b"status: READY"
    dns.health.wait(match, True, 10)
    web.status = 503
    dns.health.wait(hc, False, 10)
    assert _status(route53, hc) == "Failure: HTTP Status Code 503, Service Unavailable"


def test_inverted_and_disabled(dns: DnsServer, route53: Any, tcp_target: Callable[[], TcpTarget]) -> None:
    target = tcp_target()
    hc = _check(route53, "inv", Type="TCP", IPAddress=target.host, Port=target.port, Inverted=True)
    dns.health.wait(hc, False, 10)
    target.stop()
    dns.health.wait(hc, True, 10)
    route53.update_health_check(HealthCheckId=hc, Inverted=False, Disabled=True)
    dns.health.wait(hc, True, 10)
    route53.update_health_check(HealthCheckId=hc, Inverted=True, Disabled=True)
    dns.health.wait(hc, False, 10)


def test_calculated_check_counts_healthy_children(dns: DnsServer, route53: Any,
                                                  tcp_target: Callable[[], TcpTarget]) -> None:
    a, b = tcp_target(), tcp_target()
    ca = _check(route53, "a", Type="TCP", IPAddress=a.host, Port=a.port)
    cb = _check(route53, "b", Type="TCP", IPAddress=b.host, Port=b.port)
    calc = route53.create_health_check(CallerReference="calc", HealthCheckConfig={
        "Type": "CALCULATED", "ChildHealthChecks": [ca, cb], "HealthThreshold": 2})["HealthCheck"]["Id"]
    wait_until(lambda: (st := dns.health.status(calc)) is not None and st.report.startswith("Success: 2 of 2"), 10)
    b.stop()
    dns.health.wait(calc, False, 10)
    assert _status(route53, calc) == "Failure: 1 of 2 child health checks healthy"


def test_non_loopback_targets_are_never_probed(dns: DnsServer, route53: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="harness.dns.health")
    hc = _check(route53, "remote", Type="TCP", IPAddress="10.1.2.3", Port=5432)
    by_name = _check(route53, "name", Type="HTTP", FullyQualifiedDomainName="www.python.org", Port=80)
    dns.health.wait(hc, False, 10)
    dns.health.wait(by_name, False, 10)
    assert _status(route53, hc) == "Failure: dbdrill refuses to probe non-loopback target 10.1.2.3"
    assert "does not resolve through dbdrill's DNS" in _status(route53, by_name)
    assert any("10.1.2.3, which is not loopback" in r.getMessage() for r in caplog.records)


def test_fast_profile_scales_intervals_and_aws_keeps_them() -> None:
    fast, aws = HealthChecker(profile="fast"), HealthChecker(profile="aws")
    cfg = CheckConfig("x", "HTTP", "127.0.0.1", None, 80, "/", None, 30.0, 3, False, False, (), 0)
    assert fast.interval(cfg) == 1.0 and aws.interval(cfg) == 30.0
    assert fast.timeouts(cfg) == (0.5, 0.5) and aws.timeouts(cfg) == (4.0, 2.0)


def test_probe_rate_follows_the_request_interval(dns: DnsServer, route53: Any,
                                                 tcp_target: Callable[[], TcpTarget]) -> None:
    target = tcp_target()
    hc = _check(route53, "rate", Type="TCP", IPAddress=target.host, Port=target.port, RequestInterval=30)
    wait_until(lambda: len(target.accepted) >= 1, 10)
    t0, n0 = time.monotonic(), len(target.accepted)
    wait_until(lambda: len(target.accepted) >= n0 + 2, 10)
    per_probe = (time.monotonic() - t0) / 2
    # 30 s / 30 = one probe a second (the checker ticks every 50 ms; a loaded machine only delays it).
    assert 0.9 < per_probe < 3.0, per_probe
    # The target sees a probe's connection before the checker has recorded its result.
    wait_until(lambda: _probes(dns, hc) >= 3, 5, what="the third probe recorded")


def test_deleted_checks_are_forgotten_and_unknown_ids_are_healthy(dns: DnsServer, route53: Any,
                                                                  tcp_target: Callable[[], TcpTarget]) -> None:
    target = tcp_target()
    hc = _check(route53, "gone", Type="TCP", IPAddress=target.host, Port=target.port)
    wait_until(lambda: dns.health.status(hc) is not None, 10)
    route53.delete_health_check(HealthCheckId=hc)
    wait_until(lambda: dns.health.status(hc) is None, 10)
    assert dns.health.healthy(hc) and dns.health.healthy("no-such-check")
