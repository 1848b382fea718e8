"""Client resolver hook: ``socket.getaddrinfo``/``gethostbyname``/``gethostbyname_ex`` in this process resolve the
names dbdrill's DNS serves by real queries to it (UDP, TCP on truncation), with a TTL cache that can be told
to cache too long; every other name goes to the original resolver."""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.dns.records import norm
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.dns.server import DnsServer

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
UDP_ATTEMPTS = 2
MAX_REPLY = 65535
# Without a ``served`` predicate, a REFUSED name is not asked again for this long.
REFUSED_MEMORY = 1.0
EAI_NODATA = getattr(socket, "EAI_NODATA", socket.EAI_NONAME)


class DnsTimeout(OSError):
    """The DNS server did not answer in time."""


class _NotOurs(Exception):
    """The server refused the name: it is not in its zones."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (as in DBDRILL_DNS) -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise HarnessError(f"expected HOST:PORT for the DNS server (e.g. 127.20.0.5:53), got {text!r}")
    return host, int(port)


def query(server: tuple[str, int], name: str, rtype: str = "A", *, tcp: bool = False,
          timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Ask ``server`` one question; returns the parsed dnslib reply. UDP first (TCP when ``tcp`` or when the
    reply is truncated). DnsTimeout when no answer comes within ``timeout`` seconds."""
    from dnslib import DNSRecord

    q = DNSRecord.question(name.rstrip(".") + ".", rtype.upper())
    wire = q.pack()
    deadline = time.monotonic() + timeout
    if not tcp:
        data = _udp(server, wire, q.header.id, deadline)
        reply = DNSRecord.parse(data)
        if not reply.header.tc:
            return reply
    return DNSRecord.parse(_tcp(server, wire, deadline))


def _udp(server: tuple[str, int], wire: bytes, qid: int, deadline: float) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(server)
        for attempt in range(UDP_ATTEMPTS):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.send(wire)
            attempt_end = time.monotonic() + left / (UDP_ATTEMPTS - attempt)
            while (wait := attempt_end - time.monotonic()) > 0:
                sock.settimeout(wait)
                try:
                    data = sock.recv(MAX_REPLY)
                except TimeoutError:
                    break
                except ConnectionRefusedError as exc:
                    raise DnsTimeout(f"DNS server {server[0]}:{server[1]} refused the connection") from exc
                if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == qid:
                    return data
    raise DnsTimeout(f"no answer from DNS server {server[0]}:{server[1]} (udp)")


def _tcp(server: tuple[str, int], wire: bytes, deadline: float) -> bytes:
    left = max(0.01, deadline - time.monotonic())
    try:
        with socket.create_connection(server, timeout=left) as sock:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            head = _read(sock, 2)
            return _read(sock, struct.unpack("!H", head)[0])
    except (TimeoutError, ConnectionError) as exc:
        raise DnsTimeout(f"no answer from DNS server {server[0]}:{server[1]} (tcp): {exc}") from exc


