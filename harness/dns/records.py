"""Record sets as the DNS server sees them (from the harness's static records or Route53), names, and wire RRs."""
from __future__ import annotations

import functools
import itertools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError

# Types a record set may hold. ANY is a query type only.
RECORD_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT", "MX", "NS", "SOA", "SRV", "PTR", "CAA", "SPF", "NAPTR", "DS"})
_OCTAL = re.compile(r"\\(\d{3})")
_LABEL = re.compile(r"^(\*|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)$")
DEFAULT_TTL = 5
# Negative answers of static zones are cached this long (RFC 2308: the SOA minimum).
STATIC_NEGATIVE_TTL = 5


def norm(name: str) -> str:
    """Canonical form of a DNS name: lower case, no trailing dot, Route53's octal escapes (``\\052``) decoded."""
    name = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), str(name).strip())
    return name.rstrip(".").lower()


def check_name(name: str) -> str:
    """``norm(name)`` if it is a valid host name (labels of letters, digits, hyphens; ``*`` as a first label)."""
    n = norm(name)
    labels = n.split(".")
    if not n or len(n) > 253 or not all(_LABEL.match(lab) for lab in labels) or "*" in labels[1:]:
        raise HarnessError(f"invalid DNS name {name!r}: use dot-separated labels of letters, digits and hyphens "
                           "(1-63 characters each, e.g. mydb.abc123.us-east-1.rds.amazonaws.com)")
    return n


def in_domain(name: str, domain: str) -> bool:
    """``name`` is ``domain`` or below it (both normalised)."""
    return name == domain or name.endswith("." + domain)


def parent(name: str) -> str:
    return name.split(".", 1)[1] if "." in name else ""


def check_type(rtype: str) -> str:
    t = str(rtype).upper()
    if t not in RECORD_TYPES:
        raise HarnessError(f"unsupported record type {rtype!r}: use one of {', '.join(sorted(RECORD_TYPES))}")
    return t


@dataclass(frozen=True)
class Alias:
    """A Route53 alias: answer with ``dns_name``'s records under the alias's own name."""

    dns_name: str
    evaluate_health: bool = False
    zone_id: str | None = None


@dataclass(frozen=True)
class RecordSet:
    """One record set with its routing policy fields (Route53's names, normalised)."""

    name: str
    rtype: str
    ttl: int
    values: tuple[str, ...] = ()
    set_id: str | None = None
    weight: int | None = None
    failover: str | None = None
    health_check_id: str | None = None
    alias: Alias | None = None
    region: str | None = None
    multivalue: bool = False
    geo: tuple[tuple[str, str], ...] | None = None
    source: str = "static"

    @property
    def routed(self) -> bool:
        return self.set_id is not None


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def from_moto(rrset: Any, source: str) -> RecordSet:
    """Convert a moto ``RecordSet`` (values are strings after change_resource_record_sets, dicts for the SOA
    moto makes with a zone)."""
    values = tuple(str(v.get("Value", "")) if isinstance(v, dict) else str(v) for v in (rrset.records or ()))
    alias = None
    if rrset.alias_target:
        target = rrset.alias_target
        alias = Alias(norm(target.get("DNSName", "")), _truthy(target.get("EvaluateTargetHealth", False)),
                      target.get("HostedZoneId"))
    weight = rrset.weight
    geo = rrset.geo_location
    return RecordSet(
        name=norm(rrset.name), rtype=str(rrset.type).upper(),
        ttl=int(rrset.ttl) if rrset.ttl not in (None, "") else (60 if alias is None else 0),
        values=values, set_id=rrset.set_identifier,
        weight=int(weight) if weight not in (None, "") else None,
        failover=str(rrset.failover).upper() if rrset.failover else None,
        health_check_id=rrset.health_check_id or None, alias=alias, region=rrset.region or None,
        multivalue=_truthy(rrset.multi_value_answer) if rrset.multi_value_answer is not None else False,
        geo=tuple(sorted((str(k), str(v)) for k, v in geo.items())) if isinstance(geo, dict) else None,
        source=source,
    )


@functools.lru_cache(maxsize=4096)
def _rdata(rtype: str, value: str) -> Any:
    from dnslib import RR

    try:
        return RR.fromZone(f"x. 0 IN {rtype} {value}")[0].rdata
    except Exception as exc:
        raise HarnessError(f"cannot encode {rtype} value {value!r}: {exc}") from exc


