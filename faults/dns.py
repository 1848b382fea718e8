"""DNS faults: a client that caches answers too long (stale_cache), and a DNS server that answers SERVFAIL,
NXDOMAIN, slowly (dns_latency) or not at all (dns_timeout) for some names."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from faults.base import Fault, FaultError
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.dns.resolver import ResolverHook
    from harness.dns.server import DnsRule, DnsServer

Names = str | re.Pattern[str] | Iterable[str] | None
MAX_LATENCY_MS = 60_000


class StaleCache(Fault):
    """The client resolver keeps every answer (already cached or new) for at least ``seconds``, like an app
    that caches DNS for 300 s and keeps connecting to the old address after a failover. Applies to
    ``resolver`` or to every installed resolver hook; heal restores their previous minimum."""

    kind = "dns_stale_cache"

    def __init__(self, seconds: float, *, resolver: ResolverHook | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        if not isinstance(seconds, (int, float)) or seconds <= 0:
            raise FaultError(f"stale_cache needs seconds > 0 (how long clients keep answers), got {seconds!r}",
                             fault=self)
        self.seconds = float(seconds)
        self.resolver = resolver
        self._saved: list[tuple[ResolverHook, float]] = []

    def _inject(self) -> None:
        from harness.dns.resolver import installed_hooks

        hooks = [self.resolver] if self.resolver is not None else installed_hooks()
        if not hooks:
            raise FaultError("stale_cache found no resolver hook to act on: install one first (the dns_resolver "
                             "fixture, or ResolverHook(server).install()), or pass resolver=", fault=self)
        for hook in hooks:
            self._saved.append((hook, hook.min_ttl))
            hook.min_ttl = max(hook.min_ttl, self.seconds)

    def _heal(self) -> None:
        while self._saved:
            hook, previous = self._saved.pop()
            hook.min_ttl = previous

    def describe(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def target_label(self) -> str:
        return "dns resolver"


class DnsServerFault(Fault):
    """A fault rule on the DNS server (``server`` or the running one) while active."""

    kind = "dns"
    rule_kind = "servfail"

    def __init__(self, names: Names = None, *, latency: float = 0.0, server: DnsServer | None = None,
                 name: str | None = None) -> None:
        super().__init__(name=name)
        from harness.dns.server import name_matcher

        if names is not None and not isinstance(names, (str, re.Pattern)):
            names = list(names)
        try:
            name_matcher(names)
        except HarnessError as exc:
            raise FaultError(f"{self.kind}: {exc}", fault=self) from exc
        self.names = names
        self.latency = latency
        self.server = server
        self.rule: DnsRule | None = None
        self._on: DnsServer | None = None

    def _target(self) -> DnsServer:
        if self.server is not None:
            return self.server
        from harness.dns.server import running_server

        server = running_server()
        if server is None:
            raise FaultError(f"{self.kind}: no dbdrill DNS server is running: use the `dns` fixture (or "
                             "Stack().dns) first, or pass server=", fault=self)
        return server

    def _inject(self) -> None:
        server = self._target()
        try:
            self.rule = server.add_rule(self.rule_kind, self.names, latency=self.latency)
        except HarnessError as exc:
            raise FaultError(f"{self.kind}: {exc}", fault=self) from exc
        self._on = server

    def _heal(self) -> None:
        if self._on is not None and self.rule is not None:
            self._on.remove_rule(self.rule)
        self._on = self.rule = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"names": _label(self.names)}
        if self.latency:
            out["latency_ms"] = round(self.latency * 1000, 3)
        return out

    def target_label(self) -> str:
        return f"dns {_label(self.names)}"


class ServFail(DnsServerFault):
    """The server answers SERVFAIL: getaddrinfo fails with EAI_AGAIN ("Temporary failure in name resolution")."""

    kind = "dns_servfail"
    rule_kind = "servfail"


class NxDomain(DnsServerFault):
    """The server says the names do not exist (a deleted or mistyped record)."""

    kind = "dns_nxdomain"
    rule_kind = "nxdomain"


class DnsTimeout(DnsServerFault):
    """The server never answers: clients wait their resolver timeout, then fail with EAI_AGAIN."""

    kind = "dns_timeout"
    rule_kind = "drop"


class DnsLatency(DnsServerFault):
    """Every matching answer is delayed (a slow or overloaded resolver)."""

    kind = "dns_latency"
    rule_kind = "latency"


def _label(names: Names) -> str:
    if names is None:
        return "*"
    if isinstance(names, re.Pattern):
        return f"/{names.pattern}/"
    return names if isinstance(names, str) else ",".join(names)


def stale_cache(seconds: float, *, resolver: ResolverHook | None = None, name: str | None = None) -> StaleCache:
    return StaleCache(seconds, resolver=resolver, name=name)


def servfail(names: Names = None, *, server: DnsServer | None = None, name: str | None = None) -> ServFail:
    return ServFail(names, server=server, name=name)


def nxdomain(names: Names = None, *, server: DnsServer | None = None, name: str | None = None) -> NxDomain:
    return NxDomain(names, server=server, name=name)


def dns_timeout(names: Names = None, *, server: DnsServer | None = None, name: str | None = None) -> DnsTimeout:
    return DnsTimeout(names, server=server, name=name)


def dns_latency(ms: float, names: Names = None, *, server: DnsServer | None = None,
                name: str | None = None) -> DnsLatency:
    if not isinstance(ms, (int, float)) or not 0 <= ms <= MAX_LATENCY_MS:
        raise FaultError(f"dns_latency needs 0..{MAX_LATENCY_MS} ms, got {ms!r}")
    return DnsLatency(names, latency=ms / 1000.0, server=server, name=name)
