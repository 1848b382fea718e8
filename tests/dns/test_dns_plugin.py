"""The DNS fixtures as users meet them (pytester): cleanup after passing and failing tests, the TTL cap
setting from the command line and the ini file, leftover faults healed, and a plugin load without dnslib."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from harness.dns.resolver import installed_hooks

pytest_plugins = ["pytester"]

CLEANUP = """
import socket
import pytest

ORIGINAL = socket.getaddrinfo
RDS = "mydb.aaaaaaaaaa.us-east-1.rds.amazonaws.com"


def test_a_adds_a_record_and_fails(dns, dns_resolver):
    dns.set_record(RDS, "A", ["127.42.0.1"])
    dns.add_zone("corp.internal")
    assert socket.getaddrinfo is not ORIGINAL
    assert socket.gethostbyname(RDS) == "127.42.0.1"
    raise AssertionError("boom")


def test_b_sees_nothing_left(dns):
    assert socket.getaddrinfo is ORIGINAL
    assert dns.records() == {}
    assert not dns.served("x.corp.internal")
    assert dns.answer(RDS).rcode == "REFUSED", "the zone the record brought went with it"
"""


def test_fixtures_clean_up_after_a_failing_test(pytester: pytest.Pytester) -> None:
    original = socket.getaddrinfo
    pytester.makepyfile(test_cleanup=CLEANUP)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert socket.getaddrinfo is original and installed_hooks() == []


def test_ttl_cap_from_cli_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cap="""
        def test_cap(dns_resolver, request):
            assert dns_resolver.ttl_cap == float(request.config.getoption("--expected"))
            assert dns_resolver.effective_ttl(300) == dns_resolver.ttl_cap
        """)
    pytester.makeconftest("def pytest_addoption(parser):\n    parser.addoption('--expected')\n")
    pytester.runpytest("--dbdrill-dns-ttl-cap=1", "--expected=1").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\ndbdrill_dns_ttl_cap = 2.5\n")
    pytester.runpytest("--expected=2.5").assert_outcomes(passed=1)


def test_a_fault_left_running_is_healed_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leftover="""
        from faults.dns import servfail

        def test_a_starts_and_forgets(dns):
            servfail("*.internal").start()
            assert len(dns.rules()) == 1

        def test_b_clean(dns):
            assert dns.rules() == []
            dns.set_record("x.svc.internal", "A", ["127.0.0.1"])
            assert dns.answer("x.svc.internal").rcode == "NOERROR"
        """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_loading_the_plugin_does_not_import_dns_libraries() -> None:
    code = ("import sys, harness.plugin, harness.plugin.dns\n"
            "heavy = [m for m in ('dnslib', 'dns', 'harness.dns', 'moto') if m in sys.modules]\n"
            "print(heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
