"""The DNS server: UDP and TCP on its own loopback address (port 53 when it may), authoritative for the harness's
static records and every moto Route53 hosted zone, with fault rules (SERVFAIL, NXDOMAIN, latency, drop)."""
from __future__ import annotations

import collections
import contextlib
import errno
import fnmatch
import itertools
import logging
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.dns.health import HealthChecker, install_status_patch, uninstall_status_patch
from harness.dns.records import StaticRecords, make_rr, norm
from harness.dns.zones import Answer, Answerer
from harness.errors import HarnessError, ServiceError

if TYPE_CHECKING:
    from harness.stack import Stack

logger = logging.getLogger(__name__)

DNS_PORT = 53
UDP_PLAIN_LIMIT = 512
UDP_EDNS_LIMIT = 4096
EDNS_ADVERTISED = 1232
TCP_IDLE_TIMEOUT = 10.0
MAX_TCP_MESSAGES = 10_000
MAX_FAULT_LATENCY = 60.0
RULE_KINDS = ("servfail", "nxdomain", "refused", "drop", "latency")

# Running servers, newest last (a pytester session inside a test session starts its own).
_running: list[DnsServer] = []
_rule_ids = itertools.count(1)


def current_server() -> DnsServer:
    """The running DNS server (the default target of DNS faults); HarnessError if none runs."""
    server = running_server()
    if server is None:
        raise HarnessError("no dbdrill DNS server is running: use the `dns` fixture (or Stack().dns) first, or pass "
                           "server= explicitly")
    return server


def running_server() -> DnsServer | None:
    return _running[-1] if _running else None


def dns_exports(server: DnsServer) -> dict[str, str]:
    """Environment that tells other programs where the server is (``dbdrill up`` prints these)."""
    host, port = server.address
    return {"DBDRILL_DNS": f"{host}:{port}", "DBDRILL_DNS_HOST": host, "DBDRILL_DNS_PORT": str(port)}


def name_matcher(names: str | re.Pattern[str] | Iterable[str] | None) -> Callable[[str], bool]:
    """A predicate on normalised names: None matches all; a string is a name or a glob (``*.example.com``);
    a compiled regex is searched; a list matches any of its items."""
    if names is None:
        return lambda _n: True
    if isinstance(names, re.Pattern):
        pattern = names
        return lambda n: pattern.search(n) is not None
    items = [names] if isinstance(names, str) else list(names)
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise HarnessError(f"names must be a name, a glob such as '*.example.com', a compiled regex or a list of "
                           f"those, got {names!r}")
    globs = [norm(i) for i in items]
    return lambda n: any(n == g or fnmatch.fnmatchcase(n, g) for g in globs)


@dataclass
class DnsRule:
    """A fault rule: queries whose name matches get ``kind`` (after ``latency`` seconds)."""

    kind: str
    match: Callable[[str], bool]
    latency: float = 0.0
    label: str = "*"
    id: int = field(default_factory=lambda: next(_rule_ids))
    hits: int = 0


