"""Route53 hosted zones made with boto3 answered by the DNS server: record types, TTLs, CNAME chasing, aliases,
wildcards, weighted / failover / multivalue routing, private zones, and changes visible at once."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from dns_kit import ask, authoritative, rcode, values

from harness.dns.server import DnsServer


def test_record_types_and_ttls(dns: DnsServer, zone: Callable[..., str], upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    upsert(z, "www.example.com", "A", ["127.30.0.1", "127.30.0.2"], ttl=42)
    upsert(z, "www.example.com", "AAAA", ["::1"], ttl=43)
    upsert(z, "example.com", "TXT", ['"v=spf1 -all"', '"hello world"'], ttl=44)
    upsert(z, "example.com", "MX", ["10 mail.example.com", "20 backup.example.com."], ttl=45)
    upsert(z, "_pg._tcp.example.com", "SRV", ["1 10 5432 db.example.com"], ttl=46)
    a = ask(dns, "www.example.com")
    assert rcode(a) == "NOERROR" and authoritative(a)
    assert sorted(values(a)) == ["127.30.0.1", "127.30.0.2"] and a.answer[0].ttl == 42
    aaaa = ask(dns, "WWW.Example.COM", "AAAA")
    assert values(aaaa, "AAAA") == ["::1"] and aaaa.answer[0].ttl == 43
    txt = ask(dns, "example.com", "TXT", tcp=True)
    assert sorted(values(txt, "TXT")) == ['"hello world"', '"v=spf1 -all"'] and txt.answer[0].ttl == 44
    assert sorted(values(ask(dns, "example.com", "MX"), "MX")) == ["10 mail.example.com.", "20 backup.example.com."]
    assert values(ask(dns, "_pg._tcp.example.com", "SRV"), "SRV") == ["1 10 5432 db.example.com."]
    soa = ask(dns, "example.com", "SOA")
    assert values(soa, "SOA")[0].startswith("ns-2048.awsdns-64.com. hostmaster.example.com. 1 7200")
    assert len(values(ask(dns, "example.com", "NS"), "NS")) == 4


def test_nxdomain_carries_the_zone_soa_and_names_outside_are_refused(dns: DnsServer, zone: Callable[..., str],
                                                                     upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    upsert(z, "a.b.example.com", "A", ["127.30.0.1"])
    missing = ask(dns, "nope.example.com")
    assert rcode(missing) == "NXDOMAIN" and authoritative(missing)
    assert missing.authority[0].name.to_text() == "example.com." and missing.authority[0].ttl == 900
    empty_non_terminal = ask(dns, "b.example.com")
    assert rcode(empty_non_terminal) == "NOERROR" and not empty_non_terminal.answer
    assert rcode(ask(dns, "a.b.example.com", "TXT")) == "NOERROR"
    outside = ask(dns, "example.net")
    assert rcode(outside) == "REFUSED" and not authoritative(outside)


def test_cname_chased_within_the_zone_and_into_static_records(dns: DnsServer, zone: Callable[..., str],
                                                              upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    upsert(z, "app.example.com", "CNAME", ["web.example.com"], ttl=11)
    upsert(z, "web.example.com", "A", ["127.30.0.5"], ttl=12)
    upsert(z, "db.example.com", "CNAME", ["prod.aaaaaaaaaa.us-east-1.rds.amazonaws.com"], ttl=13)
    upsert(z, "ext.example.com", "CNAME", ["somewhere.example.org"])
    upsert(z, "loop1.example.com", "CNAME", ["loop2.example.com"])
    upsert(z, "loop2.example.com", "CNAME", ["loop1.example.com"])
    dns.set_record("prod.aaaaaaaaaa.us-east-1.rds.amazonaws.com", "A", ["127.30.9.9"])
    msg = ask(dns, "app.example.com")
    assert [(r.name.to_text(), r.ttl) for r in msg.answer] == [("app.example.com.", 11), ("web.example.com.", 12)]
    assert values(msg) == ["127.30.0.5"]
    assert values(ask(dns, "db.example.com")) == ["127.30.9.9"]
    ext = ask(dns, "ext.example.com")
    assert rcode(ext) == "NOERROR" and values(ext, "CNAME") == ["somewhere.example.org."] and not values(ext)
    loop = ask(dns, "loop1.example.com")
    assert rcode(loop) == "NOERROR" and len(values(loop, "CNAME")) == 2


def test_alias_answers_with_the_target_records_under_its_own_name(dns: DnsServer, zone: Callable[..., str],
                                                                  upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    upsert(z, "origin.example.com", "A", ["127.30.1.1"], ttl=21)
    upsert(z, "example.com", "A", None, AliasTarget={"HostedZoneId": z, "DNSName": "origin.example.com.",
                                                     "EvaluateTargetHealth": False})
    dns.set_record("mycluster.cluster-abc.us-east-1.rds.amazonaws.com", "CNAME",
                   ["inst-1.cluster-abc.us-east-1.rds.amazonaws.com"], ttl=5)
    dns.set_record("inst-1.cluster-abc.us-east-1.rds.amazonaws.com", "A", ["127.30.2.2"], ttl=5)
    upsert(z, "db.example.com", "A", None, AliasTarget={
        "HostedZoneId": z, "DNSName": "mycluster.cluster-abc.us-east-1.rds.amazonaws.com",
        "EvaluateTargetHealth": False})
    apex = ask(dns, "example.com")
    assert [(r.name.to_text(), r.ttl) for r in apex.answer] == [("example.com.", 21)]
    assert values(apex) == ["127.30.1.1"]
    flattened = ask(dns, "db.example.com")
    assert [r.name.to_text() for r in flattened.answer] == ["db.example.com."]
    assert values(flattened) == ["127.30.2.2"] and not values(flattened, "CNAME")


def test_wildcards_answer_for_names_that_do_not_exist(dns: DnsServer, zone: Callable[..., str],
                                                      upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    upsert(z, "*.apps.example.com", "A", ["127.30.3.3"])
    upsert(z, "fixed.apps.example.com", "A", ["127.30.3.4"])
    wild = ask(dns, "anything.apps.example.com")
    assert values(wild) == ["127.30.3.3"] and wild.answer[0].name.to_text() == "anything.apps.example.com."
    assert values(ask(dns, "fixed.apps.example.com")) == ["127.30.3.4"]
    assert rcode(ask(dns, "x.other.example.com")) == "NXDOMAIN"


def test_weighted_records_follow_their_weights(dns: DnsServer, zone: Callable[..., str],
                                               upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    for ident, weight, ip in (("blue", 1, "127.30.4.1"), ("green", 3, "127.30.4.2"), ("off", 0, "127.30.4.3")):
        upsert(z, "api.example.com", "A", [ip], ttl=1, SetIdentifier=ident, Weight=weight)
    n = 400
    seen = Counter(values(ask(dns, "api.example.com"))[0] for _ in range(n))
    assert seen["127.30.4.3"] == 0
    # Binomial(400, 0.25): mean 100, sd 8.7; 5 sd either side fails once in ~3.5 million runs.
    sd = math.sqrt(n * 0.25 * 0.75)
    assert abs(seen["127.30.4.1"] - 100) < 5 * sd and seen["127.30.4.1"] + seen["127.30.4.2"] == n


def test_all_zero_weights_share_evenly(dns: DnsServer, zone: Callable[..., str], upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    upsert(z, "zero.example.com", "A", ["127.30.5.1"], SetIdentifier="a", Weight=0)
    upsert(z, "zero.example.com", "A", ["127.30.5.2"], SetIdentifier="b", Weight=0)
    seen = Counter(dns.answer("zero.example.com", "A").values("A")[0] for _ in range(200))
    assert set(seen) == {"127.30.5.1", "127.30.5.2"} and min(seen.values()) > 50


def test_failover_follows_the_primary_health_check(dns: DnsServer, route53: Any, zone: Callable[..., str],
                                                   upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    hc = route53.create_health_check(CallerReference="p", HealthCheckConfig={
        "Type": "TCP", "IPAddress": "127.30.6.1", "Port": 5432, "Disabled": True})["HealthCheck"]["Id"]
    hc2 = route53.create_health_check(CallerReference="s", HealthCheckConfig={
        "Type": "TCP", "IPAddress": "127.30.6.2", "Port": 5432, "Disabled": True})["HealthCheck"]["Id"]
    upsert(z, "db.example.com", "A", ["127.30.6.1"], ttl=5, SetIdentifier="p", Failover="PRIMARY", HealthCheckId=hc)
    upsert(z, "db.example.com", "A", ["127.30.6.2"], ttl=5, SetIdentifier="s", Failover="SECONDARY",
           HealthCheckId=hc2)
    assert values(ask(dns, "db.example.com")) == ["127.30.6.1"]
    dns.health.force(hc, False)
    assert values(ask(dns, "db.example.com")) == ["127.30.6.2"]
    dns.health.force(hc2, False)
    assert values(ask(dns, "db.example.com")) == ["127.30.6.1"], "both unhealthy: Route53 answers the primary"
    dns.health.force(hc, None)
    dns.health.force(hc2, None)
    assert values(ask(dns, "db.example.com")) == ["127.30.6.1"]


def test_alias_evaluate_target_health_fails_over(dns: DnsServer, route53: Any, zone: Callable[..., str],
                                                 upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    hc = route53.create_health_check(CallerReference="w", HealthCheckConfig={
        "Type": "TCP", "IPAddress": "127.30.7.1", "Port": 80, "Disabled": True})["HealthCheck"]["Id"]
    upsert(z, "east.example.com", "A", ["127.30.7.1"], HealthCheckId=hc)
    upsert(z, "west.example.com", "A", ["127.30.7.2"])
    alias = {"HostedZoneId": z, "EvaluateTargetHealth": True}
    upsert(z, "svc.example.com", "A", None, SetIdentifier="p", Failover="PRIMARY",
           AliasTarget={**alias, "DNSName": "east.example.com"})
    upsert(z, "svc.example.com", "A", None, SetIdentifier="s", Failover="SECONDARY",
           AliasTarget={**alias, "DNSName": "west.example.com"})
    assert values(ask(dns, "svc.example.com")) == ["127.30.7.1"]
    dns.health.force(hc, False)
    assert values(ask(dns, "svc.example.com")) == ["127.30.7.2"]


def test_multivalue_answers_only_healthy_records(dns: DnsServer, route53: Any, zone: Callable[..., str],
                                                 upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    hc = route53.create_health_check(CallerReference="m", HealthCheckConfig={
        "Type": "TCP", "IPAddress": "127.30.8.1", "Port": 80, "Disabled": True})["HealthCheck"]["Id"]
    upsert(z, "mv.example.com", "A", ["127.30.8.1"], SetIdentifier="1", MultiValueAnswer=True, HealthCheckId=hc)
    upsert(z, "mv.example.com", "A", ["127.30.8.2"], SetIdentifier="2", MultiValueAnswer=True)
    assert sorted(values(ask(dns, "mv.example.com"))) == ["127.30.8.1", "127.30.8.2"]
    dns.health.force(hc, False)
    assert values(ask(dns, "mv.example.com")) == ["127.30.8.2"]


def test_private_and_nested_zones_are_served(dns: DnsServer, zone: Callable[..., str],
                                             upsert: Callable[..., None]) -> None:
    private = zone("corp.internal", private=True)
    upsert(private, "db.corp.internal", "A", ["127.30.9.1"])
    parent = zone("example.com")
    child = zone("eu.example.com")
    upsert(parent, "www.example.com", "A", ["127.30.9.2"])
    upsert(child, "www.eu.example.com", "A", ["127.30.9.3"])
    assert values(ask(dns, "db.corp.internal")) == ["127.30.9.1"]
    assert values(ask(dns, "www.example.com")) == ["127.30.9.2"]
    assert values(ask(dns, "www.eu.example.com")) == ["127.30.9.3"]
    nx = ask(dns, "nope.eu.example.com")
    assert rcode(nx) == "NXDOMAIN" and nx.authority[0].name.to_text() == "eu.example.com."


def test_changes_are_visible_to_the_next_query(dns: DnsServer, zone: Callable[..., str],
                                               upsert: Callable[..., None]) -> None:
    z = zone("example.com")
    assert rcode(ask(dns, "db.example.com")) == "NXDOMAIN"
    upsert(z, "db.example.com", "A", ["127.30.10.1"], ttl=300)
    assert values(ask(dns, "db.example.com")) == ["127.30.10.1"]
    upsert(z, "db.example.com", "A", ["127.30.10.2"], ttl=300)
    assert values(ask(dns, "db.example.com")) == ["127.30.10.2"]
    upsert(z, "db.example.com", "A", ["127.30.10.2"], ttl=300, action="DELETE")
    assert rcode(ask(dns, "db.example.com")) == "NXDOMAIN"
