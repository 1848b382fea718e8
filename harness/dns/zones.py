"""Authoritative answers from the harness's static records and every moto Route53 hosted zone, with Route53's
routing policies (alias, weighted, failover, multivalue, latency, geolocation) driven by health checks."""
from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.dns.records import (
    RecordSet,
    StaticRecords,
    from_moto,
    in_domain,
    norm,
    parent,
    soa_for,
)

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
MAX_CHAIN = 8
MAX_MULTIVALUE = 8

# One answer record: (owner, type, ttl, value in zone-file syntax).
Rec = tuple[str, str, int, str]


@dataclass
class Answer:
    """What the server says for one question. ``zone`` is the zone that answered (None: not ours)."""

    rcode: str = "NOERROR"
    records: list[Rec] = field(default_factory=list)
    authority: list[Rec] = field(default_factory=list)
    zone: str | None = None

    @property
    def authoritative(self) -> bool:
        return self.zone is not None

    def values(self, rtype: str) -> list[str]:
        return [r[3] for r in self.records if r[1] == rtype]


@dataclass
class _Authority:
    zone: str
    kind: str  # "route53" | "static"
    rrsets: list[RecordSet]
    soa: RecordSet

    def negative(self) -> Rec:
        """The SOA for a negative answer, its TTL the lesser of the SOA's TTL and its minimum (RFC 2308)."""
        value = self.soa.values[0] if self.soa.values else ""
        try:
            minimum = int(value.split()[-1])
        except (ValueError, IndexError):
            minimum = self.soa.ttl
        return (self.zone, "SOA", min(self.soa.ttl, minimum), value)