class _Udp(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    block_on_close = False
    dns: DnsServer


class _Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    dns: DnsServer


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns.handle_packet(data, "udp")  # type: ignore[attr-defined]
        if reply is not None:
            with contextlib.suppress(OSError):
                sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(TCP_IDLE_TIMEOUT)
        dns: DnsServer = self.server.dns  # type: ignore[attr-defined]
        try:
            for _ in range(MAX_TCP_MESSAGES):
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                data = _recv_exact(conn, struct.unpack("!H", head)[0])
                if data is None:
                    return
                reply = dns.handle_packet(data, "tcp")
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class DnsServer:
    """Constructed by ``Stack.dns``. ``start()`` binds UDP and TCP on ``stack.hosts.allocate("dns")``."""

    def __init__(self, stack: Stack | None = None, *, host: str | None = None, port: int | None = None) -> None:
        from harness.config import Settings

        self.stack = stack
        self.settings = stack.settings if stack is not None else Settings()
        self._host = host
        self._port = port
        self._own_lock = threading.RLock()
        self.static = StaticRecords()
        self.health = HealthChecker(lock=self._moto_lock, resolve=self._resolve_a,
                                    profile=self.settings.time_profile)
        regions = self.settings.regions
        self.answerer = Answerer(self.static, healthy=self.health.healthy, lock=self._moto_lock,
                                 client_region=regions[0] if regions else None)
        self._rules: list[DnsRule] = []
        self._rules_lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.log: collections.deque[tuple[float, str, str, str, str]] = collections.deque(maxlen=1000)
        self._stats_lock = threading.Lock()
        self._udp: _Udp | None = None
        self._tcp: _Tcp | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> DnsServer:
        if self._udp is not None:
            return self
        host = self._host or (self.stack.hosts.allocate("dns") if self.stack is not None else "127.0.0.1")
        self._udp, self._tcp = self._bind(host)
        for proto, srv in (("udp", self._udp), ("tcp", self._tcp)):
            srv.dns = self
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                 name=f"dbdrill-dns-{proto}", daemon=True)
            t.start()
            self._threads.append(t)
        self.health.source_host = host
        # Import moto here, not first in the prober's thread: concurrent first imports of one package can fail.
        with contextlib.suppress(ImportError):
            import moto.backends
            import moto.route53.models
            import moto.route53.responses  # noqa: F401
        self.health.start()
        with contextlib.suppress(ImportError):
            install_status_patch(self.health)
        _running.append(self)
        logger.info("DNS server on %s:%d (udp+tcp), time profile %s", *self.address, self.settings.time_profile)
        return self

    def _bind(self, host: str) -> tuple[_Udp, _Tcp]:
        ports = [self._port] if self._port is not None else [DNS_PORT, *[0] * 8]
        last: OSError | None = None
        for port in ports:
            try:
                udp = _Udp((host, port), _UdpHandler)
            except OSError as exc:
                last = exc
                if exc.errno not in (errno.EACCES, errno.EADDRINUSE, errno.EPERM):
                    break
                continue
            try:
                tcp = _Tcp((host, udp.server_address[1]), _TcpHandler)
            except OSError as exc:
                udp.server_close()
                last = exc
                continue
            return udp, tcp
        raise ServiceError(f"the DNS server could not bind UDP+TCP on {host} port {self._port or '53 or a free one'}:"
                           f" {last}. Is {host} a loopback address of this machine (127.x.y.z)?", obj=self)

    def stop(self) -> None:
        if self in _running:
            _running.remove(self)
        uninstall_status_patch(self.health)
        self.health.stop()
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        self._udp = self._tcp = None

    def reset(self) -> None:
        """Forget static records and zones, fault rules, health-check state and counters."""
        self.static.clear()
        self.clear_rules()
        self.health.reset()
        with self._stats_lock:
            self.counts.clear()
            self.log.clear()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        if self._udp is None:
            raise ServiceError("the DNS server is not running: start() it (or use stack.dns)", obj=self)
        host, port = self._udp.server_address[:2]
        return str(host), int(port)

    @property
    def running(self) -> bool:
        return self._udp is not None

    # -- static records ------------------------------------------------------------------------------------
    def set_record(self, name: str, rtype: str, values: list[str], ttl: int = 5) -> None:
        """Serve ``name`` ``rtype`` with ``values`` (replacing what it had). Several CNAME values answer one per
        query in turn; several A values are all answered, in rotated order."""
        self.static.put(name, rtype, values, ttl)

    def delete_record(self, name: str, rtype: str | None = None) -> int:
        """Remove ``name``'s records of ``rtype`` (all types when None); returns how many sets went."""
        return self.static.delete(name, rtype)

    def records(self) -> dict[tuple[str, str], tuple[list[str], int]]:
        """Static records: ``{(name, type): (values, ttl)}``."""
        return self.static.records()

    def add_zone(self, zone: str) -> None:
        """Be authoritative for ``zone`` (NXDOMAIN for names in it without records) without Route53."""
        self.static.add_zone(zone)

    # -- answers -------------------------------------------------------------------------------------------
    def served(self, name: str) -> bool:
        """True if ``name`` is in a zone this server answers for."""
        return self.answerer.served(name)

    def answer(self, name: str, rtype: str = "A") -> Answer:
        """The answer the server would send (in process, without fault rules)."""
        return self.answerer.answer(name, rtype)

    def _resolve_a(self, name: str) -> str | None:
        values = self.answerer.answer(name, "A").values("A")
        return values[0] if values else None

    def _moto_lock(self) -> Any:
        from harness.aws.endpoint import running_endpoint

        endpoint = running_endpoint()
        return endpoint.lock if endpoint is not None else self._own_lock

    # -- fault rules ---------------------------------------------------------------------------------------
    def add_rule(self, kind: str, names: str | re.Pattern[str] | Iterable[str] | None = None, *,
                 latency: float = 0.0) -> DnsRule:
        """Make matching queries fail (servfail, nxdomain, refused, drop: no answer at all) or wait ``latency``
        seconds first (kind latency, or any kind with latency > 0)."""
        if kind not in RULE_KINDS:
            raise HarnessError(f"unknown DNS rule kind {kind!r}: use one of {', '.join(RULE_KINDS)}")
        if not 0 <= latency <= MAX_FAULT_LATENCY:
            raise HarnessError(f"DNS latency must be 0..{MAX_FAULT_LATENCY:g} seconds, got {latency!r}")
        label = "*" if names is None else names.pattern if isinstance(names, re.Pattern) else \
            names if isinstance(names, str) else ",".join(names)
        rule = DnsRule(kind, name_matcher(names), float(latency), label)
        with self._rules_lock:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule: DnsRule | int) -> None:
        rid = rule if isinstance(rule, int) else rule.id
        with self._rules_lock:
            self._rules = [r for r in self._rules if r.id != rid]

    def rules(self) -> list[DnsRule]:
        with self._rules_lock:
            return list(self._rules)

    def clear_rules(self) -> None:
        with self._rules_lock:
            self._rules.clear()

    def _faults_for(self, name: str) -> tuple[float, str | None]:
        delay, kind = 0.0, None
        with self._rules_lock:
            for rule in self._rules:
                if rule.match(name):
                    rule.hits += 1
                    delay += rule.latency
                    if kind is None and rule.kind != "latency":
                        kind = rule.kind
        return min(delay, MAX_FAULT_LATENCY), kind

    # -- the wire --------------------------------------------------------------------------------------------
    def handle_packet(self, data: bytes, proto: str) -> bytes | None:
        """One request message in, one reply out (None: send nothing)."""
        from dnslib import QTYPE, RCODE, DNSHeader, DNSRecord

        try:
            req = DNSRecord.parse(data)
        except Exception:
            if len(data) < 12:
                return None
            self._count(proto, "?", "?", "FORMERR")
            return DNSRecord(DNSHeader(id=struct.unpack("!H", data[:2])[0], qr=1, rcode=RCODE.FORMERR)).pack()
        if req.header.qr:
            return None
        reply = DNSRecord(DNSHeader(id=req.header.id, qr=1, aa=0, ra=0, rd=req.header.rd, opcode=req.header.opcode),
                          q=req.q if req.questions else None)
        if req.header.opcode != 0 or len(req.questions) != 1:
            reply.header.rcode = RCODE.NOTIMP if req.header.opcode != 0 else RCODE.FORMERR
            self._count(proto, "?", "?", RCODE[reply.header.rcode])
            return reply.pack()
        qname, qtype = str(req.q.qname), str(QTYPE.get(req.q.qtype))
        name = norm(qname)
        delay, kind = self._faults_for(name)
        if delay:
            time.sleep(delay)
        if kind == "drop":
            self._count(proto, name, qtype, "DROPPED")
            return None
        if kind in ("servfail", "refused"):
            reply.header.rcode = RCODE.SERVFAIL if kind == "servfail" else RCODE.REFUSED
        elif req.q.qclass not in (1, 255):
            reply.header.rcode = RCODE.REFUSED
        else:
            try:
                ans = self.answerer.answer(name, qtype)
            except Exception:
                logger.exception("answering %s %s failed", name, qtype)
                ans = Answer("SERVFAIL")
            if kind == "nxdomain":
                soa = self.answerer.negative_soa(name)
                ans = Answer("NXDOMAIN", authority=[soa] if soa else [], zone=ans.zone or name)
            reply.header.rcode = getattr(RCODE, ans.rcode)
            reply.header.aa = 1 if ans.authoritative else 0
            for owner, t, ttl, value in ans.records:
                reply.add_answer(make_rr(owner, t, ttl, value))
            for owner, t, ttl, value in ans.authority:
                reply.add_auth(make_rr(owner, t, ttl, value))
        self._count(proto, name, qtype, RCODE[reply.header.rcode])
        return self._pack(req, reply, proto)

    def _pack(self, req: Any, reply: Any, proto: str) -> bytes:
        from dnslib import EDNS0, QTYPE, DNSHeader, DNSRecord

        opt = next((r for r in req.ar if r.rtype == QTYPE.OPT), None)
        limit = UDP_PLAIN_LIMIT
        if opt is not None:
            limit = min(max(UDP_PLAIN_LIMIT, int(opt.rclass)), UDP_EDNS_LIMIT)
            reply.add_ar(EDNS0(udp_len=EDNS_ADVERTISED))
        packed: bytes = reply.pack()
        if proto == "udp" and len(packed) > limit:
            # Too big for UDP: the question with TC set, so the client retries over TCP.
            h = reply.header
            short = DNSRecord(DNSHeader(id=h.id, qr=1, aa=h.aa, tc=1, ra=0, rd=h.rd, rcode=h.rcode), q=req.q)
            packed = short.pack()
            self._bump("truncated")
        return packed

    def _count(self, proto: str, name: str, qtype: str, rcode: str) -> None:
        with self._stats_lock:
            self.counts[proto] += 1
            self.counts[rcode] += 1
            self.log.append((time.time(), proto, name, qtype, rcode))

    def _bump(self, key: str) -> None:
        with self._stats_lock:
            self.counts[key] += 1

    def queries(self, name: str | None = None) -> int:
        """Queries received (for ``name`` only, when given) since the last reset."""
        with self._stats_lock:
            if name is None:
                return self.counts["udp"] + self.counts["tcp"]
            n = norm(name)
            return sum(1 for entry in self.log if entry[2] == n)
