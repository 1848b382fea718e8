"""The DNS server over real UDP and TCP with the harness's static records: answers, AA, TTLs, NXDOMAIN,
REFUSED, round robin, truncation, malformed packets, and a program that is not this process."""
from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from collections import Counter

import dns.flags as dflags
import dns.message as dmsg
import dns.query as dquery
import pytest
from dns_kit import ask, authoritative, rcode, values

from harness.dns import dns_exports, query
from harness.dns.server import DnsServer
from harness.errors import HarnessError

RDS = "mydb.aaaaaaaaaa.us-east-1.rds.amazonaws.com"


def test_listens_on_its_own_loopback_address_udp_and_tcp(dns: DnsServer) -> None:
    host, port = dns.address
    assert ipaddress.ip_address(host).is_loopback and host != "127.0.0.1"
    if os.geteuid() == 0:
        assert port == 53
    dns.set_record(RDS, "A", ["127.20.0.9"])
    for tcp in (False, True):
        msg = ask(dns, RDS, tcp=tcp)
        assert rcode(msg) == "NOERROR" and authoritative(msg)
        assert values(msg) == ["127.20.0.9"]
        assert msg.answer[0].ttl == 5
        assert not msg.flags & dflags.RA
    assert dns_exports(dns) == {"DBDRILL_DNS": f"{host}:{port}", "DBDRILL_DNS_HOST": host,
                                "DBDRILL_DNS_PORT": str(port)}


def test_ttl_and_replacement_are_visible_at_once(dns: DnsServer) -> None:
    dns.set_record(RDS, "A", ["127.20.0.9"], ttl=30)
    assert ask(dns, RDS).answer[0].ttl == 30
    dns.set_record(RDS, "A", ["127.20.0.10"], ttl=1)
    msg = ask(dns, RDS)
    assert values(msg) == ["127.20.0.10"] and msg.answer[0].ttl == 1
    assert dns.records()[(RDS, "A")] == (["127.20.0.10"], 1)


def test_cluster_cname_is_chased_and_reader_endpoint_round_robins(dns: DnsServer) -> None:
    base = "cluster-abc.us-east-1.rds.amazonaws.com"
    dns.set_record(f"inst-1.{base}", "A", ["127.20.1.1"])
    dns.set_record(f"inst-2.{base}", "A", ["127.20.1.2"])
    dns.set_record(f"inst-3.{base}", "A", ["127.20.1.3"])
    dns.set_record(f"mycluster.{base}", "CNAME", [f"inst-1.{base}"])
    dns.set_record("mycluster.cluster-ro-abc.us-east-1.rds.amazonaws.com", "CNAME",
                   [f"inst-2.{base}", f"inst-3.{base}"])
    msg = ask(dns, f"mycluster.{base}")
    assert values(msg, "CNAME") == [f"inst-1.{base}."] and values(msg) == ["127.20.1.1"]
    seen = Counter(values(ask(dns, "mycluster.cluster-ro-abc.us-east-1.rds.amazonaws.com"))[0] for _ in range(6))
    assert seen == {"127.20.1.2": 3, "127.20.1.3": 3}
    cname_only = ask(dns, f"mycluster.{base}", "CNAME")
    assert values(cname_only, "CNAME") == [f"inst-1.{base}."] and values(cname_only) == []


def test_several_a_values_all_answered_in_rotating_order(dns: DnsServer) -> None:
    dns.set_record("multi.svc.internal", "A", ["127.20.2.1", "127.20.2.2"])
    first = [values(ask(dns, "multi.svc.internal")) for _ in range(2)]
    assert sorted(first[0]) == sorted(first[1]) == ["127.20.2.1", "127.20.2.2"]
    assert first[0] != first[1]


def test_nxdomain_with_soa_for_unknown_names_in_a_zone_and_nodata_for_other_types(dns: DnsServer) -> None:
    dns.set_record(RDS, "A", ["127.20.0.9"])
    msg = ask(dns, "other.aaaaaaaaaa.us-east-1.rds.amazonaws.com")
    assert rcode(msg) == "NXDOMAIN" and authoritative(msg) and not msg.answer
    [soa] = msg.authority
    assert soa.name.to_text() == "aaaaaaaaaa.us-east-1.rds.amazonaws.com." and soa.ttl == 5
    nodata = ask(dns, RDS, "AAAA")
    assert rcode(nodata) == "NOERROR" and not nodata.answer and len(nodata.authority) == 1
    dns.delete_record(RDS)
    assert rcode(ask(dns, RDS)) == "NXDOMAIN"