def _read(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the DNS server closed the TCP connection")
        buf += chunk
    return buf


@dataclass
class _Entry:
    rcode: str
    addresses: tuple[str, ...]
    chain: tuple[str, ...]
    canonical: str
    ttl: float
    stored: float


class ResolverHook:
    """Resolve through dbdrill's DNS server. ``server`` is a DnsServer (its zones decide which names go to it),
    an address ``(host, port)`` / ``"host:port"`` (every name is asked; REFUSED falls through), or None (the
    running server, else DBDRILL_DNS).

    TTLs: an answer is kept ``ttl`` seconds, capped by ``ttl_cap``, replaced by ``ttl_override``, and never
    less than ``min_ttl`` (what a stale-caching client does). Use as a context manager or install/uninstall."""

    def __init__(self, server: DnsServer | tuple[str, int] | str | None = None, *,
                 served: Callable[[str], bool] | None = None, min_ttl: float = 0.0,
                 ttl_override: float | None = None, ttl_cap: float | None = None,
                 timeout: float = DEFAULT_TIMEOUT, time_fn: Callable[[], float] = time.monotonic) -> None:
        if server is None:
            from harness.dns.server import running_server

            server = running_server() or os.environ.get("DBDRILL_DNS") or None
            if server is None:
                raise HarnessError("no DNS server to resolve through: start one (the `dns` fixture, Stack().dns) or "
                                   "set DBDRILL_DNS=HOST:PORT (printed by `dbdrill up`)")
        if isinstance(server, str):
            self.address = parse_address(server)
        elif isinstance(server, tuple):
            self.address = (str(server[0]), int(server[1]))
        else:
            self.address = server.address
            served = served or server.served
        for label, value in (("min_ttl", min_ttl), ("ttl_override", ttl_override), ("ttl_cap", ttl_cap)):
            if value is not None and value < 0:
                raise HarnessError(f"{label} must be >= 0 seconds, got {value}")
        self.served = served
        self.min_ttl = float(min_ttl)
        self.ttl_override = ttl_override
        self.ttl_cap = ttl_cap
        self.timeout = timeout
        self.time_fn = time_fn
        self.stats: Counter[str] = Counter()
        self._per_name: Counter[str] = Counter()
        self._cache: dict[tuple[str, str], _Entry] = {}
        self._refused: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- install -----------------------------------------------------------------------------------------
    def install(self) -> ResolverHook:
        _push(self)
        return self

    def uninstall(self) -> None:
        _pop(self)

    @property
    def installed(self) -> bool:
        with _hook_lock:
            return self in _hooks

    def __enter__(self) -> ResolverHook:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # -- cache ---------------------------------------------------------------------------------------------
    def effective_ttl(self, ttl: float) -> float:
        t = float(ttl)
        if self.ttl_cap is not None:
            t = min(t, self.ttl_cap)
        if self.ttl_override is not None:
            t = float(self.ttl_override)
        return max(t, self.min_ttl)

    def flush(self) -> None:
        """Forget every cached answer."""
        with self._lock:
            self._cache.clear()
            self._refused.clear()

    def queries(self, name: str | None = None) -> int:
        """DNS messages this hook sent (for ``name`` only, when given)."""
        with self._lock:
            return self.stats["queries"] if name is None else self._per_name[norm(name)]

    def cached(self, name: str, rtype: str = "A") -> tuple[str, ...] | None:
        """The addresses cached for ``name`` (None when nothing live is cached)."""
        entry = self._live(norm(name), rtype)
        return None if entry is None else entry.addresses

    def _live(self, name: str, rtype: str) -> _Entry | None:
        with self._lock:
            entry = self._cache.get((name, rtype))
            if entry is not None and self.time_fn() < entry.stored + self.effective_ttl(entry.ttl):
                return entry
        return None

    # -- lookups ---------------------------------------------------------------------------------------------
    def handles(self, host: str) -> bool:
        """True if ``host`` is resolved through the DNS server (not numeric, and served or maybe served)."""
        if not host or host == "localhost" or host.endswith(".localhost"):
            return False
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            return False
        except ValueError:
            pass
        name = norm(host)
        if self.served is not None:
            return self.served(name)
        with self._lock:
            until = self._refused.get(name)
        return until is None or self.time_fn() >= until

    def lookup(self, name: str, rtype: str = "A") -> _Entry:
        """The (cached) answer for ``name``; socket.gaierror like the C resolver on failure."""
        name = norm(name)
        entry = self._live(name, rtype)
        if entry is not None:
            with self._lock:
                self.stats["hits"] += 1
            return entry
        with self._lock:
            self.stats["misses"] += 1
            self.stats["queries"] += 1
            self._per_name[name] += 1
        try:
            reply = query(self.address, name, rtype, timeout=self.timeout)
        except DnsTimeout as exc:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution") from exc
        return self._store(name, rtype, reply)

    def _store(self, name: str, rtype: str, reply: Any) -> _Entry:
        from dnslib import QTYPE, RCODE

        rcode = RCODE[reply.header.rcode]
        if rcode == "REFUSED":
            with self._lock:
                self._refused[name] = self.time_fn() + REFUSED_MEMORY
            return _Entry(rcode, (), (), name, 0, self.time_fn())
        if rcode not in ("NOERROR", "NXDOMAIN"):
            return _Entry(rcode, (), (), name, 0, self.time_fn())
        want = getattr(QTYPE, rtype)
        addresses = tuple(str(rr.rdata) for rr in reply.rr if rr.rtype == want)
        cnames = [rr for rr in reply.rr if rr.rtype == QTYPE.CNAME]
        chain = tuple(norm(str(rr.rname)) for rr in cnames)
        canonical = norm(str(cnames[-1].rdata)) if cnames else name
        ttls = [rr.ttl for rr in reply.rr] or [rr.ttl for rr in reply.auth if rr.rtype == QTYPE.SOA] or [0]
        entry = _Entry(rcode, addresses, chain, canonical, float(min(ttls)), self.time_fn())
        with self._lock:
            self._cache[(name, rtype)] = entry
        return entry

    def addresses(self, host: str, family: int = socket.AF_UNSPEC) -> tuple[list[tuple[int, str]], str, list[str]]:
        """([(family, address)], canonical name, alias names) for ``host``; socket.gaierror when there is none,
        _NotOurs when the server refused the name."""
        kinds = ["A"] if family == socket.AF_INET else ["AAAA"] if family == socket.AF_INET6 else ["A", "AAAA"]
        found: list[tuple[int, str]] = []
        rcodes: list[str] = []
        canonical, aliases = norm(host), list[str]()
        for rtype in kinds:
            entry = self.lookup(host, rtype)
            if entry.rcode == "REFUSED":
                raise _NotOurs(host)
            rcodes.append(entry.rcode)
            fam = socket.AF_INET if rtype == "A" else socket.AF_INET6
            found.extend((fam, a) for a in entry.addresses)
            if entry.addresses and entry.chain and not aliases:
                canonical, aliases = entry.canonical, list(entry.chain)
        if found:
            return found, canonical, aliases
        if any(r not in ("NOERROR", "NXDOMAIN") for r in rcodes):
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if all(r == "NXDOMAIN" for r in rcodes):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        raise socket.gaierror(EAI_NODATA, "No address associated with hostname")

    # -- socket API ------------------------------------------------------------------------------------------
    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> list[tuple[Any, Any, int, str, tuple[Any, ...]]]:
        text = host.decode("idna") if isinstance(host, bytes) else host
        if text is None or flags & socket.AI_NUMERICHOST or not self.handles(text):
            return _original("getaddrinfo")(host, port, family, type, proto, flags)
        if family not in (socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6):
            raise socket.gaierror(socket.EAI_FAMILY, "ai_family not supported")
        try:
            found, canonical, _aliases = self.addresses(text, family)
        except _NotOurs:
            return _original("getaddrinfo")(host, port, family, type, proto, flags)
        kinds: list[tuple[Any, int]] = [(socket.SOCK_STREAM, socket.IPPROTO_TCP),
                                        (socket.SOCK_DGRAM, socket.IPPROTO_UDP), (socket.SOCK_RAW, 0)]
        if type:
            default = next((p for k, p in kinds if k == type), 0)
            kinds = [(socket.SocketKind(type), proto or default)]
        portnum = _port(port, type)
        out: list[tuple[Any, Any, int, str, tuple[Any, ...]]] = []
        for fam, addr in found:
            sockaddr: tuple[Any, ...] = (addr, portnum) if fam == socket.AF_INET else (addr, portnum, 0, 0)
            for kind, prot in kinds:
                canon = canonical if flags & socket.AI_CANONNAME and not out else ""
                out.append((socket.AddressFamily(fam), kind, prot, canon, sockaddr))
        return out

    def gethostbyname(self, host: str) -> str:
        if self.handles(host):
            with contextlib.suppress(_NotOurs):
                return self.addresses(host, socket.AF_INET)[0][0][1]
        return str(_original("gethostbyname")(host))

    def gethostbyname_ex(self, host: str) -> tuple[str, list[str], list[str]]:
        if self.handles(host):
            with contextlib.suppress(_NotOurs):
                found, canonical, aliases = self.addresses(host, socket.AF_INET)
                return canonical, aliases, [a for _f, a in found]
        result: tuple[str, list[str], list[str]] = _original("gethostbyname_ex")(host)
        return result

    @classmethod
    def from_env(cls, **options: Any) -> ResolverHook:
        """A hook on DBDRILL_DNS=HOST:PORT (for a Python program started by a test or next to ``dbdrill up``)."""
        text = os.environ.get("DBDRILL_DNS")
        if not text:
            raise HarnessError("DBDRILL_DNS is not set: run `dbdrill up` and export what it prints, or set "
                               "DBDRILL_DNS=HOST:PORT of a dbdrill DNS server")
        return cls(text, **options)


def _port(port: Any, socktype: int) -> int:
    if port is None:
        return 0
    if isinstance(port, int):
        return port
    text = port.decode() if isinstance(port, bytes) else str(port)
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text, "udp" if socktype == socket.SOCK_DGRAM else "tcp")
    except OSError as exc:
        raise socket.gaierror(socket.EAI_SERVICE, "Servname not supported for ai_socktype") from exc


