"""dbdrill's DNS: an authoritative server for static records and moto's Route53 zones, health checks, and a
resolver hook for Python clients in the test process."""
from __future__ import annotations

from harness.dns.resolver import ResolverHook, query
from harness.dns.server import DnsServer, current_server, dns_exports, running_server

__all__ = ["DnsServer", "ResolverHook", "current_server", "dns_exports", "query", "running_server"]