class Answerer:
    """Answers questions. ``healthy(check_id)`` says whether a Route53 health check passes; ``lock()`` guards
    moto's objects (the AWS endpoint's request threads change them)."""

    def __init__(self, static: StaticRecords, *, healthy: Callable[[str], bool] | None = None,
                 lock: Callable[[], Any] | None = None, rng: random.Random | None = None,
                 client_region: str | None = None) -> None:
        self.static = static
        self.healthy_check = healthy or (lambda _id: True)
        self._lock = lock or contextlib.nullcontext
        self.rng = rng or random.Random()
        # Latency records: the region whose record the (single, local) client is "closest" to.
        self.client_region = client_region

    # -- moto -------------------------------------------------------------------------------------------
    def _moto_zones(self) -> list[Any]:
        """Every moto Route53 hosted zone of every account (call under the lock)."""
        try:
            from moto.backends import get_backend
        except ImportError:
            return []
        # dict's own methods: BackendDict's __getitem__ would create accounts and regions on a mere read.
        backends: Any = get_backend("route53")
        zones: list[Any] = []
        for _account, regional in sorted(dict.items(backends), key=lambda kv: kv[0] != ACCOUNT_ID):
            backend = dict.get(regional, "aws")
            if backend is not None:
                zones.extend(list(backend.zones.values()))
        return zones

    def route53_zone_names(self) -> set[str]:
        with self._lock():
            return {norm(z.name) for z in self._moto_zones()}

    def _route53_authority(self, name: str) -> _Authority | None:
        with self._lock():
            matching = [z for z in self._moto_zones() if in_domain(name, norm(z.name))]
            if not matching:
                return None
            zone = max((norm(z.name) for z in matching), key=len)
            rrsets: list[RecordSet] = []
            seen: set[tuple[str, str, str | None]] = set()
            # Zones of one name (a public and a private one, say) are served merged, the oldest first.
            for z in matching:
                if norm(z.name) != zone:
                    continue
                for rr in list(z.rrsets):
                    rs = from_moto(rr, z.id)
                    key = (rs.name, rs.rtype, rs.set_id)
                    if key not in seen:
                        seen.add(key)
                        rrsets.append(rs)
        soa = next((r for r in rrsets if r.rtype == "SOA" and r.name == zone and r.values), None)
        return _Authority(zone, "route53", rrsets, soa or soa_for(zone, 900))

    # -- authority ---------------------------------------------------------------------------------------
    def served(self, name: str) -> bool:
        """The server is authoritative for ``name`` (a static zone or a Route53 zone holds it)."""
        n = norm(name)
        if self.static.zone_of(n) is not None:
            return True
        return any(in_domain(n, z) for z in self.route53_zone_names())

    def negative_soa(self, name: str) -> Rec | None:
        """The SOA record a negative answer for ``name`` carries (None: not ours)."""
        auth = self._authority(norm(name))
        return None if auth is None else auth.negative()

    def _authority(self, name: str) -> _Authority | None:
        static_zone = self.static.zone_of(name)
        r53 = self._route53_authority(name)
        if static_zone is not None:
            exact = self.static.lookup(name) if name in self.static.names() else []
            if r53 is None or len(static_zone) > len(r53.zone) or (len(static_zone) == len(r53.zone) and exact):
                return _Authority(static_zone, "static", exact, soa_for(static_zone))
        return r53

    def _lookup(self, auth: _Authority, name: str) -> tuple[list[RecordSet], bool]:
        """Record sets at ``name`` (wildcards expanded) and whether the name exists at all."""
        if auth.kind == "static":
            exists = bool(auth.rrsets) or name == auth.zone or self.static.has_below(name)
            return auth.rrsets, exists
        exact = [r for r in auth.rrsets if r.name == name]
        if exact:
            return exact, True
        if any(r.name.endswith("." + name) for r in auth.rrsets):
            return [], True
        # RFC 4592: a wildcard at the closest encloser answers for names that do not exist.
        anc = parent(name)
        while anc and in_domain(anc, auth.zone):
            wild = [r for r in auth.rrsets if r.name == "*." + anc]
            if wild:
                return [_renamed(r, name) for r in wild], True
            if any(in_domain(r.name, anc) for r in auth.rrsets):
                break
            anc = parent(anc)
        return [], False

    # -- answers -----------------------------------------------------------------------------------------
    def answer(self, qname: str, qtype: str) -> Answer:
        return self._answer(norm(qname), qtype.upper(), set(), 0)

    def _answer(self, name: str, qtype: str, seen: set[str], depth: int) -> Answer:
        auth = self._authority(name)
        if auth is None:
            return Answer("REFUSED")
        seen = seen | {name}
        sets, exists = self._lookup(auth, name)
        if not sets:
            return Answer("NOERROR" if exists else "NXDOMAIN", authority=[auth.negative()], zone=auth.zone)
        out = Answer(zone=auth.zone)
        cnames = [s for s in sets if s.rtype == "CNAME"]
        if cnames and qtype not in ("CNAME", "ANY"):
            for s in self._route(cnames, depth):
                target = norm(s.alias.dns_name if s.alias else s.values[0])
                out.records.append((name, "CNAME", s.ttl, target + "."))
                if depth >= MAX_CHAIN or target in seen:
                    logger.warning("CNAME chain at %s stops at %s (loop or longer than %d)", name, target, MAX_CHAIN)
                    return out
                sub = self._answer(target, qtype, seen, depth + 1)
                if sub.rcode != "REFUSED":
                    out.records.extend(sub.records)
                    out.rcode = sub.rcode
                    if not sub.records:
                        out.authority = sub.authority
            return out
        types = sorted({s.rtype for s in sets}) if qtype == "ANY" else [qtype]
        for t in types:
            for s in self._route([s for s in sets if s.rtype == t], depth):
                out.records.extend(self._records_of(s, name, seen, depth))
        if not out.records:
            out.authority = [auth.negative()]
        return out

    def _records_of(self, s: RecordSet, owner: str, seen: set[str], depth: int) -> list[Rec]:
        if s.alias is None:
            return [(owner, s.rtype, s.ttl, v) for v in s.values]
        if depth >= MAX_CHAIN or s.alias.dns_name in seen:
            logger.warning("alias %s -> %s loops or chains deeper than %d", owner, s.alias.dns_name, MAX_CHAIN)
            return []
        # Alias semantics: the target's records (CNAMEs flattened) under the alias's own name, with their TTL.
        sub = self._answer(s.alias.dns_name, s.rtype, seen, depth + 1)
        if sub.rcode == "REFUSED":
            logger.debug("alias %s -> %s: the target is not served here", owner, s.alias.dns_name)
        return [(owner, t, ttl, v) for _o, t, ttl, v in sub.records if t == s.rtype]

    # -- health and routing ------------------------------------------------------------------------------
    def healthy(self, s: RecordSet, depth: int = 0) -> bool:
        if s.health_check_id and not self.healthy_check(s.health_check_id):
            return False
        if s.alias is not None and s.alias.evaluate_health:
            return self._name_healthy(s.alias.dns_name, s.rtype, depth + 1)
        return True

    def _name_healthy(self, name: str, rtype: str, depth: int) -> bool:
        """Route53's EvaluateTargetHealth: the target is healthy if one of its record sets is."""
        if depth > MAX_CHAIN:
            return False
        auth = self._authority(name)
        if auth is None:
            return True
        sets, _ = self._lookup(auth, name)
        sets = [s for s in sets if s.rtype in (rtype, "CNAME")]
        return any(self.healthy(s, depth) for s in sets)

    def _route(self, cands: list[RecordSet], depth: int) -> list[RecordSet]:
        """The record sets a query gets among those of one name and type."""
        if len(cands) <= 1 or not any(c.routed for c in cands):
            return cands[:1] if cands and cands[0].rtype == "CNAME" else cands
        healthy = [c for c in cands if self.healthy(c, depth)]
        failover = [c for c in cands if c.failover]
        if failover:
            primary = next((c for c in failover if c.failover == "PRIMARY"), None)
            secondary = next((c for c in failover if c.failover == "SECONDARY"), None)
            for choice in (primary, secondary):
                if choice is not None and choice in healthy:
                    return [choice]
            # Both unhealthy: Route53 answers with the primary.
            return [primary or secondary]  # type: ignore[list-item]
        weighted = [c for c in cands if c.weight is not None]
        if weighted:
            pool = [c for c in weighted if c in healthy] or weighted
            positive = [c for c in pool if (c.weight or 0) > 0]
            if positive:
                return self.rng.choices(positive, weights=[c.weight or 0 for c in positive], k=1)
            return [self.rng.choice(pool)]
        multi = [c for c in cands if c.multivalue]
        if multi:
            pool = [c for c in multi if c in healthy] or multi
            return self.rng.sample(pool, min(len(pool), MAX_MULTIVALUE))
        latency = [c for c in cands if c.region]
        if latency:
            pool = [c for c in latency if c in healthy] or latency
            near = [c for c in pool if c.region == self.client_region]
            return [near[0] if near else sorted(pool, key=lambda c: c.region or "")[0]]
        geo = [c for c in cands if c.geo is not None]
        if geo:
            pool = [c for c in geo if c in healthy] or geo
            default = [c for c in pool if dict(c.geo or ()).get("CountryCode") == "*"]
            return [(default or pool)[0]]
        return cands[:1]


def _renamed(r: RecordSet, name: str) -> RecordSet:
    from dataclasses import replace

    return replace(r, name=name)