# -- the socket module patch (one for all hooks; the newest installed hook answers) -------------------------
_hook_lock = threading.RLock()
_hooks: list[ResolverHook] = []
# The true originals, kept after the last uninstall: a patch laid over ours may hand calls back to our
# dispatchers later, which then need somewhere to go.
_saved: dict[str, Any] = {}
_PATCHED = ("getaddrinfo", "gethostbyname", "gethostbyname_ex")


def _original(attr: str) -> Any:
    return _saved[attr]


def _top() -> ResolverHook | None:
    with _hook_lock:
        return _hooks[-1] if _hooks else None


def _getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
    hook = _top()
    if hook is None:
        return _original("getaddrinfo")(host, port, family, type, proto, flags)
    return hook.getaddrinfo(host, port, family, type, proto, flags)


def _gethostbyname(host: str) -> str:
    hook = _top()
    return str(_original("gethostbyname")(host)) if hook is None else hook.gethostbyname(host)


def _gethostbyname_ex(host: str) -> Any:
    hook = _top()
    return _original("gethostbyname_ex")(host) if hook is None else hook.gethostbyname_ex(host)


_REPLACEMENTS = {"getaddrinfo": _getaddrinfo, "gethostbyname": _gethostbyname,
                 "gethostbyname_ex": _gethostbyname_ex}


def _push(hook: ResolverHook) -> None:
    with _hook_lock:
        if hook in _hooks:
            raise HarnessError("this resolver hook is already installed")
        if not _hooks:
            for attr in _PATCHED:
                current = getattr(socket, attr)
                if current is not _REPLACEMENTS[attr]:
                    _saved[attr] = current
                setattr(socket, attr, _REPLACEMENTS[attr])
        _hooks.append(hook)


def _pop(hook: ResolverHook) -> None:
    with _hook_lock:
        if hook not in _hooks:
            return
        _hooks.remove(hook)
        if _hooks:
            return
        for attr in _PATCHED:
            if getattr(socket, attr) is _REPLACEMENTS[attr]:
                setattr(socket, attr, _saved[attr])
            else:
                # Someone patched over us: leave theirs; ours falls through to the original once they undo it.
                logger.warning("socket.%s was replaced while the DNS hook was installed; leaving the replacement",
                               attr)


def installed_hooks() -> list[ResolverHook]:
    """Hooks installed in this process, oldest first."""
    with _hook_lock:
        return list(_hooks)