def test_names_outside_every_zone_are_refused_never_forwarded(dns: DnsServer) -> None:
    for name in ("example.org", "www.python.org", "localhost"):
        msg = ask(dns, name)
        assert rcode(msg) == "REFUSED" and not authoritative(msg) and not msg.answer
    assert not dns.served("www.python.org")


def test_add_zone_makes_a_whole_domain_authoritative(dns: DnsServer) -> None:
    dns.add_zone("corp.internal")
    assert dns.served("anything.deep.corp.internal")
    msg = ask(dns, "anything.deep.corp.internal")
    assert rcode(msg) == "NXDOMAIN" and msg.authority[0].name.to_text() == "corp.internal."


def test_bad_records_are_refused_with_the_reason(dns: DnsServer) -> None:
    with pytest.raises(HarnessError, match="not an IPv4 address"):
        dns.set_record("x.svc.internal", "A", ["db.example.com"])
    with pytest.raises(HarnessError, match="invalid DNS name"):
        dns.set_record("bad name.internal", "A", ["127.0.0.1"])
    with pytest.raises(HarnessError, match="unsupported record type"):
        dns.set_record("x.svc.internal", "WHAT", ["1"])
    with pytest.raises(HarnessError, match="at least one value"):
        dns.set_record("x.svc.internal", "A", [])
    dns.set_record("c.svc.internal", "CNAME", ["y.svc.internal"])
    with pytest.raises(HarnessError, match="cannot have a CNAME and other records"):
        dns.set_record("c.svc.internal", "A", ["127.0.0.1"])
    assert ("x.svc.internal", "A") not in dns.records()


def test_big_answers_are_truncated_over_udp_and_complete_over_tcp(dns: DnsServer) -> None:
    texts = [f'"{"k" * 200}-{i}"' for i in range(6)]
    dns.set_record("big.svc.internal", "TXT", texts)
    udp = ask(dns, "big.svc.internal", "TXT")
    assert udp.flags & dflags.TC and not udp.answer
    assert len(values(ask(dns, "big.svc.internal", "TXT", tcp=True), "TXT")) == 6
    before = dns.counts["tcp"]
    reply = query(dns.address, "big.svc.internal", "TXT")
    assert len(reply.rr) == 6 and dns.counts["tcp"] == before + 1


def test_edns_clients_get_bigger_udp_answers(dns: DnsServer) -> None:
    dns.set_record("big.svc.internal", "TXT", [f'"{"k" * 200}-{i}"' for i in range(6)])
    host, port = dns.address
    q = dmsg.make_query("big.svc.internal", "TXT", use_edns=0, payload=4096)
    msg = dquery.udp(q, host, port=port, timeout=5)
    assert not msg.flags & dflags.TC and len(values(msg, "TXT")) == 6 and msg.edns == 0


def test_malformed_packets_get_formerr_and_the_server_keeps_serving(dns: DnsServer) -> None:
    dns.set_record(RDS, "A", ["127.20.0.9"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"\x12\x34" + b"\x01\x00\x00\x01" + b"\xff" * 30, dns.address)
        reply = s.recv(512)
    assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == 1
    assert values(ask(dns, RDS)) == ["127.20.0.9"]


def test_tcp_connection_carries_several_queries(dns: DnsServer) -> None:
    dns.set_record(RDS, "A", ["127.20.0.9"])
    host, port = dns.address
    with socket.create_connection((host, port), timeout=5) as sock:
        for _ in range(3):
            dquery.send_tcp(sock, dmsg.make_query(RDS, "A"))
            msg, _ = dquery.receive_tcp(sock)
            assert values(msg) == ["127.20.0.9"]


def test_another_program_queries_the_server(dns: DnsServer) -> None:
    dns.set_record(RDS, "A", ["127.20.0.9"])
    code = (
        "import os, dns.resolver\n"
        "r = dns.resolver.Resolver(configure=False)\n"
        "host, port = os.environ['DBDRILL_DNS'].rsplit(':', 1)\n"
        "r.nameservers = [host]; r.port = int(port)\n"
        f"a = r.resolve({RDS!r}, 'A')\n"
        "print(a[0].address, a.rrset.ttl)\n"
    )
    env = {**os.environ, **dns_exports(dns)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["127.20.0.9", "5"]