def check_values(rtype: str, values: Iterable[str]) -> tuple[str, ...]:
    """Values made canonical and proven encodable (HarnessError naming the bad one)."""
    out = tuple(str(v).strip() for v in values)
    if not out:
        raise HarnessError(f"a {rtype} record needs at least one value")
    if rtype == "A":
        import ipaddress

        for v in out:
            try:
                ipaddress.IPv4Address(v)
            except ValueError as exc:
                raise HarnessError(f"A record value {v!r} is not an IPv4 address") from exc
    for v in out:
        _rdata(rtype, v)
    return out


def make_rr(owner: str, rtype: str, ttl: int, value: str) -> Any:
    """A dnslib RR for ``value`` (zone-file syntax of ``rtype``) owned by ``owner``."""
    from dnslib import QTYPE, RR

    return RR(owner + ".", getattr(QTYPE, rtype), ttl=max(0, int(ttl)), rdata=_rdata(rtype, value))


def soa_for(zone: str, ttl: int = STATIC_NEGATIVE_TTL) -> RecordSet:
    """A synthetic SOA for a zone the harness serves without Route53."""
    return RecordSet(zone, "SOA", ttl, (f"ns.dbdrill.invalid. hostmaster.{zone}. 1 7200 900 1209600 {ttl}",))


@dataclass
class _Static:
    values: tuple[str, ...]
    ttl: int
    rotation: itertools.count = field(default_factory=itertools.count)


class StaticRecords:
    """Records the harness itself sets (RDS endpoints...). Setting a record makes its parent name a zone (kept
    when the record goes), so the server answers NXDOMAIN for unknown siblings and deleted names; ``add_zone``
    makes a wider zone authoritative.
    Several values: CNAME answers one per query in turn (Aurora's reader endpoint), other types all values
    in rotated order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], _Static] = {}
        self._zones: set[str] = set()
        self._auto_zones: set[str] = set()

    def put(self, name: str, rtype: str, values: list[str] | tuple[str, ...] | str, ttl: int = DEFAULT_TTL) -> None:
        n, t = check_name(name), check_type(rtype)
        if isinstance(values, str):
            values = [values]
        vals = check_values(t, values)
        if int(ttl) < 0 or int(ttl) > 2**31 - 1:
            raise HarnessError(f"TTL must be 0..2147483647 seconds, got {ttl}")
        with self._lock:
            other = {k[1] for k in self._records if k[0] == n} - {t}
            if (t == "CNAME" and other) or "CNAME" in other:
                raise HarnessError(f"{n} cannot have a CNAME and other records ({', '.join(sorted(other | {t}))}): "
                                   "delete_record() the other type first")
            self._records[(n, t)] = _Static(vals, int(ttl))
            self._auto_zones.add(parent(n) or n)

    def delete(self, name: str, rtype: str | None = None) -> int:
        n = norm(name)
        t = rtype.upper() if rtype else None
        with self._lock:
            keys = [k for k in self._records if k[0] == n and (t is None or k[1] == t)]
            for k in keys:
                del self._records[k]
        return len(keys)

    def add_zone(self, zone: str) -> None:
        with self._lock:
            self._zones.add(check_name(zone))

    def remove_zone(self, zone: str) -> None:
        with self._lock:
            self._zones.discard(norm(zone))
            self._auto_zones.discard(norm(zone))

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._zones.clear()
            self._auto_zones.clear()

    def records(self) -> dict[tuple[str, str], tuple[list[str], int]]:
        """``{(name, type): (values, ttl)}``."""
        with self._lock:
            return {k: (list(v.values), v.ttl) for k, v in self._records.items()}

    def zones(self) -> set[str]:
        """Zones served from static records: explicit ones and the parent name of every record ever set."""
        with self._lock:
            return self._zones | self._auto_zones

    def zone_of(self, name: str) -> str | None:
        """The most specific static zone holding ``name``, or None."""
        best = None
        for z in self.zones():
            if in_domain(name, z) and (best is None or len(z) > len(best)):
                best = z
        return best

    def names(self) -> set[str]:
        with self._lock:
            return {n for n, _ in self._records}

    def lookup(self, name: str) -> list[RecordSet]:
        """Record sets at ``name`` (values rotated for this query)."""
        out = []
        with self._lock:
            for (n, t), rec in self._records.items():
                if n != name:
                    continue
                turn = next(rec.rotation) % len(rec.values)
                vals = rec.values[turn:] + rec.values[:turn]
                out.append(RecordSet(n, t, rec.ttl, vals[:1] if t == "CNAME" else vals))
        return out

    def has_below(self, name: str) -> bool:
        with self._lock:
            return any(n.endswith("." + name) for n, _ in self._records)
